#!/usr/bin/env python3
"""Reference vectors for mlxcel's GGUF block dequantization, from llama.cpp's own Python
implementation (gguf-py's quants.dequantize, in .testdata/llama.cpp/gguf-py).

    PYTHONPATH=.testdata/llama.cpp/gguf-py /usr/bin/python3 tools/gguf/make_quant_vectors.py \
        tests/gguf/data/quant_vectors.bin

Format (little-endian): repeated records {u32 ggml_type, u32 n_values, u32 n_bytes,
bytes[n_bytes] blocks, f32[n_values] expected}. Blocks are random bytes with their f16
scale fields set to small finite values, so every bit pattern of the quants is exercised.
"""
import struct
import sys

import numpy as np
from gguf import GGMLQuantizationType as Q, quants
from gguf.constants import GGML_QUANT_SIZES

# type -> byte offsets of the f16 scale fields inside one block
SCALES = {
    Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0],
    Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208],
}


def main(out_path: str) -> None:
    rng = np.random.default_rng(9)
    out = bytearray()
    for qt, offs in SCALES.items():
        block_elems, block_bytes = GGML_QUANT_SIZES[qt]
        n_blocks = 2
        raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
        for b in range(n_blocks):
            for o in offs:
                raw[b, o:o + 2] = np.frombuffer(np.float16(rng.uniform(-0.5, 0.5)).tobytes(), dtype=np.uint8)
        expected = quants.dequantize(raw, qt).astype(np.float32).reshape(-1)
        assert expected.size == n_blocks * block_elems and np.all(np.isfinite(expected))
        out += struct.pack("<III", int(qt), expected.size, raw.size)
        out += raw.tobytes()
        out += expected.tobytes()
    with open(out_path, "wb") as f:
        f.write(out)
    print(f"wrote {out_path}: {len(out)} bytes, {len(SCALES)} types")


if __name__ == "__main__":
    main(sys.argv[1])
