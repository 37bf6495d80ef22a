#!/usr/bin/env python3
"""Usage: scripts/make-tiny-qwen.py qwen2|qwen3 [OUT.gguf]

Writes crates/samd-model/tests/fixtures/tiny_ARCH.gguf: a Qwen2 or Qwen3 model small
enough to commit (two layers, d_model 64, four query heads and two KV heads), with random
weights, as llama.cpp's converter writes them: q/k rows in HF's order (NEOX RoPE, not
permuted), a tied head, and a byte-level BPE vocab with the `qwen2` pre-tokenizer and
ChatML. Qwen2 has q/k/v biases and heads of 16 (d_model / heads); Qwen3 has an RMSNorm
weight per query and key head (`attn_q_norm`, `attn_k_norm`) and heads of 32, wider than
d_model / heads, as its `key_length` says. No file of a real Qwen model can be fetched
here, so these stand in for them; `scripts/make-reference-logits.py` then writes their
reference logits, which the tests hold samd to:

    scripts/make-tiny-qwen.py qwen2
    scripts/make-reference-logits.py crates/samd-model/tests/fixtures/tiny_qwen2.gguf \
        crates/samd-model/tests/fixtures/tiny_qwen2_reference.json

and the same with qwen3.

Needs `pip install gguf==0.19.0 numpy regex`. The matrices are stored as a mixed-type
file stores them (q/k/v in Q8_0, the output projection in Q4_0, gate and up in Q4_1, down
in F16), so that samd reorders rows of blocks as well as of floats.
"""
import collections
import os
import sys

import numpy as np
import regex
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter
from gguf.quants import quantize

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
# GPT-2's byte-to-unicode map, from the fuzz seeds' writer.
sys.path.insert(0, os.path.join(ROOT, "crates", "samd-model", "fuzz"))
from seed import byte_symbols  # noqa: E402
FIXTURES = os.path.join(ROOT, "crates", "samd-model", "tests", "fixtures")
LAYERS, D, FFN, HEADS, KV_HEADS, CONTEXT = 2, 64, 128, 4, 2, 256
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen2's split (llama.cpp's `qwen2` pre-tokenizer).
SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
         r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# Text the merges are learnt from: the reference prompt's words, and some others.
MERGE_TEXT = ("user\nWhat is the capital of France? Answer in one sentence.\nassistant\n"
              "The capital of France is Paris. What is the answer? The sentence is one.")
MERGES = 48


def learn_merges(symbols):
    """A few BPE merges, most frequent pair first, over MERGE_TEXT's pieces."""
    words = [[symbols[b] for b in piece.encode()] for piece in regex.findall(SPLIT, MERGE_TEXT)]
    merges = []
    for _ in range(MERGES):
        pairs = collections.Counter(p for w in words for p in zip(w, w[1:]))
        if not pairs:
            break
        # Most frequent, ties broken by the pair itself, so the file is the same each run.
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append((a, b))
        for w in words:
            i = 0
            while i < len(w) - 1:
                if (w[i], w[i + 1]) == (a, b):
                    w[i:i + 2] = [a + b]
                i += 1
    return merges


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("qwen2", "qwen3"):
        sys.exit(__doc__)
    arch = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(FIXTURES, f"tiny_{arch}.gguf")
    # Qwen2's seed is the one its committed fixture was written with.
    rng = np.random.default_rng({"qwen2": 2024, "qwen3": 2025}[arch])
    symbols = byte_symbols()
    merges = learn_merges(symbols)
    # Two merges may make the same token (a+bc, ab+c); the vocab holds it once.
    joined = list(dict.fromkeys(a + b for a, b in merges))
    tokens = SPECIALS + [symbols[b] for b in range(256)] + joined
    types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS))
    head = {"qwen2": D // HEADS, "qwen3": 2 * D // HEADS}[arch]
    vocab = len(tokens)

    w = GGUFWriter(out, arch)
    w.add_name(f"tiny {arch} (random weights)")
    w.add_block_count(LAYERS)
    w.add_context_length(CONTEXT)
    w.add_embedding_length(D)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    if arch == "qwen3":
        w.add_key_length(head)
        w.add_value_length(head)
    w.add_rope_freq_base(1_000_000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([f"{a} {b}" for a, b in merges])
    w.add_eos_token_id(SPECIALS.index("<|im_end|>"))
    w.add_bos_token_id(SPECIALS.index("<|endoftext|>"))
    w.add_add_bos_token(False)
    w.add_chat_template(
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
        "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )

    def matrix(name, n_in, n_out, qtype):
        # numpy's shape is GGUF's dims reversed: [out, in].
        x = (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)
        if qtype == Q.F16:
            w.add_tensor(name, x.astype(np.float16))
        else:
            w.add_tensor(name, quantize(x, qtype), raw_dtype=qtype)

    def vector(name, n, centre, spread):
        w.add_tensor(name, (centre + spread * rng.standard_normal(n)).astype(np.float32))

    w.add_tensor("token_embd.weight", quantize(
        (0.3 * rng.standard_normal((vocab, D))).astype(np.float32), Q.Q8_0), raw_dtype=Q.Q8_0)
    vector("output_norm.weight", D, 1.0, 0.1)
    for i in range(LAYERS):
        vector(f"blk.{i}.attn_norm.weight", D, 1.0, 0.1)
        matrix(f"blk.{i}.attn_q.weight", D, HEADS * head, Q.Q8_0)
        matrix(f"blk.{i}.attn_k.weight", D, KV_HEADS * head, Q.Q8_0)
        matrix(f"blk.{i}.attn_v.weight", D, KV_HEADS * head, Q.Q8_0)
        if arch == "qwen2":
            # Qwen2's biases are large next to its products.
            vector(f"blk.{i}.attn_q.bias", HEADS * head, 0.0, 0.5)
            vector(f"blk.{i}.attn_k.bias", KV_HEADS * head, 0.0, 1.0)
            vector(f"blk.{i}.attn_v.bias", KV_HEADS * head, 0.0, 0.2)
        else:
            vector(f"blk.{i}.attn_q_norm.weight", head, 1.0, 0.3)
            vector(f"blk.{i}.attn_k_norm.weight", head, 1.0, 0.3)
        matrix(f"blk.{i}.attn_output.weight", HEADS * head, D, Q.Q4_0)
        vector(f"blk.{i}.ffn_norm.weight", D, 1.0, 0.1)
        matrix(f"blk.{i}.ffn_gate.weight", D, FFN, Q.Q4_1)
        matrix(f"blk.{i}.ffn_up.weight", D, FFN, Q.Q4_1)
        matrix(f"blk.{i}.ffn_down.weight", FFN, D, Q.F16)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {out}: {vocab} tokens, {os.path.getsize(out)} bytes")


if __name__ == "__main__":
    main()
