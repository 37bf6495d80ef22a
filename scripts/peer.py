#!/usr/bin/env python3
"""The peers, side by side: HF transformers or llama.cpp on the model, prompts and device `samd bench` used.

Usage:
  python3 scripts/peer.py --model M.gguf --traces T.jsonl --max-tokens N
      [--peer hf|llama.cpp] [--bench-json B.json] [--device cuda|cpu] [--pld-tokens 10]
      [--threads N] [--limit N] [--json OUT]

Reads the AR traces that `samd bench --save-traces T.jsonl` wrote (each prompt's ids and
our greedy output), then runs the peer on each prompt with the same token budget: greedy
autoregressive decoding, and greedy prompt lookup decoding, the peer's own speculative
method. It prints a markdown table per category and, with --bench-json (what `samd bench
--json` wrote in the same session), our methods' figures on the same prompts beside them.

- `--peer hf` (the default): HF transformers loads the same GGUF (`gguf_file=`,
  dequantised to float32; eager attention), on CUDA or the CPU. fp32 because in fp16
  HF's two methods already disagree on near-ties. Prompt lookup is
  `prompt_lookup_num_tokens`.
- `--peer llama.cpp`: llama-cpp-python runs the GGUF as it is, quantised, with its own
  kernels (on the CPU unless it was built for a GPU), `--threads` threads. Prompt lookup
  is its `LlamaPromptLookupDecoding` draft model.
- Same prompts: the trace's token ids, not a re-tokenised text.
- Same figure: tokens per second from the start of generation to its end, prefill
  included, for the peer and for us (`generated / time_s` of our records), so neither
  side's prefill is left out.
- A check for free: the peer's greedy output is compared with ours token for token. HF
  is a float32 forward of the same weights by independent code, so a difference is a
  near-tie in the logits or a bug; llama.cpp rounds the activations to 8 bits in its
  quantised products, so its text may part from ours where ours does not.
- Each method runs once untimed first (CUDA kernels load lazily; caches warm).

HF needs torch, transformers and gguf (`pip install gguf`; the GPU machine gets the wheel
carried, see scripts/gpu-bench.sh); llama.cpp needs `pip install llama-cpp-python`, which
builds llama.cpp from source. Writes JSON with every per-prompt figure to --json.
"""

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

STOP_ID = 2  # <|im_end|>, SmolLM2's end of turn, which `samd bench` stops on.


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, type=Path, help="the GGUF samd bench ran")
    p.add_argument("--traces", required=True, type=Path, help="samd bench --save-traces output")
    p.add_argument("--max-tokens", required=True, type=int, help="samd bench's --max-tokens")
    p.add_argument("--bench-json", type=Path, help="samd bench --json output, for our figures")
    p.add_argument("--peer", default="hf", choices=["hf", "llama.cpp"], help="which peer runs")
    p.add_argument("--device", default=None, help="hf: cuda or cpu (default: cuda if available)")
    p.add_argument("--threads", type=int, default=0, help="llama.cpp: threads (0: every core)")
    p.add_argument("--pld-tokens", type=int, default=10, help="prompt_lookup_num_tokens")
    p.add_argument("--limit", type=int, default=0, help="only the first N traces (0: all)")
    p.add_argument("--json", type=Path, help="write every per-prompt figure here")
    return p.parse_args()


def load_traces(path, limit):
    try:
        text = path.read_text()
    except OSError as e:
        sys.exit(f"{path}: cannot read the traces ({e.strerror})")
    traces = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            t = json.loads(line)
            prompt_len = int(t["prompt_len"])
            tokens = [int(x) for x in t["tokens"]]
            traces.append(
                {
                    "question_id": t["question_id"],
                    "category": t["category"],
                    "prompt": tokens[:prompt_len],
                    "ours": tokens[prompt_len:],
                }
            )
        except (KeyError, TypeError, ValueError) as e:
            sys.exit(f"{path}:{line_no}: not a samd bench trace ({e})")
    if not traces:
        sys.exit(f"{path}: no traces")
    return traces[:limit] if limit else traces


def hf_peer(path, device, pld_tokens):
    """HF transformers: `generate(prompt, max_tokens, pld)` -> (new ids, seconds)."""
    try:
        import torch
        from transformers import AutoModelForCausalLM
    except ImportError as e:
        sys.exit(f"--peer hf needs torch, transformers, gguf and accelerate ({e})")

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent),
        gguf_file=path.name,
        dtype=torch.float32,
        attn_implementation="eager",
    )
    model = model.to(device).eval()
    print(f"HF loaded {path.name} in {time.perf_counter() - started:.1f} s on {device}", file=sys.stderr)
    if device.startswith("cuda"):
        print(f"GPU: {torch.cuda.get_device_name()}", file=sys.stderr)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def generate(prompt, max_tokens, pld):
        ids = torch.tensor([prompt], dtype=torch.long, device=device)
        extra = {"prompt_lookup_num_tokens": pld_tokens} if pld else {}
        with torch.inference_mode():
            sync()
            started = time.perf_counter()
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_tokens,
                do_sample=False,
                eos_token_id=STOP_ID,
                pad_token_id=STOP_ID,
                **extra,
            )
            sync()
            seconds = time.perf_counter() - started
        return out[0, len(prompt):].tolist(), seconds

    return device, generate


def llamacpp_peer(path, threads, pld_tokens, context):
    """llama.cpp: `generate(prompt, max_tokens, pld)` -> (new ids, seconds)."""
    try:
        from llama_cpp import Llama
        from llama_cpp.llama_speculative import LlamaPromptLookupDecoding
    except ImportError as e:
        sys.exit(f"--peer llama.cpp needs llama-cpp-python ({e})")

    threads = threads or os.cpu_count() or 1
    common = {"model_path": str(path), "n_ctx": context, "n_threads": threads, "n_threads_batch": threads, "verbose": False}
    models = {
        False: Llama(**common),
        # `logits_all` as a draft model sets it: llama-cpp-python sizes its logits for a
        # batch, not the context, unless it is passed (prompts past 512 tokens fail).
        True: Llama(
            **common,
            logits_all=True,
            draft_model=LlamaPromptLookupDecoding(num_pred_tokens=pld_tokens),
        ),
    }
    print(f"llama.cpp loaded {path.name}, {threads} threads", file=sys.stderr)

    def generate(prompt, max_tokens, pld):
        llm = models[bool(pld)]
        # Forget the last prompt: llama-cpp-python reuses a cached prefix, which would
        # skip the prefill of a prompt run twice.
        llm.reset()
        new = []
        started = time.perf_counter()
        for token in llm.generate(prompt, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
            new.append(token)
            if token == STOP_ID or len(new) == max_tokens:
                break
        return new, time.perf_counter() - started

    return "cpu", generate


def our_records(path):
    """(question_id, method) -> end-to-end tok/s, from samd bench --json."""
    if path is None:
        return {}, []
    figures, methods = {}, []
    try:
        for r in json.loads(path.read_text())["records"]:
            if r["method"] not in methods:
                methods.append(r["method"])
            if r["time_s"] > 0:
                figures[(r["question_id"], r["method"])] = len(r["generated_ids"]) / r["time_s"]
    except OSError as e:
        sys.exit(f"{path}: cannot read the bench results ({e.strerror})")
    except (KeyError, TypeError, ValueError) as e:
        sys.exit(f"{path}: not what samd bench --json writes ({e})")
    return figures, methods


def main():
    args = parse_args()
    if not args.model.is_file():
        sys.exit(f"{args.model}: no such model file")
    traces = load_traces(args.traces, args.limit)
    longest = max(len(t["ours"]) for t in traces)
    if longest > args.max_tokens:
        sys.exit(
            f"{args.traces}: a trace has {longest} generated tokens but --max-tokens is "
            f"{args.max_tokens}; pass the --max-tokens samd bench ran with"
        )
    ours, our_methods = our_records(args.bench_json)
    if args.peer == "hf":
        device, generate = hf_peer(args.model, args.device, args.pld_tokens)
    else:
        # Room for the last draft past the budget, as prompt lookup evaluates it.
        context = max(len(t["prompt"]) for t in traces) + args.max_tokens + args.pld_tokens + 16
        device, generate = llamacpp_peer(args.model, args.threads, args.pld_tokens, context)
    methods = [f"{args.peer}-ar", f"{args.peer}-pld"]

    rows = []
    for name in methods:
        pld = name.endswith("-pld")
        generate(traces[0]["prompt"], min(args.max_tokens, 16), pld)
        for i, t in enumerate(traces, 1):
            new, seconds = generate(t["prompt"], args.max_tokens, pld)
            if new and new[-1] == STOP_ID:
                new.pop()
            same = new == t["ours"]
            rows.append(
                {
                    "question_id": t["question_id"],
                    "category": t["category"],
                    "method": name,
                    "generated": len(new),
                    "time_s": seconds,
                    "tok_s": len(new) / seconds if seconds > 0 else 0.0,
                    "same_as_samd_ar": same,
                }
            )
            print(
                f"[{name} {i}/{len(traces)}] {t['category']} q{t['question_id']}: "
                f"{len(new)} tokens in {seconds:.2f} s{'' if same else ' (differs from samd AR)'}",
                file=sys.stderr,
            )

    report(rows, methods, ours, our_methods, traces)
    if args.json:
        args.json.write_text(json.dumps({"peer": args.peer, "device": device, "records": rows}, indent=1))


def report(rows, peer_methods, ours, our_methods, traces):
    columns = peer_methods + our_methods
    by = defaultdict(list)
    for r in rows:
        by[(r["category"], r["method"])].append(r["tok_s"])
    for (qid, method), tok_s in ours.items():
        category = next((t["category"] for t in traces if t["question_id"] == qid), None)
        if category is not None:
            by[(category, method)].append(tok_s)
    categories = sorted({t["category"] for t in traces})
    print("Median end-to-end tokens/s per prompt (prefill included), same prompts and device:\n")
    print("| category | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for category in categories + ["overall"]:
        cells = []
        for m in columns:
            values = (
                [v for (c, mm), vs in by.items() if mm == m for v in vs]
                if category == "overall"
                else by.get((category, m), [])
            )
            cells.append(f"{statistics.median(values):.1f}" if values else "—")
        print(f"| {category} | " + " | ".join(cells) + " |")
    differ = sum(1 for r in rows if not r["same_as_samd_ar"])
    print(f"\nPeer outputs differing from samd's greedy AR: {differ} of {len(rows)}")


if __name__ == "__main__":
    main()
