#!/usr/bin/env python3
"""Writes seeds for `gguf_parse`: small, valid GGUF files that reach every stage of the
target (metadata, each tensor type's dequantisation, the tokenizer, the model loader).

Written from the GGUF spec with the standard library alone, so the seeds do not come from
the reader under test. The weights are random codes under small scales: the target checks
that loading never fails badly, not what the model says.

    python3 seed.py corpus/gguf_parse
"""

import os
import random
import struct
import sys

# Metadata value types and tensor types, as the GGUF spec numbers them.
U32, I32, F32, BOOL, STRING, ARRAY, U64 = 4, 5, 6, 7, 8, 9, 10
TYPES = {  # name: (id, values per block, bytes per block)
    "F32": (0, 1, 4), "F16": (1, 1, 2), "Q4_0": (2, 32, 18), "Q4_1": (3, 32, 20),
    "Q8_0": (8, 32, 34), "Q4_K": (12, 256, 144), "Q6_K": (14, 256, 210), "BF16": (30, 1, 2),
    "Q5_0": (6, 32, 22), "Q5_1": (7, 32, 24), "Q3_K": (11, 256, 110), "Q5_K": (13, 256, 176),
    "IQ4_NL": (20, 32, 18), "IQ4_XS": (23, 256, 136),
}
ALIGNMENT = 32
# Where each block type keeps its f16 scales (and minimums): byte offsets in a block.
SCALES = {
    "Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q8_0": (0,), "IQ4_NL": (0,),
    "IQ4_XS": (0,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q3_K": (108,), "Q6_K": (208,),
}


def string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def value(kind, v):
    if kind == STRING:
        return string(v)
    if kind == ARRAY:
        elem, items = v
        return struct.pack("<IQ", elem, len(items)) + b"".join(value(elem, x) for x in items)
    return struct.pack({U32: "<I", I32: "<i", F32: "<f", BOOL: "<?", U64: "<Q"}[kind], v)


def gguf(metadata, tensors, rng):
    """metadata: [(key, kind, value)]; tensors: [(name, dims, type name)]."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata))
    for key, kind, v in metadata:
        out += string(key) + struct.pack("<I", kind) + value(kind, v)
    data, offsets = b"", []
    for name, dims, kind in tensors:
        type_id, block, size = TYPES[kind]
        n = 1
        for d in dims:
            n *= d
        offsets.append(len(data))
        if kind in ("F32", "F16", "BF16"):
            # Small floats, so that nothing overflows to infinity on the way; RoPE
            # factors must be positive.
            lo, hi = (1.0, 8.0) if name == "rope_freqs.weight" else (-0.5, 0.5)
            fmt = {"F32": "<f", "F16": "<e", "BF16": None}[kind]
            if fmt:
                data += b"".join(struct.pack(fmt, rng.uniform(lo, hi)) for _ in range(n))
            else:
                data += b"".join(struct.pack("<f", rng.uniform(-0.5, 0.5))[2:] for _ in range(n))
        else:
            # Random codes, with small scales: random f16 bits would often read as NaN or
            # infinity, which the loader refuses before it reaches the rest.
            for _ in range(n // block):
                b = bytearray(rng.getrandbits(8) for _ in range(size))
                for at in SCALES[kind]:
                    b[at:at + 2] = struct.pack("<e", rng.uniform(-0.01, 0.01))
                data += bytes(b)
        data += b"\0" * (-len(data) % ALIGNMENT)
    for (name, dims, kind), offset in zip(tensors, offsets):
        out += string(name) + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", TYPES[kind][0], offset)
    out += b"\0" * (-len(out) % ALIGNMENT)
    return out + data


def byte_symbols():
    """GPT-2's byte-to-unicode map: printable bytes stand for themselves, the others for
    characters from U+0100 on. (scripts/make-tiny-qwen.py takes it from here.)"""
    printable = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
    symbols, shifted = {}, 0
    for b in range(256):
        if b in printable:
            symbols[b] = chr(b)
        else:
            shifted += 1
            symbols[b] = chr(255 + shifted)
    return symbols


def tokenizer_metadata(llama3=False, pre="smollm"):
    """A byte-level BPE: three specials, the 256 byte symbols ([`byte_symbols`]), and two
    merges, split by the pre-tokenizer `pre`. With `llama3`, Llama 3's specials,
    pre-tokenizer, BOS and chat template instead of ChatML's."""
    symbols = byte_symbols()
    if llama3:
        specials = ["<|begin_of_text|>", "<|start_header_id|>", "<|eot_id|>", "<|end_header_id|>"]
        template = ("{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
                    "\n\n{{ m['content'] }}<|eot_id|>{% endfor %}")
    else:
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                    "<|im_end|>\n{% endfor %}<|im_start|>assistant\n")
    tokens = specials + [symbols[b] for b in range(256)] + ["ab", "\u0120ab"]
    types = [3] * len(specials) + [1] * (len(tokens) - len(specials))
    bos = [("tokenizer.ggml.add_bos_token", BOOL, True)] if llama3 else []
    return tokens, bos + [
        ("tokenizer.ggml.model", STRING, "gpt2"),
        ("tokenizer.ggml.pre", STRING, "llama-bpe" if llama3 else pre),
        ("tokenizer.ggml.tokens", ARRAY, (STRING, tokens)),
        ("tokenizer.ggml.merges", ARRAY, (STRING, ["a b", "\u0120 ab"])),
        ("tokenizer.ggml.token_type", ARRAY, (I32, types)),
        ("tokenizer.ggml.bos_token_id", U32, 0 if llama3 else 1),
        ("tokenizer.ggml.eos_token_id", U32, 2),
        ("tokenizer.chat_template", STRING, template),
    ]


def sentencepiece_metadata():
    """A SentencePiece vocab as Llama 2's files have one: `<unk>`, `<s>`, `</s>`, the 256
    byte tokens and scored pieces, with TinyLlama's (Zephyr) chat template."""
    pieces = ["\u2581", "a", "b", "\u2581a", "ab", "\u2581ab"]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]
    return tokens, [
        ("tokenizer.ggml.model", STRING, "llama"),
        ("tokenizer.ggml.tokens", ARRAY, (STRING, tokens)),
        ("tokenizer.ggml.scores", ARRAY, (F32, scores)),
        ("tokenizer.ggml.token_type", ARRAY, (I32, types)),
        ("tokenizer.ggml.unknown_token_id", U32, 0),
        ("tokenizer.ggml.bos_token_id", U32, 1),
        ("tokenizer.ggml.eos_token_id", U32, 2),
        ("tokenizer.chat_template", STRING,
         "{% for m in messages %}{{ '<|user|>\n' + m['content'] + eos_token }}{% endfor %}"),
    ]


def llama(rng, matrix_types, llama3=False, qwen2=False, sentencepiece=False):
    """One layer, d_model 64, two query heads of 32 and one KV head, FFN 128. With
    `llama3`, Llama 3's tokenizer and RoPE frequency factors; with `qwen2`, Qwen2's
    architecture (q/k/v biases) and pre-tokenizer; with `sentencepiece`, Llama 2's
    tokenizer."""
    d, ffn, heads, kv_heads, head = 64, 128, 2, 1, 32
    arch = "qwen2" if qwen2 else "llama"
    if sentencepiece:
        tokens, tok_meta = sentencepiece_metadata()
    else:
        tokens, tok_meta = tokenizer_metadata(llama3, "qwen2" if qwen2 else "smollm")
    metadata = [
        ("general.architecture", STRING, arch),
        ("general.name", STRING, "fuzz seed"),
        (f"{arch}.block_count", U32, 1),
        (f"{arch}.embedding_length", U32, d),
        (f"{arch}.feed_forward_length", U32, ffn),
        (f"{arch}.attention.head_count", U32, heads),
        (f"{arch}.attention.head_count_kv", U32, kv_heads),
        (f"{arch}.context_length", U32, 64),
        (f"{arch}.attention.layer_norm_rms_epsilon", F32, 1e-5),
        (f"{arch}.rope.freq_base", F32, 10000.0),
    ] + tok_meta
    kinds = iter(matrix_types * 8)
    tensors = [("token_embd.weight", [d, len(tokens)], next(kinds)),
               ("output_norm.weight", [d], "F32"),
               ("blk.0.attn_norm.weight", [d], "F32"),
               ("blk.0.ffn_norm.weight", [d], "F32")]
    for name, dims in [("attn_q", [d, heads * head]), ("attn_k", [d, kv_heads * head]),
                       ("attn_v", [d, kv_heads * head]), ("attn_output", [heads * head, d]),
                       ("ffn_gate", [d, ffn]), ("ffn_up", [d, ffn]), ("ffn_down", [ffn, d])]:
        tensors.append((f"blk.0.{name}.weight", dims, next(kinds)))
    if llama3:
        tensors.append(("rope_freqs.weight", [head // 2], "F32"))
    if qwen2:
        tensors += [("blk.0.attn_q.bias", [heads * head], "F32"),
                    ("blk.0.attn_k.bias", [kv_heads * head], "F32"),
                    ("blk.0.attn_v.bias", [kv_heads * head], "F32")]
    return gguf(metadata, tensors, rng)


def every_type(rng):
    """One tensor of each type the reader dequantises, two rows of 256 values."""
    tensors = [(f"t.{kind.lower()}", [256, 2], kind) for kind in TYPES]
    return gguf([("general.architecture", STRING, "none")], tensors, rng)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = random.Random(7)
    seeds = {
        "llama-q4_1": llama(rng, ["Q4_1"]),
        "llama-mixed": llama(rng, ["Q4_1", "Q8_0", "F16", "BF16", "Q4_0", "Q8_0", "Q4_1", "Q4_0"]),
        # As llama.cpp's Q4_K_M and IQ4 presets write SmolLM2: kept in blocks of another kind.
        "llama-q4_k_m": llama(rng, ["Q8_0", "Q5_0", "Q5_0", "Q8_0", "Q5_0", "Q5_0", "Q5_0", "Q5_0"]),
        "llama-iq4": llama(rng, ["Q8_0", "IQ4_NL", "IQ4_NL", "IQ4_NL", "IQ4_NL", "IQ4_NL", "IQ4_NL", "IQ4_NL"]),
        # As the Q5_K_M preset writes it: Q5_1, in blocks of its own kind.
        "llama-q5_k_m": llama(rng, ["Q8_0", "Q5_1", "Q5_1", "Q8_0", "Q5_1", "Q5_1", "Q5_1", "Q5_1"]),
        # As a Llama 3.2 file: its tokenizer, BOS, chat template and RoPE factors.
        "llama3-q4_k_m": llama(rng, ["Q8_0", "Q5_0", "Q5_0", "Q8_0", "Q5_0", "Q5_0", "Q5_0", "Q5_0"], llama3=True),
        # As a Qwen2.5 file: q/k/v biases, its pre-tokenizer, rows in HF's order.
        "qwen2-q8_0": llama(rng, ["Q8_0"], qwen2=True),
        # As a TinyLlama file: SentencePiece, Zephyr's chat turns.
        "llama-spm-q4_0": llama(rng, ["Q4_0"], sentencepiece=True),
        "every-type": every_type(rng),
    }
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
