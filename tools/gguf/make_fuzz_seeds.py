#!/usr/bin/env python3
"""Seeds for tests/gguf/fuzz/gguf_fuzz: small valid GGUF v3 files with tensors of every
block format mlxcel reads (random data), one with general.alignment 64.

    /usr/bin/python3 tools/gguf/make_fuzz_seeds.py tests/gguf/fuzz/seeds
"""
import os
import random
import struct
import sys


def s(x: str) -> bytes:
    b = x.encode()
    return struct.pack("<Q", len(b)) + b


def gguf(kvs, tensors, data_len, align=32):
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += s(k) + struct.pack("<I", t) + v
    for name, dims, typ, off in tensors:
        out += s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", typ, off)
    out += b"\0" * ((-len(out)) % align)
    rng = random.Random(1)
    return out + bytes(rng.randrange(256) for _ in range(data_len))


def main(out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    arch = [("general.architecture", 8, s("llama"))]
    # name, dims (fastest first), ggml type, offset (32-aligned)
    each = [("a", [32, 2], 0, 0), ("b", [32], 1, 256), ("c", [32, 2], 8, 320), ("d", [32], 2, 416),
            ("e", [32], 3, 448), ("f", [32], 6, 480), ("g", [32], 7, 512), ("h", [256], 10, 544),
            ("i", [256], 11, 640), ("j", [256], 12, 768), ("k", [256], 13, 928), ("l", [256], 14, 1120),
            ("m", [32], 30, 1344)]
    with open(os.path.join(out_dir, "one_of_each.gguf"), "wb") as f:
        f.write(gguf(arch, each, 1408))
    with open(os.path.join(out_dir, "aligned64.gguf"), "wb") as f:
        f.write(gguf([("general.alignment", 4, struct.pack("<I", 64))], [("x", [64], 0, 0), ("y", [32], 8, 256)],
                     320, align=64))


if __name__ == "__main__":
    main(sys.argv[1])
