#!/usr/bin/env python3
"""Usage: scripts/make-onnx-peer.py [MODEL.gguf] [OUT_DIR]

Writes the GGUF's model as ONNX models in the layout transformers.js loads
(`config.json`, `generation_config.json` and three models under `onnx/`), for
the browser peer benchmark (`scripts/peer-web.sh`). There is no model hub to fetch the
published ONNX files from, and the peer should run the very weights samd runs anyway: here
they are the GGUF's, dequantised to float32 by the `gguf` package, in a Llama graph
written out node by node with `onnx.helper`.

- `model.onnx` (transformers.js dtype `fp32`): every matrix in float32, so exactly the
  GGUF's weights.
- `model_quantized.onnx` (dtype `q8`, transformers.js's default on its wasm backend):
  `model.onnx` through onnxruntime's `quantize_dynamic`, as transformers.js's own q8
  exports are made: 8-bit weights with a scale per output column, and each product's input
  rounded to 8 bits as it runs. Its logits part from the GGUF's the most.
- `model_q4.onnx` (dtype `q4`): the products in onnxruntime's 4-bit `MatMulNBits`, as
  transformers.js's own q4 exports are, so the peer reads about as few bytes per token as
  samd does. Its format (a scale and a 4-bit zero point per block of 32) cannot hold
  Q4_1's float minimum, so each block is requantised from the float32 weights: close to
  the GGUF's, not equal. The tied head is 8-bit, which holds Q8_0 exactly. The embedding
  stays float32.

The graph is the one transformers.js expects of an exported decoder: inputs `input_ids`,
`attention_mask`, `position_ids` and `past_key_values.{i}.key|value`
(`[batch, kv_heads, past, head_dim]`); outputs `logits` and `present.{i}.key|value`.
q/k rows are un-permuted to HF's layout and RoPE is rotate-half, as in
`make-reference-logits.py`, whose float64 numpy forward checks the graph before it is
written: onnxruntime runs a prompt in one pass, then in two (the second on the first's
cache), and both must agree with numpy over the weights the graph holds (for the 8-bit
model, whose inputs are rounded as it runs, it only prints how far it is).

Needs `pip install gguf numpy onnx onnxruntime` (scripts/peer-web.sh installs them in a
virtual environment of its own).
"""
import importlib.util
import json
import os
import sys

import numpy as np
import onnx
from gguf import GGUFReader
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
OUT = os.path.join(ROOT, "models", "peer-onnx", "SmolLM2-135M-Instruct")
OPSET = 18
# Weights per MatMulNBits block, as in the GGUF's.
BLOCK = 32
# onnxruntime-web 1.31 reads models up to IR version 13; onnx 1.23 writes 14 unless told.
IR_VERSION = 10

_spec = importlib.util.spec_from_file_location(
    "reference", os.path.join(ROOT, "scripts", "make-reference-logits.py")
)
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)


class Graph:
    """Nodes, initializers and fresh names for one ONNX graph; `bits` (4 or None) is how
    its block matrices are stored."""

    def __init__(self, bits=None):
        self.nodes, self.inits, self.count, self.bits = [], [], 0, bits

    def const(self, value, name=None, dtype=None):
        self.count += 1
        name = name or f"c{self.count}"
        array = np.asarray(value, dtype=dtype)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def op(self, kind, *inputs, out=None, outputs=1, domain=None, **attrs):
        """Adds a node; returns its output's name, or with `outputs` > 1 their names."""
        self.count += 1
        names = [out or f"t{self.count}"] if outputs == 1 else [
            f"t{self.count}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(kind, list(inputs), names, domain=domain, **attrs))
        return names[0] if outputs == 1 else names


def rms_norm(g, x, weight, eps):
    mean = g.op("ReduceMean", g.op("Mul", x, x), g.const([-1], dtype=np.int64), keepdims=1)
    scale = g.op("Reciprocal", g.op("Sqrt", g.op("Add", mean, g.const(eps, dtype=np.float32))))
    return g.op("Mul", g.op("Mul", x, scale), g.const(weight, dtype=np.float32))


def linear(g, x, weight, bits=None):
    """x @ weight.T, with `weight` as the GGUF stores it: [out, in]; in float32, or in
    `bits`-bit blocks when given (default: the graph's)."""
    bits = bits or g.bits
    if bits is None:
        return g.op("MatMul", x, g.const(weight.T.copy(), dtype=np.float32))
    n, k = weight.shape
    packed, scales, zeros = quantise_blocks(weight.astype(np.float32), bits)
    return g.op(
        "MatMulNBits", x, g.const(packed), g.const(scales), g.const(zeros),
        domain="com.microsoft", K=k, N=n, bits=bits, block_size=BLOCK,
    )


def quantise_blocks(w, bits):
    """`w` ([n, k]) in MatMulNBits' blocks of BLOCK along k: asymmetric `bits`-bit codes
    (4-bit ones two to a byte, the lower element in the low nibble), a float scale and an
    integer zero point per block (4-bit ones two to a byte too), so w ~ scale * (code - zero).
    The grid must hold 0, so each block tries a few scales narrower than its range and
    keeps the one with the least squared error."""
    n, k = w.shape
    blocks = w.reshape(n, k // BLOCK, BLOCK).astype(np.float64)
    top = (1 << bits) - 1
    low = np.minimum(blocks.min(-1, keepdims=True), 0.0)
    high = np.maximum(blocks.max(-1, keepdims=True), 0.0)
    span = np.where(high > low, (high - low) / top, 1.0)
    best = None
    for shrink in np.linspace(0.8, 1.0, 11):
        scale = span * shrink
        zero = np.clip(np.round(-low / scale), 0, top)
        codes = np.clip(np.round(blocks / scale) + zero, 0, top)
        error = ((scale * (codes - zero) - blocks) ** 2).sum(-1, keepdims=True)
        if best is None:
            best = [error, scale, zero, codes]
        else:
            better = error < best[0]
            for i, value in enumerate((error, scale, zero, codes)):
                best[i] = np.where(better, value, best[i])
    _, scale, zero, codes = best
    codes = codes.astype(np.uint8)
    zero = zero.astype(np.uint8).reshape(n, -1)
    if bits == 4:
        codes = codes[..., 0::2] | (codes[..., 1::2] << 4)
        if zero.shape[1] % 2:
            zero = np.pad(zero, ((0, 0), (0, 1)))
        zero = zero[:, 0::2] | (zero[:, 1::2] << 4)
    return codes, scale.astype(np.float32).reshape(-1), zero.reshape(-1)


def dequantise_blocks(codes, scale, zero, shape, bits):
    """The float64 matrix ([n, k]) that `quantise_blocks`' output stands for."""
    n, k = shape
    if bits == 4:
        codes = np.stack([codes & 15, codes >> 4], -1)
        zero = np.stack([zero & 15, zero >> 4], -1)
    codes = codes.reshape(n, k // BLOCK, BLOCK).astype(np.float64)
    zero = zero.reshape(n, -1)[:, : k // BLOCK, None].astype(np.float64)
    return (scale.reshape(n, k // BLOCK, 1) * (codes - zero)).reshape(n, k)


def as_stored(W, bits):
    """The weights as a graph of `bits`-bit blocks holds them (`bits` None: as they are),
    for the numpy forward that checks it."""
    if bits is None:
        return W

    def stored(w, bits):
        return dequantise_blocks(*quantise_blocks(w.astype(np.float32), bits), w.shape, bits)

    matrices = ("q", "k", "v", "o", "gate", "up", "down")
    blocks = [{key: stored(w, bits) if key in matrices else w for key, w in b.items()}
              for b in W["blocks"]]
    return {**W, "blocks": blocks, "output": stored(W["output"], 8)}


def heads(g, x, n, hd):
    """[B, S, n·hd] -> [B, n, S, hd]."""
    shaped = g.op("Reshape", x, g.const([0, 0, n, hd], dtype=np.int64))
    return g.op("Transpose", shaped, perm=[0, 2, 1, 3])


def rope(g, t, cos, sin, hd):
    """Rotate-half RoPE of `t` ([B, n, S, hd]) with `cos`/`sin` ([B, 1, S, hd])."""
    half = g.const([hd // 2, hd // 2], dtype=np.int64)
    first, second = g.op("Split", t, half, outputs=2, axis=-1)
    rotated = g.op("Concat", g.op("Neg", second), first, axis=-1)
    return g.op("Add", g.op("Mul", t, cos), g.op("Mul", rotated, sin))


def repeat_kv(g, t, n_kv, group, hd):
    """[B, kv, T, hd] -> [B, kv·group, T, hd], each kv head repeated `group` times."""
    wide = g.op("Unsqueeze", t, g.const([2], dtype=np.int64))
    wide = g.op("Expand", wide, g.const([1, 1, group, 1, 1], dtype=np.int64))
    return g.op("Reshape", wide, g.const([0, n_kv * group, -1, hd], dtype=np.int64))


def build(cfg, W, bits=None):
    g = Graph(bits)
    hd, n_head, n_kv = cfg["head_dim"], cfg["n_head"], cfg["n_kv"]
    group = n_head // n_kv
    # RoPE's angles from position_ids: [B, S, hd], then [B, 1, S, hd].
    inv = cfg["theta"] ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    pos = g.op("Unsqueeze", g.op("Cast", "position_ids", to=TensorProto.FLOAT),
               g.const([-1], dtype=np.int64))
    ang = g.op("Mul", pos, g.const(inv, dtype=np.float32))
    ang = g.op("Concat", ang, ang, axis=-1)
    at_heads = g.const([1], dtype=np.int64)
    cos = g.op("Unsqueeze", g.op("Cos", ang), at_heads)
    sin = g.op("Unsqueeze", g.op("Sin", ang), at_heads)
    # The additive mask, [B, 1, S, T]: key j is seen by query i (at T - S + i) when
    # j <= T - S + i and attention_mask[b, j] is 1.
    total = g.op("Gather", g.op("Shape", "attention_mask"), g.const(1, dtype=np.int64), axis=0)
    new = g.op("Gather", g.op("Shape", "input_ids"), g.const(1, dtype=np.int64), axis=0)
    one = g.const(1, dtype=np.int64)
    queries = g.op("Range", g.op("Sub", total, new), total, one)
    keys = g.op("Range", g.const(0, dtype=np.int64), total, one)
    causal = g.op("LessOrEqual", g.op("Unsqueeze", keys, g.const([0], dtype=np.int64)),
                  g.op("Unsqueeze", queries, g.const([1], dtype=np.int64)))
    padded = g.op("Cast", g.op("Unsqueeze", "attention_mask", g.const([1, 2], dtype=np.int64)),
                  to=TensorProto.BOOL)
    allowed = g.op("And", causal, padded)
    mask = g.op("Where", allowed, g.const(0.0, dtype=np.float32),
                g.const(np.finfo(np.float32).min, dtype=np.float32))

    x = g.op("Gather", g.const(W["token_embd"], "embed", np.float32), "input_ids", axis=0)
    scale = g.const(1.0 / np.sqrt(hd), dtype=np.float32)
    for i, layer in enumerate(W["blocks"]):
        h = rms_norm(g, x, layer["attn_norm"], cfg["eps"])
        q = rope(g, heads(g, linear(g, h, layer["q"]), n_head, hd), cos, sin, hd)
        k = rope(g, heads(g, linear(g, h, layer["k"]), n_kv, hd), cos, sin, hd)
        v = heads(g, linear(g, h, layer["v"]), n_kv, hd)
        k = g.op("Concat", f"past_key_values.{i}.key", k, axis=2, out=f"present.{i}.key")
        v = g.op("Concat", f"past_key_values.{i}.value", v, axis=2, out=f"present.{i}.value")
        kt = g.op("Transpose", repeat_kv(g, k, n_kv, group, hd), perm=[0, 1, 3, 2])
        scores = g.op("Add", g.op("Mul", g.op("MatMul", q, kt), scale), mask)
        o = g.op("MatMul", g.op("Softmax", scores, axis=-1), repeat_kv(g, v, n_kv, group, hd))
        o = g.op("Reshape", g.op("Transpose", o, perm=[0, 2, 1, 3]),
                 g.const([0, 0, -1], dtype=np.int64))
        x = g.op("Add", x, linear(g, o, layer["o"]))
        h = rms_norm(g, x, layer["ffn_norm"], cfg["eps"])
        gate = linear(g, h, layer["gate"])
        act = g.op("Mul", g.op("Mul", gate, g.op("Sigmoid", gate)), linear(g, h, layer["up"]))
        x = g.op("Add", x, linear(g, act, layer["down"]))
    x = rms_norm(g, x, W["output_norm"], cfg["eps"])
    head = linear(g, x, W["output"], bits=8 if bits else None)
    g.op("Identity", head, out="logits")

    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    cache = ["batch", n_kv, "past", hd]
    inputs = [
        helper.make_tensor_value_info("input_ids", i64, ["batch", "sequence"]),
        helper.make_tensor_value_info("attention_mask", i64, ["batch", "total"]),
        helper.make_tensor_value_info("position_ids", i64, ["batch", "sequence"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", f32, ["batch", "sequence", cfg["vocab"]])]
    for i in range(cfg["n_layer"]):
        for part in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{part}", f32, cache))
            outputs.append(helper.make_tensor_value_info(
                f"present.{i}.{part}", f32, ["batch", n_kv, "total", hd]))
    graph = helper.make_graph(g.nodes, "llama", inputs, outputs, g.inits)
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=IR_VERSION)


def run(session, cfg, ids, past=None):
    """One onnxruntime pass over `ids` after `past` (a previous pass's outputs)."""
    hd, n_kv = cfg["head_dim"], cfg["n_kv"]
    seen = 0 if past is None else past["present.0.key"].shape[2]
    feed = {
        "input_ids": np.array([ids], dtype=np.int64),
        "attention_mask": np.ones((1, seen + len(ids)), dtype=np.int64),
        "position_ids": np.arange(seen, seen + len(ids), dtype=np.int64)[None],
    }
    for i in range(cfg["n_layer"]):
        for part in ("key", "value"):
            feed[f"past_key_values.{i}.{part}"] = (
                np.zeros((1, n_kv, 0, hd), np.float32) if past is None
                else past[f"present.{i}.{part}"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


def check(path, cfg, W, ids, exact=True):
    """The graph against the numpy forward over the same weights: one pass, and two
    passes through the cache; unless `exact`, only printed."""
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    want = reference.forward(cfg, W, ids)
    whole = run(session, cfg, ids)["logits"][0]
    cut = len(ids) // 2
    first = run(session, cfg, ids[:cut])
    second = run(session, cfg, ids[cut:], first)["logits"][0]
    split = np.concatenate([first["logits"][0], second])
    name = os.path.basename(path)
    for way, got in (("one pass", whole), ("two passes", split)):
        error = float(np.abs(got - want).max())
        same = float((got.argmax(-1) == want.argmax(-1)).mean())
        print(f"check {name} ({way}): max |logit - numpy| {error:.2e}, same argmax at {same:.0%} of positions")
        if exact and (error > 1e-2 or same < 1):
            sys.exit(f"make-onnx-peer: {name} disagrees with numpy ({way})")


def main():
    model = sys.argv[1] if len(sys.argv) > 1 else MODEL
    out = sys.argv[2] if len(sys.argv) > 2 else OUT
    r = GGUFReader(model)
    cfg, W = reference.load(r)
    cfg["vocab"] = int(W["output"].shape[0])
    onnx_dir = os.path.join(out, "onnx")
    os.makedirs(onnx_dir, exist_ok=True)
    _, ids = reference.tokenize(r, reference.PROMPT)
    for name, bits in (("model.onnx", None), ("model_q4.onnx", 4)):
        path = os.path.join(onnx_dir, name)
        onnx.save(build(cfg, W, bits), path)
        check(path, cfg, as_stored(W, bits), ids)
        print(f"wrote {path}: {os.path.getsize(path) / 1e6:.0f} MB")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path = os.path.join(onnx_dir, "model_quantized.onnx")
    quantize_dynamic(
        os.path.join(onnx_dir, "model.onnx"), path, weight_type=QuantType.QUInt8, per_channel=True
    )
    check(path, cfg, W, ids, exact=False)
    print(f"wrote {path}: {os.path.getsize(path) / 1e6:.0f} MB")
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": int(W["token_embd"].shape[1]),
        "intermediate_size": int(W["blocks"][0]["gate"].shape[0]),
        "num_hidden_layers": cfg["n_layer"],
        "num_attention_heads": cfg["n_head"],
        "num_key_value_heads": cfg["n_kv"],
        "head_dim": cfg["head_dim"],
        "rms_norm_eps": cfg["eps"],
        "rope_theta": cfg["theta"],
        "vocab_size": cfg["vocab"],
        "tie_word_embeddings": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
    }
    generation = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}
    for name, data in (("config.json", config), ("generation_config.json", generation)):
        with open(os.path.join(out, name), "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
