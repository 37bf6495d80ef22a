#!/usr/bin/env python3
"""Usage: scripts/make-dequant-fixture.py [OUT.json]

Writes crates/samd-model/tests/fixtures/dequant_blocks.json: for each ggml block type
samd reads, a few blocks of pseudo-random bytes (with finite f16 scales) and their values
as the `gguf` package dequantises them (pip install gguf numpy). The Rust dequantisers
were written from ggml's layouts; this holds them to an implementation written by others.
Not needed at test time.
"""
import json
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT = os.path.join(ROOT, "crates", "samd-model", "tests", "fixtures", "dequant_blocks.json")
BLOCKS = 3

# Byte offsets of each type's f16 fields (scales, minimums), from ggml-common.h.
HALVES = {
    T.Q8_0: [0],
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.IQ4_NL: [0],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
    T.IQ4_XS: [0],
}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else OUT
    rng = np.random.default_rng(20261207)
    fixture = {}
    for qtype, halves in HALVES.items():
        block_size, type_size = GGML_QUANT_SIZES[qtype]
        data = rng.integers(0, 256, size=(BLOCKS, type_size), dtype=np.uint8)
        for at in halves:
            scale = rng.uniform(-0.05, 0.05, size=BLOCKS).astype(np.float16)
            data[:, at : at + 2] = scale.view(np.uint8).reshape(BLOCKS, 2)
        values = dequantize(data.reshape(-1), qtype).astype(np.float32)
        assert values.size == BLOCKS * block_size and np.isfinite(values).all()
        fixture[qtype.name] = {
            "bytes": bytes(data.reshape(-1)).hex(),
            "values": [float(v) for v in values],
        }
    with open(out, "w") as f:
        json.dump(fixture, f, indent=0)
        f.write("\n")
    print(f"wrote {out}: {', '.join(fixture)}")


if __name__ == "__main__":
    main()
