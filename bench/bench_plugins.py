"""Each plugin on one GPU at a 1B LLaMA shape: tokens/s, MFU, peak memory against `--plan`.

    python bench/bench_plugins.py                        # CUDA; every plugin, ~5 min on one H100
    python bench/bench_plugins.py --plugins none gemini --steps 6 --layers 4   # quicker

Every plugin runs the real code path — `parallel_dims` -> `parallelize` (FSDP2 with a process
group of one where the plugin shards; CPU offload for zero2_cpu/gemini_auto) -> the trainer's
`accumulate` + AdamW — in its own subprocess (clean CUDA memory statistics), on random weights
and random tokens (the shape, not the values, sets speed and memory). It prints tok/s, the ratio
to plugin none measured in the same run, MFU (train/metrics.py's convention and peak table, the
trainer's: 6 x matmul weights incl. lm_head x tokens + 12 x layers x d_attn x causal pairs, over
the GPU's dense bf16 peak; "n/a" on a GPU the table does not know), torch.cuda.max_memory_allocated
and the `--plan` estimate for the same layout.
Needs a GPU; `--device cpu` (tiny shapes) only checks that every plugin's path runs before a
lent GPU's minutes are spent on it: its figures mean nothing (the CPU check of `--plan` is
tests/distributed/test_plan.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ("none", "zero2", "gemini", "zero2_cpu", "gemini_auto")


def shape(args: argparse.Namespace) -> dict:
    # TinyLlama-1.1B's shape with the LLaMA-2 vocabulary expanded like the 7B recipe's
    return dict(vocab_size=args.vocab, hidden_size=2048, intermediate_size=5632,
                num_hidden_layers=args.layers, num_attention_heads=32, num_key_value_heads=4,
                max_position_embeddings=args.seq, tie_word_embeddings=False)  # fmt: skip


def one(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from langgraft.distributed.dims import parallel_dims
    from langgraft.distributed.parallel import init_distributed
    from langgraft.distributed.parallelize import clip_grad_norm, parallelize
    from langgraft.distributed.plan import plan_memory
    from langgraft.train.data import Row
    from langgraft.train.loss import collate
    from langgraft.train.metrics import attention_dim, matmul_params, peak_flops, training_flops
    from langgraft.train.optim import build_optimizer
    from langgraft.train.recipe import recipe_from_dict
    from langgraft.train.step import accumulate

    plugin = args.one
    r = {"model": "m", "out": "o", "precision": "bf16", "plugin": plugin, "grad_checkpoint": True,
         "max_length": args.seq, "attn_implementation": "sdpa",
         "train": {"micro_batch_size": args.batch, "accumulation_steps": 1},
         "stages": [{"name": "a", "data": [{"path": "d"}], "steps": args.steps}]}  # fmt: skip
    recipe = recipe_from_dict(r)
    dims = parallel_dims(recipe, 1)
    cuda = args.device == "cuda"
    device = init_distributed(torch.device(args.device), single_process_group=dims.sharded)
    dims.build_mesh(device)
    cfg = LlamaConfig(**shape(args))
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    model.config.use_cache = False
    plan = plan_memory(recipe, dims, cfg)
    model = parallelize(model, dims, device, True, False, "bf16")
    opt, _ = build_optimizer(model, recipe.stages[0], args.steps)
    autocast = (lambda: torch.autocast(args.device, dtype=torch.bfloat16)) if not dims.fsdp else (
        lambda: torch.autocast(args.device, enabled=False))  # fmt: skip
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    rng = np.random.default_rng(0)

    def batch():
        ids = [rng.integers(3, args.vocab, args.seq).astype(np.int32) for _ in range(args.batch)]
        rows = [Row(x, x, np.array([args.seq]), "x") for x in ids]
        return [collate(rows, 0)]

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(args.steps):
        micro = batch()
        sync()
        t = time.perf_counter()
        accumulate(model, micro, device, autocast, None, None, dims)
        clip_grad_norm([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if step >= 2:  # warm-up: allocator, kernels
            times.append(time.perf_counter() - t)
    step_s = sum(times) / len(times)
    tok_s = args.batch * args.seq / step_s
    pairs = sum(mb.causal_pairs for mb in micro)  # every step has the same shape
    flops = training_flops(matmul_params(model), args.batch * args.seq, pairs,
                           cfg.num_hidden_layers, attention_dim(cfg))  # fmt: skip
    name = torch.cuda.get_device_name() if cuda else "cpu (smoke run: figures meaningless)"
    peak = peak_flops(device)
    return {"plugin": plugin, "tok_s": tok_s, "mfu": flops / step_s / peak if peak else None,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0,
            "plan_gib": plan.peak / 2**30, "device": name, "torch": torch.__version__}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--plugins", nargs="+", default=list(PLUGINS), choices=PLUGINS)
    ap.add_argument("--layers", type=int, default=22, help="decoder layers (22: 1.1B)")
    ap.add_argument("--vocab", type=int, default=69104, help="vocabulary (expanded LLaMA-2)")
    ap.add_argument("--seq", type=int, default=2048, help="tokens per row")
    ap.add_argument("--batch", type=int, default=4, help="rows per micro-batch")
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps (2 warm-up)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                    help="cpu: a smoke run of every plugin's code path at a tiny shape")  # fmt: skip
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_plugins: needs a CUDA GPU (the CPU check is tests/distributed/test_plan.py)",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.one:
        print("RESULT " + json.dumps(one(args)))
        return 0
    results = []
    for plugin in args.plugins:
        cmd = [sys.executable, __file__, "--one", plugin, "--layers", str(args.layers),
               "--vocab", str(args.vocab), "--seq", str(args.seq), "--batch", str(args.batch),
               "--steps", str(args.steps), "--device", args.device]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
        line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
        if p.returncode or line is None:
            print(f"{plugin}: failed\n{p.stderr[-2000:]}", file=sys.stderr)
            continue
        results.append(json.loads(line[7:]))
    base = next((r["tok_s"] for r in results if r["plugin"] == "none"), None)
    if results:
        print(f"{results[0]['device']}, torch {results[0]['torch']}, {args.layers} layers, "
              f"vocab {args.vocab}, {args.batch} x {args.seq} tokens, bf16, AC on")  # fmt: skip
    print(f"{'plugin':<12}{'tok/s':>10}{'vs none':>9}{'MFU':>7}{'peak GiB':>10}{'plan GiB':>10}")
    for r in results:
        ratio = f"{r['tok_s'] / base:.2f}" if base else "-"
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        print(f"{r['plugin']:<12}{r['tok_s']:>10,.0f}{ratio:>9}{mfu:>7}"
              f"{r['peak_gib']:>10.2f}{r['plan_gib']:>10.2f}")  # fmt: skip
    return 0 if len(results) == len(args.plugins) else 1


if __name__ == "__main__":
    sys.exit(main())
