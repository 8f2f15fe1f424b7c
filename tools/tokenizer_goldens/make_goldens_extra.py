#!/usr/bin/env python3
"""Extra reference output from the Hugging Face `tokenizers` library: offsets, pairs, type ids,
and a real Precompiled/Unigram (XLM-R style) tokenizer.

Usage:
  make_goldens_extra.py --derive-only --out DIR     (stdlib only; no `tokenizers` needed)
      writes DIR/xlmr_nomic/tokenizer.json (plus xlmr_scripts/ and xlmr_fixed/: the same with
      Sequence[UnicodeScripts, Metaspace] and Sequence[Metaspace, FixedLength(3)]), an XLM-R style tokenizer.json built from llama.cpp's
      models/ggml-vocab-nomic-bert-moe.gguf (XLM-R vocabulary, scores and precompiled_charsmap):
      Sequence[Precompiled, Replace(" {2,}" -> " ")], Metaspace(always), Unigram(unk <unk>),
      TemplateProcessing "<s> $A </s>" / "<s> $A </s> </s> $B </s>", Metaspace decoder.
  make_goldens_extra.py [--gguf PATH] --models DIR [--corpus corpus.jsonl] --out OUTDIR [--derived-dir D]
      derives the tokenizers above into D (default OUTDIR), then for it, every DIR/<name>/tokenizer.json and
      every tests/fixtures/tokenizer/trained_*.json writes OUTDIR/goldens_extra.json:
        single[i] = {ids, type_ids, offsets (char offsets, as Python reports), special_tokens_mask}
                    of encode(text_i, add_special_tokens=True)
        pair[i]   = the same for encode(text_i, text_{i+1})  (every 4th text)
        normalized[i] = tokenizer.normalizer.normalize_str(text_i) when there is a normalizer
"""
import argparse
import base64
import json
import os
import struct
import sys
import traceback

GGUF_DEFAULT = ".testdata/llama.cpp/models/ggml-vocab-nomic-bert-moe.gguf"


def read_gguf_kv(path):
    """Minimal GGUF v2/v3 metadata reader (stdlib only)."""
    data = open(path, "rb").read()
    if data[:4] != b"GGUF":
        raise ValueError("not a GGUF file")
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
    pos = 24
    scalar = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}

    def read_str(p):
        (n,) = struct.unpack_from("<Q", data, p)
        return data[p + 8:p + 8 + n].decode("utf-8", "surrogateescape"), p + 8 + n

    def read_val(t, p):
        if t in scalar:
            fmt = scalar[t]
            return struct.unpack_from(fmt, data, p)[0], p + struct.calcsize(fmt)
        if t == 8:
            return read_str(p)
        if t == 9:
            et, n = struct.unpack_from("<IQ", data, p)
            p += 12
            if et in scalar:
                fmt = scalar[et]
                size = struct.calcsize(fmt)
                vals = list(struct.unpack_from("<" + fmt[1] * n, data, p)) if n else []
                return vals, p + size * n
            out = []
            for _ in range(n):
                v, p = read_val(et, p)
                out.append(v)
            return out, p
        raise ValueError(f"bad GGUF type {t}")

    kv = {}
    for _ in range(n_kv):
        key, pos = read_str(pos)
        (t,) = struct.unpack_from("<I", data, pos)
        pos += 4
        kv[key], pos = read_val(t, pos)
    return kv


def derive_xlmr(gguf_path, out_dir):
    kv = read_gguf_kv(gguf_path)
    tokens = kv["tokenizer.ggml.tokens"]
    scores = kv["tokenizer.ggml.scores"]
    types = kv["tokenizer.ggml.token_type"]
    charsmap = bytes(b & 0xFF for b in kv["tokenizer.ggml.precompiled_charsmap"])
    unk = kv.get("tokenizer.ggml.unknown_token_id", tokens.index("<unk>"))
    vocab = [[t, float(s)] for t, s in zip(tokens, scores)]
    added = []
    for i, (t, ty) in enumerate(zip(tokens, types)):
        if ty in (2, 3) or t == "<mask>":  # unknown / control
            added.append({"id": i, "content": t, "single_word": False, "lstrip": t == "<mask>",
                          "rstrip": False, "normalized": False, "special": True})
    bos, eos = tokens.index("<s>"), tokens.index("</s>")
    tj = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Precompiled", "precompiled_charsmap": base64.b64encode(charsmap).decode()},
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]},
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                      {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "</s>", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}},
                                    {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [bos], "tokens": ["<s>"]},
                                              "</s>": {"id": "</s>", "ids": [eos], "tokens": ["</s>"]}}},
        "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
        "model": {"type": "Unigram", "unk_id": unk, "vocab": vocab, "byte_fallback": False},
    }
    metaspace = tj["pre_tokenizer"]
    variants = {
        "xlmr_nomic": tj,
        # The same with the UnicodeScripts and FixedLength pre-tokenizers in front.
        "xlmr_scripts": dict(tj, pre_tokenizer={"type": "Sequence", "pretokenizers": [
            {"type": "UnicodeScripts"}, metaspace]}),
        "xlmr_fixed": dict(tj, pre_tokenizer={"type": "Sequence", "pretokenizers": [
            metaspace, {"type": "FixedLength", "length": 3}]}),
    }
    paths = {}
    for name, j in variants.items():
        os.makedirs(os.path.join(out_dir, name), exist_ok=True)
        path = os.path.join(out_dir, name, "tokenizer.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(j, f, ensure_ascii=False)
        paths[name] = path
    return paths


def enc_dict(e):
    return {"ids": e.ids, "type_ids": e.type_ids, "offsets": [list(o) for o in e.offsets],
            "special_tokens_mask": e.special_tokens_mask}


def goldens_for(tok, texts):
    out = {"single": [], "pair": [], "normalized": []}
    for i, t in enumerate(texts):
        out["single"].append(enc_dict(tok.encode(t, add_special_tokens=True)))
        if i % 4 == 0:
            try:
                out["pair"].append(enc_dict(tok.encode(t, texts[(i + 1) % len(texts)], add_special_tokens=True)))
            except Exception as ex:  # a template without a pair
                out["pair"].append({"error": str(ex)})
        out["normalized"].append(tok.normalizer.normalize_str(t) if tok.normalizer is not None else None)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", default=GGUF_DEFAULT)
    ap.add_argument("--models")
    ap.add_argument("--corpus", default="tests/fixtures/tokenizer/corpus.jsonl")
    ap.add_argument("--out", required=True)
    ap.add_argument("--derive-only", action="store_true")
    ap.add_argument("--derived-dir", help="where the derived tokenizers go (default: --out)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    derived = derive_xlmr(args.gguf, args.derived_dir or args.out)
    print("derived", " ".join(derived.values()), flush=True)
    if args.derive_only:
        return 0
    import tokenizers
    from tokenizers import Tokenizer
    texts = [json.loads(l)["text"] for l in open(args.corpus, encoding="utf-8") if l.strip()]
    paths = dict(derived)
    if args.models:
        for name in sorted(os.listdir(args.models)):
            p = os.path.join(args.models, name, "tokenizer.json")
            if os.path.exists(p):
                paths[name] = p
    fx = "tests/fixtures/tokenizer"
    for fn in sorted(os.listdir(fx)):
        if fn.startswith("trained_") and fn.endswith(".json"):
            paths[fn[:-5]] = os.path.join(fx, fn)
    result = {"tokenizers_version": tokenizers.__version__, "offsets": "char", "tokenizers": {}}
    for name, p in paths.items():
        try:
            result["tokenizers"][name] = goldens_for(Tokenizer.from_file(p), texts)
            print(name, "ok", flush=True)
        except Exception:
            traceback.print_exc()
    with open(os.path.join(args.out, "goldens_extra.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False, separators=(",", ":"))
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
