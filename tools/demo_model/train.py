#!/usr/bin/env python3
"""Train mlxcel's demo chat model from scratch, in one run on one GPU.

    PYTHONUNBUFFERED=1 python3 tools/demo_model/train.py --out "$OUT"

Stages (each logged; a failing stage is logged and the rest still writes what it can):
  1. synthetic chat data (data.py): arithmetic, capitals, word reversal, letter counting,
     repetition, name/age -> JSON, tool calls and answers from tool results, <think>
     reasoning, plain text; held-out eval sets;
  2. a byte-level BPE tokenizer (tokenizers; Qwen-style pre-tokenizer with single digits)
     with <|im_start|> <|im_end|> <|endoftext|> <think> </think> <tool_call> </tool_call>;
  3. rendering with the ChatML template (template.py) through transformers'
     apply_chat_template, loss on assistant tokens only;
  4. a Qwen3ForCausalLM (~16M parameters, tied embeddings) trained with AdamW, bf16
     autocast and a cosine schedule until the time budget;
  5. greedy-generation accuracy per task on >= 200 held-out questions each;
  6. save_pretrained in bfloat16 + tokenizer files + generation_config.json + eval.jsonl
     + metrics.json + train.log, tarred into OUT/demo.tar.gz (split in 15 MiB parts).

Needs torch, transformers 5.x, tokenizers, safetensors (the GPU machine has them).
"""

import time

T0 = time.time()

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import traceback  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import data  # noqa: E402
from template import CHAT_TEMPLATE, local_renderer  # noqa: E402

SEED = data.SEED
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
ADDED = ["<think>", "</think>", "<tool_call>", "</tool_call>"]
# Qwen2/Qwen3 pre-tokenizer pattern: digits are split one by one.
PRETOK_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")

LOG_LINES = []
LOG_FILE = None


def log(*args):
    s = " ".join(str(a) for a in args)
    line = "[{:7.1f}s] {}".format(time.time() - T0, s)
    print(line, flush=True)
    LOG_LINES.append(line)
    if LOG_FILE is not None:
        try:
            with open(LOG_FILE, "a") as f:
                f.write(line + "\n")
        except OSError:
            pass


def stage(name, fn, *a, **kw):
    log("=== stage:", name)
    t = time.time()
    try:
        r = fn(*a, **kw)
        log("=== stage {} done in {:.1f}s".format(name, time.time() - t))
        return r, None
    except Exception as e:  # noqa: BLE001
        log("!!! stage {} FAILED after {:.1f}s: {}: {}".format(name, time.time() - t, type(e).__name__, e))
        for l in traceback.format_exc().splitlines():
            log("    " + l)
        return None, e


# ----------------------------------------------------------------------------- tokenizer

def train_tokenizer(corpus, vocab_size):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers import processors, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOK_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(ADDED), min_frequency=2,
                                  special_tokens=list(SPECIAL), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ADDED])
    for t in SPECIAL + ADDED:
        assert tok.token_to_id(t) is not None, t
        assert tok.encode("a" + t + "b", add_special_tokens=False).ids.count(tok.token_to_id(t)) == 1, t
    return tok


def make_hf_tokenizer(tok):
    import transformers
    from tokenizers import Tokenizer
    kw = dict(tokenizer_object=Tokenizer.from_str(tok.to_str()), eos_token="<|im_end|>", pad_token="<|endoftext|>",
              clean_up_tokenization_spaces=False)
    hf = None
    for cls_name in ("PreTrainedTokenizerFast", "TokenizersBackend"):
        cls = getattr(transformers, cls_name, None)
        if cls is None:
            continue
        try:
            hf = cls(**kw)
            log("hf tokenizer class:", cls_name)
            break
        except Exception as e:  # noqa: BLE001
            log("hf tokenizer via {} failed: {}".format(cls_name, e))
    if hf is None:
        raise RuntimeError("no transformers tokenizer class accepted tokenizer_object")
    hf.chat_template = CHAT_TEMPLATE
    return hf


def tokenizer_config(tok):
    added = {}
    for t in SPECIAL + ADDED:
        added[str(tok.token_to_id(t))] = {"content": t, "lstrip": False, "normalized": False,
                                          "rstrip": False, "single_word": False,
                                          "special": t in SPECIAL}
    return {
        "add_bos_token": False, "add_eos_token": False, "add_prefix_space": False,
        "added_tokens_decoder": added, "bos_token": None, "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False, "eos_token": "<|im_end|>", "errors": "replace",
        "extra_special_tokens": {}, "model_max_length": 2048, "pad_token": "<|endoftext|>",
        "split_special_tokens": False, "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }


# ----------------------------------------------------------------------------- rendering

G = {}  # state shared with forked workers: hf tokenizer, raw tokenizer, exclusion set, renderer


def render(messages, tools, add_generation_prompt, thinking):
    if G.get("use_hf", True):
        out = G["hf"].apply_chat_template(messages, tools=tools, tokenize=False, return_dict=False,
                                          add_generation_prompt=add_generation_prompt,
                                          enable_thinking=thinking)
        if not isinstance(out, str):  # defensive: some versions return a list for one chat
            out = out[0]
        return out
    return G["local"](messages, tools=tools, add_generation_prompt=add_generation_prompt,
                      enable_thinking=thinking)


def conv_text_and_spans(ex):
    """Full training text and the (start, end) character spans that get loss."""
    if ex["task"] == "plain":
        text = ex["text"] + "<|endoftext|>"
        return text, [(0, len(text))]
    msgs = ex["prompt_messages"] + ex["answer_msgs"]
    full = render(msgs, ex["tools"], False, ex["thinking"])
    last_user = max(i for i, m in enumerate(msgs) if m["role"] == "user")
    spans = []
    for i, m in enumerate(msgs):
        if m["role"] != "assistant" or i <= last_user:
            continue
        p = render(msgs[:i], ex["tools"], True, ex["thinking"])
        if not full.startswith(p):
            raise ValueError("prompt is not a prefix of the full render")
        end = full.index("<|im_end|>", len(p)) + len("<|im_end|>")
        spans.append((len(p), end))
    return full, spans


def segment(text, spans):
    segs, pos = [], 0
    for s, e in spans:
        if s > pos:
            segs.append((text[pos:s], 0))
        segs.append((text[s:e], 1))
        pos = e
    if pos < len(text):
        segs.append((text[pos:], 0))
    return segs


def worker_chunk(args):
    """Generate, render and tokenize one chunk of training conversations."""
    import numpy as np
    idx, n = args
    t = time.time()
    exs = data.make_train(n, G["exclude"], seed=SEED * 1000 + idx)
    tok = G["tok"]
    ids_all, mask_all, lens, bad, checked, mismatched = [], [], [], 0, 0, 0
    seg_texts, seg_flags, seg_conv = [], [], []
    convs = []
    for ex in exs:
        try:
            text, spans = conv_text_and_spans(ex)
        except Exception:  # noqa: BLE001
            bad += 1
            continue
        segs = segment(text, spans)
        convs.append((text, len(segs)))
        for s, f in segs:
            seg_texts.append(s)
            seg_flags.append(f)
    encs = tok.encode_batch(seg_texts, add_special_tokens=False)
    k = 0
    for ci, (text, nseg) in enumerate(convs):
        ids, mask = [], []
        for j in range(nseg):
            e = encs[k + j].ids
            ids.extend(e)
            mask.extend([seg_flags[k + j]] * len(e))
        k += nseg
        if ci < 40:
            checked += 1
            if tok.encode(text, add_special_tokens=False).ids != ids:
                mismatched += 1
        ids_all.append(np.asarray(ids, dtype=np.int32))
        mask_all.append(np.asarray(mask, dtype=np.uint8))
        lens.append(len(ids))
    flat_ids = np.concatenate(ids_all) if ids_all else np.zeros(0, np.int32)
    flat_mask = np.concatenate(mask_all) if mask_all else np.zeros(0, np.uint8)
    return dict(idx=idx, ids=flat_ids, mask=flat_mask, lens=np.asarray(lens, np.int64), bad=bad,
                checked=checked, mismatched=mismatched, secs=time.time() - t,
                tasks={})


def build_dataset(args, exclude):
    import numpy as np
    import multiprocessing as mp
    G["exclude"] = exclude
    n_chunks = max(1, args.train_convs // args.chunk)
    jobs = [(i, args.chunk) for i in range(n_chunks)]
    procs = min(args.procs, os.cpu_count() or 1)
    log("rendering {} conversations in {} chunks on {} processes".format(n_chunks * args.chunk, n_chunks, procs))
    results = []
    deadline = time.time() + args.data_seconds
    t = time.time()
    if procs > 1:
        ctx = mp.get_context("fork")
        with ctx.Pool(procs) as pool:
            for r in pool.imap(worker_chunk, jobs):
                results.append(r)
                if len(results) % 25 == 0:
                    log("  chunks {}/{} ({:.1f}s)".format(len(results), n_chunks, time.time() - t))
                if time.time() > deadline:
                    log("  data deadline reached: keeping {} chunks".format(len(results)))
                    pool.terminate()
                    break
    else:
        for j in jobs:
            results.append(worker_chunk(j))
            if time.time() > deadline:
                log("  data deadline reached: keeping {} chunks".format(len(results)))
                break
    bad = sum(r["bad"] for r in results)
    checked = sum(r["checked"] for r in results)
    mism = sum(r["mismatched"] for r in results)
    log("chunks {} bad renders {} segment-vs-full tokenization mismatches {}/{}".format(
        len(results), bad, mism, checked))
    ids = np.concatenate([r["ids"] for r in results])
    mask = np.concatenate([r["mask"] for r in results])
    lens = np.concatenate([r["lens"] for r in results])
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    L = args.seq + 1
    order = np.random.RandomState(SEED).permutation(len(lens))
    row_of = np.full(len(lens), -1, np.int64)
    off_of = np.zeros(len(lens), np.int64)
    row, cur, dropped = 0, 0, 0
    lens_l = lens.tolist()
    for i in order.tolist():
        n = lens_l[i]
        if n > L:
            dropped += 1
            continue
        if cur + n > L:
            row += 1
            cur = 0
        row_of[i] = row
        off_of[i] = cur
        cur += n
    n_rows = row + 1
    eot = G["tok"].token_to_id("<|endoftext|>")
    rows = np.full((n_rows, L), eot, np.int32)
    rmask = np.zeros((n_rows, L), np.uint8)
    row_l, off_l, starts_l = row_of.tolist(), off_of.tolist(), starts.tolist()
    for i in range(len(lens_l)):
        r = row_l[i]
        if r < 0:
            continue
        s, n, o = starts_l[i], lens_l[i], off_l[i]
        rows[r, o:o + n] = ids[s:s + n]
        rmask[r, o:o + n] = mask[s:s + n]
    stats = dict(conversations=int(len(lens)), dropped_too_long=int(dropped), rows=int(n_rows),
                 tokens=int(lens.sum()), loss_tokens=int(mask.sum()), mean_len=float(lens.mean()),
                 max_len=int(lens.max()), fill=float(sum(n for n, r in zip(lens_l, row_l) if r >= 0) / (n_rows * L)),
                 bad_renders=int(bad), tokenization_mismatches=int(mism), tokenization_checked=int(checked))
    log("dataset:", json.dumps(stats))
    return rows, rmask, stats


# ----------------------------------------------------------------------------- model

def build_model(args, vocab_size, tok):
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config, Qwen3ForCausalLM
    cfg = Qwen3Config(
        vocab_size=vocab_size, hidden_size=args.hidden, intermediate_size=args.inter,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, head_dim=args.head_dim,
        max_position_embeddings=2048, rms_norm_eps=1e-6, tie_word_embeddings=True,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0),
        attention_dropout=0.0, attention_bias=False, hidden_act="silu", initializer_range=0.02,
        use_cache=True, bos_token_id=None, eos_token_id=tok.token_to_id("<|im_end|>"),
        pad_token_id=tok.token_to_id("<|endoftext|>"),
    )
    torch.manual_seed(SEED)
    try:
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
    except Exception as e:  # noqa: BLE001
        log("from_config(sdpa) failed ({}); plain Qwen3ForCausalLM".format(e))
        torch.manual_seed(SEED)
        model = Qwen3ForCausalLM(cfg)
    model = model.float()
    log("model class {} attention {}".format(type(model).__name__,
                                              getattr(model.config, "_attn_implementation", "?")))
    if model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
        log("tying lm_head to embed_tokens by hand")
        model.lm_head.weight = model.model.embed_tokens.weight
    n_params = sum(p.numel() for p in model.parameters())
    log("model params (tied, counted once): {:,}".format(n_params))
    return model, n_params


def train(args, model, rows, rmask, budget_s, state):
    import numpy as np
    import torch
    import torch.nn.functional as F
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    model.to(dev).train()
    rows_t = torch.from_numpy(rows).to(dev)
    mask_t = torch.from_numpy(rmask).to(dev).bool()
    R = rows_t.shape[0]
    V = model.config.vocab_size
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.ndim >= 2 else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)
    body, head = model.model, model.lm_head

    def loss_fn(x, y):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            h = body(input_ids=x, use_cache=False).last_hidden_state
            logits = head(h)
        return F.cross_entropy(logits.float().view(-1, V), y.view(-1), ignore_index=-100)

    step_fn = loss_fn
    if args.compile:
        try:
            step_fn = torch.compile(loss_fn)
            log("torch.compile enabled")
        except Exception as e:  # noqa: BLE001
            log("torch.compile unavailable:", e)
            step_fn = loss_fn
    g = torch.Generator(device="cpu")
    g.manual_seed(SEED)
    perm = torch.randperm(R, generator=g).to(dev)
    ptr, epoch = 0, 0
    B = args.batch
    t_start = time.time()
    total_steps = None
    warm = args.warmup
    step = 0
    losses = []
    state.update(steps=0, epochs=0.0, compile=bool(args.compile))
    while True:
        if ptr + B > R:
            epoch += 1
            perm = torch.randperm(R, generator=g).to(dev)
            ptr = 0
        idx = perm[ptr:ptr + B]
        ptr += B
        batch = rows_t[idx].long()
        m = mask_t[idx][:, 1:]
        x = batch[:, :-1].contiguous()
        y = torch.where(m, batch[:, 1:], torch.full_like(batch[:, 1:], -100)).contiguous()
        if step < warm:
            lr = args.lr * (step + 1) / warm
        else:
            ts = total_steps or 10 ** 9
            frac = min(1.0, (step - warm) / max(1, ts - warm))
            lr = args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * frac)))
        for pg in opt.param_groups:
            pg["lr"] = lr
        try:
            loss = step_fn(x, y)
        except Exception as e:  # noqa: BLE001
            if step_fn is loss_fn:
                raise
            log("compiled step failed ({}: {}); falling back to eager".format(type(e).__name__, str(e)[:500]))
            step_fn = loss_fn
            state["compile"] = False
            loss = step_fn(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step == 3 or step == 10:
            torch.cuda.synchronize()
            log("step {} at {:.1f}s (loss {:.4f})".format(step, time.time() - t_start, loss.item()))
        if step == 30:
            torch.cuda.synchronize()
            t30 = time.time()
        if step == 80:
            torch.cuda.synchronize()
            dt = (time.time() - t30) / 50
            remaining = budget_s - (time.time() - t_start)
            total_steps = max(step + 10, step + int(remaining / dt))
            total_steps = min(total_steps, args.max_steps)
            log("step time {:.1f} ms ({:.0f} tok/s); planned total steps {}".format(
                dt * 1000, B * args.seq / dt, total_steps))
            state["step_ms"] = dt * 1000
            state["planned_steps"] = total_steps
        if step % args.log_every == 0:
            lv = loss.item()
            losses.append((step, lv))
            log("step {:5d} loss {:.4f} lr {:.2e} epoch {} elapsed {:.0f}s".format(
                step, lv, lr, epoch, time.time() - t_start))
        state["steps"] = step
        state["epochs"] = epoch + ptr / R
        if total_steps is not None and step >= total_steps:
            break
        if time.time() - t_start > budget_s * 1.03 or step >= args.max_steps:
            log("time budget reached")
            break
    torch.cuda.synchronize()
    state["train_seconds"] = time.time() - t_start
    state["final_loss"] = float(loss.item())
    state["loss_curve"] = losses
    state["tokens_seen"] = step * B * args.seq
    log("trained {} steps in {:.1f}s, final loss {:.4f}".format(step, state["train_seconds"], state["final_loss"]))
    return model


# ----------------------------------------------------------------------------- eval

TOOL_CALL_RE = re.compile(r"^<tool_call>\n(.*)\n</tool_call>$", re.S)
THINK_RE = re.compile(r"^<think>\n(.*?)\n</think>\n\n(.*)$", re.S)


def parse_tool_call(text):
    m = TOOL_CALL_RE.match(text.strip())
    if not m:
        return None
    try:
        obj = json.loads(m.group(1))
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not isinstance(obj.get("arguments"), dict):
        return None
    if obj["name"] not in data.TOOLS:
        return None
    return obj


def eval_prompt(ex):
    if ex["task"] == "plain":
        return ex["prompt"]
    thinking = ex["task"] == "think"
    return render(ex["prompt_messages"], ex["tools"], True, thinking)


def judge(ex, out):
    """(correct, well_formed)"""
    if ex["task"] == "plain":
        return out == ex["expected"], True
    if ex["task"] == "think":
        m = THINK_RE.match(out)
        if not m or not m.group(1).strip():
            return False, False
        ans = m.group(2).strip()
        if ex.get("expected_call") is not None:
            c = parse_tool_call(ans)
            return c == ex["expected_call"], True
        return ans == ex["expected"], True
    if ex["task"] == "tool_call":
        c = parse_tool_call(out)
        return c == ex["expected_call"], c is not None
    return out.strip() == ex["expected"], True


MAX_NEW = {"think": 112, "repeat": 64, "tool_call": 48, "tool_answer": 40, "reverse": 24, "plain": 40}


def evaluate(model, tok, eval_sets, args):
    import torch
    dev = torch.device("cuda")
    model.eval()
    eot, im_end = tok.token_to_id("<|endoftext|>"), tok.token_to_id("<|im_end|>")
    results = {}
    outputs = {}
    for task, items in eval_sets.items():
        t = time.time()
        prompts = [eval_prompt(ex) for ex in items]
        enc = [tok.encode(p, add_special_tokens=False).ids for p in prompts]
        outs = []
        bs = args.eval_batch
        for b0 in range(0, len(enc), bs):
            chunk = enc[b0:b0 + bs]
            Lm = max(len(e) for e in chunk)
            ids = torch.full((len(chunk), Lm), eot, dtype=torch.long)
            att = torch.zeros((len(chunk), Lm), dtype=torch.long)
            for i, e in enumerate(chunk):
                ids[i, Lm - len(e):] = torch.tensor(e)
                att[i, Lm - len(e):] = 1
            with torch.no_grad():
                gen = model.generate(input_ids=ids.to(dev), attention_mask=att.to(dev),
                                     max_new_tokens=MAX_NEW.get(task, 32), do_sample=False,
                                     eos_token_id=[im_end, eot], pad_token_id=eot)
            for i in range(len(chunk)):
                new = gen[i, Lm:].tolist()
                cut = len(new)
                for j, v in enumerate(new):
                    if v in (im_end, eot):
                        cut = j
                        break
                outs.append(tok.decode(new[:cut], skip_special_tokens=False))
        n_ok = n_wf = 0
        for ex, out in zip(items, outs):
            ok, wf = judge(ex, out)
            ex["_ok"], ex["_out"] = ok, out
            n_ok += ok
            n_wf += wf
        results[task] = dict(n=len(items), correct=n_ok, accuracy=n_ok / max(1, len(items)),
                             well_formed=n_wf / max(1, len(items)))
        outputs[task] = outs
        bad = [(ex.get("expected"), out) for ex, out in zip(items, outs) if not ex["_ok"]][:3]
        log("eval {:12s} {:4d}/{:4d} = {:6.2%}  well-formed {:6.2%}  ({:.1f}s) misses: {}".format(
            task, n_ok, len(items), n_ok / max(1, len(items)), n_wf / max(1, len(items)),
            time.time() - t, bad))
    return results


def print_table(results):
    targets = {"add": 0.95, "sub": 0.95, "capital": 0.95, "reverse": 0.95, "json": 0.95}
    lines = ["| task | n | exact | well-formed | target |", "| --- | --- | --- | --- | --- |"]
    for task, r in results.items():
        tgt = targets.get(task)
        if task == "tool_call":
            tgt_s = ">= 90% well-formed"
        else:
            tgt_s = ">= {:.0%} exact".format(tgt) if tgt else "-"
        lines.append("| {} | {} | {:.1%} | {:.1%} | {} |".format(task, r["n"], r["accuracy"], r["well_formed"], tgt_s))
    for l in lines:
        log(l)
    return "\n".join(lines)


def write_eval_jsonl(path, eval_sets, per_task):
    with open(path, "w") as f:
        for task, items in eval_sets.items():
            for ex in items[:per_task]:
                rec = {"task": task}
                if task == "plain":
                    rec.update(raw=True, prompt=ex["prompt"], expected=ex["expected"])
                else:
                    thinking = task == "think"
                    rec.update(raw=False, messages=ex["prompt_messages"], tools=ex["tools"],
                               enable_thinking=thinking, prompt=eval_prompt(ex), expected=ex["expected"])
                    if ex.get("expected_call") is not None:
                        rec["expected_tool_call"] = ex["expected_call"]
                    if thinking:
                        rec["base_task"] = ex.get("base_task")
                if "_out" in ex:
                    rec["hf_output"] = ex["_out"]
                    rec["hf_correct"] = bool(ex["_ok"])
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")


# ----------------------------------------------------------------------------- main

def main():
    global LOG_FILE
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/demo_out"))
    ap.add_argument("--workdir", default="/tmp/mlxcel-demo")
    ap.add_argument("--budget", type=float, default=590.0, help="whole-script wall-clock budget (s)")
    ap.add_argument("--train-seconds", type=float, default=478.0)
    ap.add_argument("--reserve", type=float, default=50.0, help="time kept for eval + save")
    ap.add_argument("--data-seconds", type=float, default=110.0)
    ap.add_argument("--train-convs", type=int, default=1000000)
    ap.add_argument("--chunk", type=int, default=4000)
    ap.add_argument("--procs", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--inter", type=int, default=1152)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=96)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.05)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=250)
    ap.add_argument("--max-steps", type=int, default=10 ** 9)
    ap.add_argument("--log-every", type=int, default=200)
    ap.add_argument("--compile", type=int, default=1)
    ap.add_argument("--eval-n", type=int, default=250)
    ap.add_argument("--eval-jsonl-n", type=int, default=40)
    ap.add_argument("--eval-batch", type=int, default=256)
    ap.add_argument("--dry-run", action="store_true", help="data + template only (no torch)")
    args = ap.parse_args()

    os.makedirs(args.out, exist_ok=True)
    mdir = os.path.join(args.workdir, "mlxcel-demo")
    os.makedirs(mdir, exist_ok=True)
    LOG_FILE = os.path.join(mdir, "train.log")
    open(LOG_FILE, "w").close()
    random.seed(SEED)
    log("mlxcel demo model training; args:", json.dumps(vars(args)))
    metrics = {"args": vars(args), "seed": SEED, "stages": {}}

    try:
        import numpy as np  # noqa: F401
        np.random.seed(SEED)
    except ImportError:
        pass

    # 1. data
    (ev, err) = stage("eval sets", data.make_eval_sets, args.eval_n)
    eval_sets, exclude = ev
    metrics["eval_counts"] = {k: len(v) for k, v in eval_sets.items()}
    corpus_ex, _ = stage("bpe corpus", lambda: data.bpe_corpus(data.make_train(60000, exclude, seed=SEED + 7)))
    G["local"] = local_renderer()
    if args.dry_run:
        G["use_hf"] = False
        ex = data.make_train(2000, exclude, seed=SEED + 9)
        n = sum(1 for e in ex if conv_text_and_spans(e))
        log("dry run: rendered", n, "conversations; corpus", len(corpus_ex), "texts")
        write_eval_jsonl(os.path.join(mdir, "eval.jsonl"), eval_sets, args.eval_jsonl_n)
        return 0

    import torch
    import transformers
    versions = dict(python=sys.version.split()[0], torch=torch.__version__,
                    transformers=transformers.__version__)
    try:
        import tokenizers
        versions["tokenizers"] = tokenizers.__version__
    except Exception:  # noqa: BLE001
        pass
    metrics["versions"] = versions
    log("versions", versions)

    tok, err = stage("tokenizer", train_tokenizer, corpus_ex, args.vocab)
    if tok is None:
        return finish(args, mdir, metrics, fatal="tokenizer")
    tok.save(os.path.join(mdir, "tokenizer.json"))
    with open(os.path.join(mdir, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config(tok), f, indent=2, ensure_ascii=False)
    ntok = tok.get_vocab_size(with_added_tokens=True)
    vocab_size = (ntok + 63) // 64 * 64
    log("tokenizer: {} tokens (model vocab {}); ids: {}".format(
        ntok, vocab_size, {t: tok.token_to_id(t) for t in SPECIAL + ADDED}))
    sample = "What is 512 + 87? Spell 'banana' backwards. <tool_call>\n{\"name\": \"get_weather\"}"
    log("sample tokens:", tok.encode(sample, add_special_tokens=False).tokens)
    metrics["tokenizer"] = dict(size=ntok, model_vocab=vocab_size,
                                ids={t: tok.token_to_id(t) for t in SPECIAL + ADDED})

    tok.no_padding()
    tok.no_truncation()
    G["tok"] = tok
    hf, err = stage("hf tokenizer", make_hf_tokenizer, tok)
    G["hf"] = hf
    G["use_hf"] = hf is not None
    if hf is not None:
        # the HF renderer must agree with the plain jinja2 one (the C++ port is tested against both)
        chk = data.make_train(300, exclude, seed=SEED + 11)
        diff = 0
        for e in chk:
            if e["task"] == "plain":
                continue
            msgs = e["prompt_messages"] + e["answer_msgs"]
            try:
                a = render(msgs, e["tools"], False, e["thinking"])
            except Exception as ex:  # noqa: BLE001
                log("apply_chat_template failed:", type(ex).__name__, ex)
                G["use_hf"] = False
                break
            b = G["local"](msgs, tools=e["tools"], add_generation_prompt=False, enable_thinking=e["thinking"])
            diff += a != b
        log("apply_chat_template vs local jinja2: {} differences in {} chats; using {}".format(
            diff, len(chk), "transformers" if G["use_hf"] else "local jinja2"))
        metrics["template_render_diffs"] = diff
    metrics["renderer"] = "transformers.apply_chat_template" if G["use_hf"] else "jinja2 (fallback)"
    t_r = time.time()
    for e in data.make_train(500, exclude, seed=SEED + 13):
        conv_text_and_spans(e)
    log("render speed: {:.0f} us per conversation".format((time.time() - t_r) / 500 * 1e6))

    ds, err = stage("dataset", build_dataset, args, exclude)
    if ds is None:
        return finish(args, mdir, metrics, fatal="dataset")
    rows, rmask, dstats = ds
    metrics["data"] = dstats
    try:  # CUDA is touched only after the forked data workers are gone
        metrics["device"] = torch.cuda.get_device_name(0)
    except Exception as e:  # noqa: BLE001
        metrics["device"] = "unknown ({})".format(e)
    log("device", metrics["device"])

    mm, err = stage("model", build_model, args, vocab_size, tok)
    if mm is None:
        return finish(args, mdir, metrics, fatal="model")
    model, n_params = mm
    metrics["params"] = n_params
    metrics["config"] = dict(hidden=args.hidden, intermediate=args.inter, layers=args.layers,
                             heads=args.heads, kv_heads=args.kv_heads, head_dim=args.head_dim,
                             vocab=vocab_size, seq=args.seq, batch=args.batch)

    budget = min(args.train_seconds, args.budget - args.reserve - (time.time() - T0))
    log("training budget {:.0f}s".format(budget))
    tstate = {}
    metrics["training"] = tstate
    _, err = stage("train", train, args, model, rows, rmask, budget, tstate)
    del rows, rmask

    import torch  # noqa: F811
    try:
        model.to(torch.bfloat16)
    except Exception as e:  # noqa: BLE001
        log("bf16 cast failed:", e)
    # save first (eval might fail)
    _, err = stage("save", save_model, model, mdir, tok)
    res, err = stage("eval", evaluate, model, tok, eval_sets, args)
    if res is not None:
        metrics["eval"] = res
        metrics["eval_table"] = print_table(res)
    stage("eval.jsonl", write_eval_jsonl, os.path.join(mdir, "eval.jsonl"), eval_sets, args.eval_jsonl_n)
    return finish(args, mdir, metrics)


def save_model(model, mdir, tok):
    model.config.bos_token_id = None
    model.config.eos_token_id = tok.token_to_id("<|im_end|>")
    model.config.pad_token_id = tok.token_to_id("<|endoftext|>")
    model.config.use_cache = True
    model.save_pretrained(mdir)
    cpath = os.path.join(mdir, "config.json")
    with open(cpath) as f:
        cfg = json.load(f)
    cfg["dtype"] = "bfloat16"
    if "torch_dtype" in cfg:
        cfg["torch_dtype"] = "bfloat16"
    with open(cpath, "w") as f:
        json.dump(cfg, f, indent=2)
    gc = {"do_sample": False, "eos_token_id": [tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")],
          "pad_token_id": tok.token_to_id("<|endoftext|>")}
    try:
        import transformers
        gc["transformers_version"] = transformers.__version__
    except Exception:  # noqa: BLE001
        pass
    with open(os.path.join(mdir, "generation_config.json"), "w") as f:
        json.dump(gc, f, indent=2)
    sizes = {n: os.path.getsize(os.path.join(mdir, n)) for n in sorted(os.listdir(mdir))}
    log("saved:", sizes)


def finish(args, mdir, metrics, fatal=None):
    if fatal:
        metrics["fatal"] = fatal
    metrics["total_seconds"] = time.time() - T0
    try:
        with open(os.path.join(mdir, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2, default=str)
        with open(os.path.join(args.out, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2, default=str)
    except Exception as e:  # noqa: BLE001
        log("metrics write failed:", e)
    log("total {:.1f}s; packing {}".format(time.time() - T0, mdir))
    try:
        with open(os.path.join(args.out, "train.log"), "w") as f:
            f.write("\n".join(LOG_LINES) + "\n")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            for n in sorted(os.listdir(mdir)):
                tf.add(os.path.join(mdir, n), arcname="mlxcel-demo/" + n)
        blob = buf.getvalue()
        part = 15 * 1024 * 1024
        if len(blob) <= part:
            with open(os.path.join(args.out, "demo.tar.gz"), "wb") as f:
                f.write(blob)
        else:
            for i in range(0, len(blob), part):
                with open(os.path.join(args.out, "demo.tar.gz.part{}".format(i // part)), "wb") as f:
                    f.write(blob[i:i + part])
        log("tar: {} bytes; out files: {}".format(len(blob), sorted(os.listdir(args.out))))
    except Exception as e:  # noqa: BLE001
        log("packing failed:", e)
    return 1 if fatal else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        sys.exit(2)
