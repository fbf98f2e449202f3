"""Shared-prefix scoring vs one forward pass per question, on the real CMMLU.

    /work/venv/bin/python bench/bench_eval_prefix.py                 # ~1 min on one CPU core
    /work/venv/bin/python bench/bench_eval_prefix.py --limit 20 --model runs/x/hf --device cuda

Both paths run in this process on the same questions (the first `--limit` test questions of each
CMMLU subject, 5-shot, first-token mode); the script prints questions/s for each and the ratio,
and fails unless the predictions are identical and the speed-up reaches `--min-speedup` (3x).
Without `--model`, a tiny random LLaMA (`--shape llama`: dim 256, 4 layers, head_dim 64; or
`--shape stories260k`) over the real LLaMA-2 tokenizer is used: the prompts, token counts and
prefix lengths are real, only the weights are random.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared" / "data").resolve()


# Two tiny shapes. "llama": head_dim 64 as in every LLaMA-2 size, so attention is a small share of
# the work, as in the real models. "stories260k": dim 64 with 8 heads (head_dim 8), where attention
# over the ~570-token prompts dominates and caps what skipping the prefix can save (see docs/eval.md).
SHAPES = {
    "llama": dict(
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
    ),
    # LLaMA-3.2-1B-like proportions, for GPU runs (bench/gpu_check.sh).
    "llama-1b": dict(
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=16,
        num_attention_heads=16,
        num_key_value_heads=16,
    ),
    "stories260k": dict(
        hidden_size=64,
        intermediate_size=172,
        num_hidden_layers=5,
        num_attention_heads=8,
        num_key_value_heads=4,
    ),
}


def tiny_model(vocab_size: int, shape: str = "llama"):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        max_position_embeddings=2048,
        initializer_range=0.2,
        bos_token_id=1,
        eos_token_id=2,
        **SHAPES[shape],
    )
    return LlamaForCausalLM(config).eval()


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, default=SHARED / "eval" / "cmmlu")
    p.add_argument("--model", type=Path, help="HF model directory (default: tiny random LLaMA)")
    p.add_argument("--shape", choices=sorted(SHAPES), default="llama", help="tiny model shape")
    p.add_argument("--device", default="cpu")
    # Many questions per subject, as in a real run (CMMLU averages 173 per subject): the prefix is
    # computed once per subject, so a handful per subject would mostly time the prefix.
    p.add_argument("--limit", type=int, default=30, help="test questions per subject")
    p.add_argument("--subjects", type=int, default=8, help="first N subjects")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (both paths)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--min-speedup", type=float, default=3.0)
    args = p.parse_args()

    import torch

    from langgraft.eval import McOptions, evaluate_mc, load_task
    from langgraft.tokenizer import load_tokenizer

    torch.set_grad_enabled(False)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    task = load_task("cmmlu", args.data)
    subjects = list(task.subjects)[: args.subjects]
    if args.model:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(args.model), local_files_only=True)
        tok = load_tokenizer(args.model)
    else:
        tok = load_tokenizer(SHARED / "tokenizers" / "llama2" / "tokenizer.model")
        model = tiny_model(len(tok), args.shape)
    model = model.to(args.device).eval()
    opts = dict(mode="first-token", limit=args.limit, subjects=subjects, batch_size=args.batch_size)
    # Warm-up (allocator, kernels), not timed.
    evaluate_mc(model, tok, task, McOptions(mode="first-token", limit=2, subjects=subjects[:1]))

    runs = {}
    for name, shared in (("shared-prefix", True), ("naive", False)):
        t0 = time.perf_counter()
        runs[name] = evaluate_mc(model, tok, task, McOptions(**opts, shared_prefix=shared))
        runs[name]["seconds"] = time.perf_counter() - t0
    shared, naive = runs["shared-prefix"], runs["naive"]
    n = len(shared["records"])
    tokens = sum(r["tokens"] for r in shared["records"]) / n
    for name, r in runs.items():
        print(
            f"{name:14s} {n} questions in {r['seconds']:7.2f} s = {n / r['seconds']:8.1f} questions/s"
        )
    speedup = naive["seconds"] / shared["seconds"]
    same = [
        a["first_token"]["pred"] == b["first_token"]["pred"]
        for a, b in zip(shared["records"], naive["records"], strict=True)
    ]
    diff = max(
        abs(x - y)
        for a, b in zip(shared["records"], naive["records"], strict=True)
        for x, y in zip(a["first_token"]["scores"], b["first_token"]["scores"], strict=True)
    )
    print(
        f"prompt length {tokens:.0f} tokens on average; {len(subjects)} subjects, 5-shot, batch {args.batch_size}"
    )
    print(
        f"speed-up {speedup:.2f}x (target >= {args.min_speedup}x); identical predictions: {sum(same)}/{n}; max |score diff| {diff:.2e}"
    )
    print(
        f"accuracy {100 * shared['overall']['first_token_acc']['acc']:.2f} (shared) vs {100 * naive['overall']['first_token_acc']['acc']:.2f} (naive)"
    )
    if not all(same):
        print("FAIL: predictions differ", file=sys.stderr)
        return 1
    if speedup < args.min_speedup:
        print(f"FAIL: speed-up {speedup:.2f}x below {args.min_speedup}x", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
