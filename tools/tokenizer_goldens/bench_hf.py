#!/usr/bin/env python3
"""HF `tokenizers` side of bench/tokenizer_bench.cpp: same documents, same checksum.

Usage: bench_hf.py <tokenizer.json[.gz]> <corpus.jsonl> [repeats=200] [rounds=3]
"""
import gzip
import json
import sys
import time

from tokenizers import Tokenizer


def main():
    path, corpus = sys.argv[1], sys.argv[2]
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    t0 = time.perf_counter()
    if path.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            tok = Tokenizer.from_str(f.read())
    else:
        tok = Tokenizer.from_file(path)
    load_s = time.perf_counter() - t0
    with open(corpus, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    docs = texts * repeats
    nbytes = sum(len(d.encode("utf-8")) for d in docs)
    best = 1e30
    for _ in range(rounds):
        n_tokens = 0
        checksum = 0
        t1 = time.perf_counter()
        all_ids = [tok.encode(d, add_special_tokens=False).ids for d in docs]
        best = min(best, time.perf_counter() - t1)
    for ids in all_ids:
        n_tokens += len(ids)
        for i, x in enumerate(ids):
            checksum = (checksum * 1000003 + x + i) % (1 << 64)
    t2 = time.perf_counter()
    tok.encode_batch(docs, add_special_tokens=False)
    batch_s = time.perf_counter() - t2
    print(f"hf load_s={load_s:.3f} docs={len(docs)} bytes={nbytes} tokens={n_tokens} best_s={best:.4f} "
          f"MB/s={nbytes / best / 1e6:.2f} tok/s={n_tokens / best:.0f} checksum={checksum} "
          f"batch_all_cores_s={batch_s:.4f}")


if __name__ == "__main__":
    main()
