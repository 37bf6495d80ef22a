#!/usr/bin/env python3
"""The peer, side by side: HF transformers on the model, prompts and device `samd bench` used.

Usage:
  python3 scripts/hf-peer.py --model M.gguf --traces T.jsonl --max-tokens N
      [--bench-json B.json] [--device cuda|cpu] [--pld-tokens 10] [--limit N] [--json OUT]

Reads the AR traces that `samd bench --save-traces T.jsonl` wrote (each prompt's ids and
our greedy output), then runs HF transformers on each prompt with the same token budget:
greedy autoregressive decoding, and greedy prompt lookup decoding
(`prompt_lookup_num_tokens`), HF's own speculative method. It prints a markdown table per
category and, with --bench-json (what `samd bench --json` wrote in the same session), our
methods' figures on the same prompts beside them.

- Same model: HF loads the same GGUF (`gguf_file=`, dequantised to float32; eager
  attention). fp32 because in fp16 HF's two methods already disagree on near-ties.
- Same prompts: the trace's token ids, not a re-tokenised text.
- Same figure: tokens per second from the start of generation to its end, prefill
  included, for HF and for us (`generated / time_s` of our records), so neither side's
  prefill is left out.
- A check for free: HF's greedy output is compared with ours token for token. Both are
  float32 forwards of one model by independent code, so a difference is a near-tie in the
  logits or a bug; the count is printed and saved.
- Each method runs once untimed first (CUDA kernels load lazily).

Needs torch, transformers and gguf (`pip install gguf`; the GPU machine gets the wheel
carried, see scripts/gpu-bench.sh). Writes JSON with every per-prompt figure to --json.
"""

import argparse
import json
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
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
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


def load_model(path, device):
    import torch
    from transformers import AutoModelForCausalLM

    if not path.is_file():
        sys.exit(f"{path}: no such model file")
    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent),
        gguf_file=path.name,
        dtype=torch.float32,
        attn_implementation="eager",
    )
    model = model.to(device).eval()
    print(f"HF loaded {path.name} in {time.perf_counter() - started:.1f} s on {device}", file=sys.stderr)
    return model


def generate(model, prompt, max_tokens, pld_tokens, device):
    """One greedy generation; returns (new ids without the stop id, seconds)."""
    import torch

    ids = torch.tensor([prompt], dtype=torch.long, device=device)
    extra = {"prompt_lookup_num_tokens": pld_tokens} if pld_tokens else {}
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
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
    new = out[0, len(prompt):].tolist()
    if new and new[-1] == STOP_ID:
        new.pop()
    return new, seconds


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
    try:
        import torch
        import transformers  # noqa: F401 (checked here, used in load_model)
    except ImportError as e:
        sys.exit(f"hf-peer needs torch, transformers, gguf and accelerate ({e})")

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    traces = load_traces(args.traces, args.limit)
    longest = max(len(t["ours"]) for t in traces)
    if longest > args.max_tokens:
        sys.exit(
            f"{args.traces}: a trace has {longest} generated tokens but --max-tokens is "
            f"{args.max_tokens}; pass the --max-tokens samd bench ran with"
        )
    ours, our_methods = our_records(args.bench_json)
    model = load_model(args.model, device)
    if device.startswith("cuda"):
        print(f"GPU: {torch.cuda.get_device_name()}", file=sys.stderr)
    methods = {"hf-ar": 0, "hf-pld": args.pld_tokens}

    rows = []
    for name, pld in methods.items():
        generate(model, traces[0]["prompt"], min(args.max_tokens, 16), pld, device)
        for i, t in enumerate(traces, 1):
            new, seconds = generate(model, t["prompt"], args.max_tokens, pld, device)
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

    report(rows, ours, our_methods, traces)
    if args.json:
        args.json.write_text(json.dumps({"device": device, "records": rows}, indent=1))


def report(rows, ours, our_methods, traces):
    columns = ["hf-ar", "hf-pld"] + our_methods
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
    print(f"\nHF outputs differing from samd's greedy AR: {differ} of {len(rows)}")


if __name__ == "__main__":
    main()
