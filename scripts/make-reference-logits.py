#!/usr/bin/env python3
"""Usage: scripts/make-reference-logits.py [MODEL.gguf] [OUT.json]

Writes crates/samd-model/tests/fixtures/reference_logits.json: an independent numpy
forward of SmolLM2-135M-Instruct (from the dequantised GGUF weights, in float64) over the
fixed ChatML prompt, with the top-20 logits at every prompt position and the greedy reply.
Given another model (another quantisation of it, say), it writes that model's reference to
OUT, which `samd check-reference --model MODEL --fixture OUT` holds samd to.

Independent of the Rust code on purpose:
- weights are dequantised by the `gguf` package (pip install gguf numpy tokenizers);
- RoPE is HF's rotate-half over q/k rows in HF's order: a Llama file's rows are un-permuted
  back to it, a Qwen2 file's are stored so; whereas the Rust forward applies interleaved
  RoPE, to a Llama file's rows as stored and to a Qwen2 file's reordered at load;
- q/k/v biases (Qwen2) are added where the file has them, and each query and key head is
  RMS-normed where the file has those norms (Qwen3), whose heads are as wide as its
  `key_length` says;
- the prompt is tokenized by HF `tokenizers` built from the GGUF vocab and merges, with the
  pre-tokenizer the file names (`smollm`, or `qwen2`: its split regex after NFC).
"""
import hashlib
import json
import os
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
OUT = os.path.join(ROOT, "crates", "samd-model", "tests", "fixtures", "reference_logits.json")
PROMPT = (
    "<|im_start|>user\nWhat is the capital of France? Answer in one sentence.<|im_end|>\n"
    "<|im_start|>assistant\n"
)
TOP_K = 20
MAX_NEW_TOKENS = 16
END_OF_TURN = "<|im_end|>"
# Qwen2's split regex, as its tokenizer.json has it.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def field(reader, key):
    return reader.fields[key].contents()


def tensor(reader, name):
    t = next(t for t in reader.tensors if t.name == name)
    # numpy shape is the GGUF dims reversed: [out, in] for a matrix.
    return dequantize(t.data, t.tensor_type).astype(np.float64).reshape(
        tuple(int(d) for d in reversed(t.shape))
    )


def tokenize(reader, text):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    tokens = field(reader, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges")]
    types = field(reader, "tokenizer.ggml.token_type")
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    pre = field(reader, "tokenizer.ggml.pre")
    if pre == "qwen2":
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    elif pre == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    else:
        sys.exit(f"pre-tokenizer {pre!r} is not written here")
    tok.decoder = decoders.ByteLevel()
    # token_type 3 = control (special) tokens such as <|im_start|>.
    specials = [t for t, ty in zip(tokens, types) if ty == 3]
    tok.add_special_tokens(specials)
    return tok, tok.encode(text).ids


def unpermute(w, n_head):
    """Inverse of llama.cpp's convert permute: GGUF interleaved rows -> HF rotate-half rows."""
    out, inp = w.shape
    return w.reshape(n_head, out // n_head // 2, 2, inp).swapaxes(1, 2).reshape(out, inp)


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def forward(cfg, W, ids):
    n = len(ids)
    hd = cfg["head_dim"]
    x = W["token_embd"][ids]  # [n, d]
    inv = cfg["theta"] ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)  # [hd/2]
    if "rope_freqs" in W:  # Llama 3.1's long-context scaling: pair i turns 1/f_i as fast
        inv = inv / W["rope_freqs"]
    ang = np.arange(n, dtype=np.float64)[:, None] * inv[None, :]  # [n, hd/2]
    cos = np.concatenate([np.cos(ang)] * 2, axis=-1)[:, None, :]  # [n, 1, hd]
    sin = np.concatenate([np.sin(ang)] * 2, axis=-1)[:, None, :]

    def rope(t):  # t: [n, heads, hd], rotate-half
        t1, t2 = t[..., : hd // 2], t[..., hd // 2 :]
        return t * cos + np.concatenate([-t2, t1], axis=-1) * sin

    causal = np.triu(np.full((n, n), -np.inf), 1)
    group = cfg["n_head"] // cfg["n_kv"]
    for layer in W["blocks"]:
        h = rms_norm(x, layer["attn_norm"], cfg["eps"])
        q = (h @ layer["q"].T + layer["q_bias"]).reshape(n, cfg["n_head"], hd)
        k = (h @ layer["k"].T + layer["k_bias"]).reshape(n, cfg["n_kv"], hd)
        if "q_norm" in layer:  # Qwen3: each head RMS-normed before RoPE
            q = rms_norm(q, layer["q_norm"], cfg["eps"])
            k = rms_norm(k, layer["k_norm"], cfg["eps"])
        q, k = rope(q), rope(k)
        v = (h @ layer["v"].T + layer["v_bias"]).reshape(n, cfg["n_kv"], hd)
        k = np.repeat(k, group, axis=1)
        v = np.repeat(v, group, axis=1)
        s = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd) + causal  # [heads, n, n]
        s = np.exp(s - s.max(-1, keepdims=True))
        p = s / s.sum(-1, keepdims=True)
        o = np.einsum("hqk,khd->qhd", p, v).reshape(n, -1)
        x = x + o @ layer["o"].T
        h = rms_norm(x, layer["ffn_norm"], cfg["eps"])
        g = h @ layer["gate"].T
        x = x + ((g / (1 + np.exp(-g))) * (h @ layer["up"].T)) @ layer["down"].T
    x = rms_norm(x, W["output_norm"], cfg["eps"])
    return x @ W["output"].T  # [n, vocab]


def load(r):
    """The model's config and its weights in float64, q/k rows in HF's layout."""
    a = field(r, "general.architecture")
    if a not in ("llama", "qwen2", "qwen3"):
        sys.exit(f"architecture {a!r} is not written here")
    cfg = {
        "n_layer": int(field(r, f"{a}.block_count")),
        "n_head": int(field(r, f"{a}.attention.head_count")),
        "n_kv": int(field(r, f"{a}.attention.head_count_kv")),
        "eps": float(field(r, f"{a}.attention.layer_norm_rms_epsilon")),
        "theta": float(field(r, f"{a}.rope.freq_base")),
    }
    d = int(field(r, f"{a}.embedding_length"))
    key_length = f"{a}.attention.key_length"
    cfg["head_dim"] = int(field(r, key_length)) if key_length in r.fields else d // cfg["n_head"]
    names = {t.name for t in r.tensors}
    W = {
        "token_embd": tensor(r, "token_embd.weight"),
        "output_norm": tensor(r, "output_norm.weight"),
        "blocks": [],
    }
    W["output"] = tensor(r, "output.weight") if "output.weight" in names else W["token_embd"]
    if "rope_freqs.weight" in names:
        W["rope_freqs"] = tensor(r, "rope_freqs.weight").reshape(-1)
    # llama.cpp's converter permutes a Llama file's q/k rows, and stores Qwen's as HF has
    # them (its graph runs NEOX RoPE there).
    hf_order = (lambda w, heads: w) if a in ("qwen2", "qwen3") else unpermute
    for i in range(cfg["n_layer"]):
        b = lambda s: tensor(r, f"blk.{i}.{s}.weight")
        # A bias, or 0 where the file has none.
        bias = lambda s: tensor(r, f"blk.{i}.{s}.bias") if f"blk.{i}.{s}.bias" in names else 0.0
        W["blocks"].append(
            {
                "attn_norm": b("attn_norm"),
                "q": hf_order(b("attn_q"), cfg["n_head"]),
                "k": hf_order(b("attn_k"), cfg["n_kv"]),
                "v": b("attn_v"),
                "q_bias": bias("attn_q"),
                "k_bias": bias("attn_k"),
                "v_bias": bias("attn_v"),
                **(
                    {"q_norm": b("attn_q_norm"), "k_norm": b("attn_k_norm")}
                    if f"blk.{i}.attn_q_norm.weight" in names
                    else {}
                ),
                "o": b("attn_output"),
                "ffn_norm": b("ffn_norm"),
                "gate": b("ffn_gate"),
                "up": b("ffn_up"),
                "down": b("ffn_down"),
            }
        )
    return cfg, W


def main():
    model = sys.argv[1] if len(sys.argv) > 1 else MODEL
    out = sys.argv[2] if len(sys.argv) > 2 else OUT
    with open(model, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    r = GGUFReader(model)
    cfg, W = load(r)
    tok, prompt_ids = tokenize(r, PROMPT)
    logits = forward(cfg, W, prompt_ids)
    positions = []
    for row in logits:
        top = np.argsort(-row, kind="stable")[:TOP_K]
        positions.append(
            {"ids": [int(i) for i in top], "logits": [round(float(row[i]), 6) for i in top]}
        )
    # Greedy reply, recomputing the whole sequence each step (slow but obviously right).
    ids = list(prompt_ids)
    end_of_turn = tok.token_to_id(END_OF_TURN)
    reply = []
    next_id = int(np.argmax(logits[-1]))
    while len(reply) < MAX_NEW_TOKENS:
        reply.append(next_id)
        if next_id == end_of_turn:
            break
        ids.append(next_id)
        next_id = int(np.argmax(forward(cfg, W, ids)[-1]))
    data = {
        "about": "numpy float64 forward of the GGUF below; written by scripts/make-reference-logits.py",
        "model": os.path.basename(model),
        "model_sha256": sha,
        "prompt": PROMPT,
        "prompt_ids": [int(i) for i in prompt_ids],
        "top_k": TOP_K,
        "positions": positions,
        "greedy_ids": reply,
        "greedy_text": tok.decode(reply, skip_special_tokens=True),
    }
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(data, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {out}: {len(prompt_ids)} prompt positions, reply {data['greedy_text']!r}")


if __name__ == "__main__":
    main()
