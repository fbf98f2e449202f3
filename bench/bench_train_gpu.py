"""GPU throughput check (issue 11 goal 3): MFU of langgraft's training step, bf16, one GPU, a
1.5B LLaMA shape at sequence 4,096 with per-document attention, torch.compile per decoder layer.

    PYTHONPATH=. python bench/bench_train_gpu.py                      # ~3-4 min on one H200
    PYTHONPATH=. python bench/bench_train_gpu.py --attn flex_attention,sdpa --steps 8

It runs the trainer's own pieces, not a copy: `parallelize` (compile per layer), `Collator` +
`accumulate` (document masks, chunked loss), clipping and `optimizer_step`. The data are random
tokens packed into rows of 4,096 with documents of Zipf-like lengths (mean ~900 tokens), so
attention is block-causal as in real packed pretraining. MFU is train/metrics.py's, the trainer's
(convention and peak table; printed below the figures): 6 x matmul weights (lm_head over the
69,104 vocabulary included) x tokens + 12 x layers x d_attn x causal pairs at the real
per-document lengths, over the dense bf16 peak ("n/a" on a GPU the table does not know). Kernels that are not installed (flash_attn) are reported as missing.

Device time: ~1 min per compiled kernel variant (compile + 9 steps) plus start-up, ~3-4 min for
the default three (flash is skipped in seconds when flash_attn is absent). Run it in the
environment bench/gpu_check.sh sets up (transformers 5.24 from .whl/ on PYTHONPATH), e.g.
`timeout 280 python bench/bench_train_gpu.py | tee $OUT/train_mfu.log`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import time

import numpy as np
import torch

SHAPES = {  # LLaMA-2-style, vocabulary expanded as Colossal-LLaMA-2's (69,104)
    "1.5b": dict(hidden_size=2048, intermediate_size=5504, num_hidden_layers=24,
                 num_attention_heads=16, num_key_value_heads=16),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,  # CPU smoke test
                 num_attention_heads=4, num_key_value_heads=4),
    "3b": dict(hidden_size=2560, intermediate_size=6912, num_hidden_layers=32,
               num_attention_heads=20, num_key_value_heads=20),
}  # fmt: skip


def rows(n: int, seq: int, vocab: int, rng: np.random.Generator) -> list:
    from langgraft.train.data import Row

    out = []
    for _ in range(n):
        lens, left = [], seq
        while left > 0:
            d = int(min(left, max(16, rng.pareto(1.2) * 300)))
            lens.append(d)
            left -= d
        ids = rng.integers(3, vocab, seq).astype(np.int32)
        labels = ids.copy()
        labels[np.cumsum([0] + lens[:-1])] = -100
        out.append(Row(ids, labels, np.array(lens, np.int32), "c"))
    return out


def run(attn: str, a: argparse.Namespace) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    from langgraft.distributed.dims import ParallelDims
    from langgraft.distributed.parallelize import parallelize
    from langgraft.train.attention import check_implementation
    from langgraft.train.loss import Collator
    from langgraft.train.metrics import (
        attention_dim,
        matmul_params,
        peak_flops,
        training_flops,
    )
    from langgraft.train.optim import build_optimizer, optimizer_step
    from langgraft.train.recipe import StageConfig
    from langgraft.train.step import accumulate, step_totals

    device = torch.device(a.device)
    check_implementation(attn, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    cfg = LlamaConfig(vocab_size=a.vocab, max_position_embeddings=a.seq, tie_word_embeddings=False,
                      attn_implementation=attn, **SHAPES[a.shape])  # fmt: skip
    torch.manual_seed(0)
    with device:
        model = LlamaForCausalLM(cfg).float()
    model.config.use_cache = False
    dims = ParallelDims("none", 1)
    model = parallelize(model, dims, device, grad_checkpoint=a.grad_checkpoint,
                        compile_layers=not a.no_compile, precision="bf16")  # fmt: skip
    model.train()
    stage = StageConfig(lr=1e-4, micro_batch_size=a.micro_batch, accumulation_steps=a.accum)
    opt, sched = build_optimizer(model, stage, a.steps + a.warmup)
    collate = Collator(0, attn, torch.bfloat16)
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731
    rng = np.random.default_rng(0)
    trainable = [p for p in model.parameters() if p.requires_grad]
    weights, L, dattn = matmul_params(model), cfg.num_hidden_layers, attention_dim(cfg)
    times, flops, tokens, losses = [], 0.0, 0, []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(a.warmup + a.steps):
        batch = rows(a.micro_batch * a.accum, a.seq, a.vocab, rng)
        micro = [collate(batch[i : i + a.micro_batch])
                 for i in range(0, len(batch), a.micro_batch)]  # fmt: skip
        sync()
        t0 = time.perf_counter()
        loss, _, _, _ = step_totals(accumulate(model, micro, device, autocast, dims=dims),
                                    device, dims, categories=False)
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer_step(opt, sched)
        sync()
        dt = time.perf_counter() - t0
        losses.append(loss)
        if step >= a.warmup:
            times.append(dt)
            n = sum(mb.num_tokens for mb in micro)
            tokens += n
            flops += training_flops(weights, n, sum(mb.causal_pairs for mb in micro), L, dattn)
        print(f"  {attn} step {step + 1}: {dt:.2f} s, loss {loss:.3f}", flush=True)
    secs = sum(times)
    peak = peak_flops(device)
    return {
        "attn": attn, "shape": a.shape, "params": sum(p.numel() for p in model.parameters()),
        "seq": a.seq, "micro_batch": a.micro_batch, "accum": a.accum,
        "compile": not a.no_compile, "tok_s": tokens / secs, "tflops_s": flops / secs / 1e12,
        "mfu": flops / secs / peak if peak else None, "peak_tflops": peak / 1e12 if peak else None,
        "max_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0,
        "loss_first_last": [losses[0], losses[-1]],
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--attn",
        default="flex_attention,flash_attention_2,sdpa",
        help="comma-separated attention implementations to measure, in order",
    )
    ap.add_argument("--shape", default="1.5b", choices=sorted(SHAPES), help="model shape")
    ap.add_argument("--seq", type=int, default=4096, help="tokens per row")
    ap.add_argument("--vocab", type=int, default=69104, help="vocabulary (expanded LLaMA-2)")
    ap.add_argument("--micro-batch", type=int, default=4, help="rows per micro-batch")
    ap.add_argument("--accum", type=int, default=2, help="micro-batches per optimizer step")
    ap.add_argument("--steps", type=int, default=6, help="measured optimizer steps")
    ap.add_argument("--warmup", type=int, default=3, help="unmeasured steps (compile)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile per layer")
    ap.add_argument("--device", default="cuda", help="cuda; cpu only for a smoke test")
    ap.add_argument("--grad-checkpoint", action="store_true", help="activation checkpointing")
    a = ap.parse_args()
    name = torch.cuda.get_device_name() if a.device == "cuda" else "cpu"
    print(name, "torch", torch.__version__, flush=True)
    results = []
    for attn in a.attn.split(","):
        if attn == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
            print(f"{attn}: flash_attn is not installed on this machine; not measured")
            continue
        try:
            results.append(run(attn, a))
            print(json.dumps(results[-1]), flush=True)
        except Exception as e:  # report and go on to the next kernel
            print(f"{attn}: failed: {type(e).__name__}: {e}", flush=True)
        with contextlib.suppress(Exception):
            torch._dynamo.reset()
            torch.cuda.empty_cache()
    print("\nattn               tok/s   TFLOP/s    MFU   mem GB")
    for r in results:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        print(f"{r['attn']:17s} {r['tok_s']:8,.0f} {r['tflops_s']:8.1f} {mfu:>7s} "
              f"{r['max_memory_gb']:7.1f}")  # fmt: skip
    print(
        "MFU = (6 x matmul weights incl. lm_head x tokens + 12 x layers x d_attn x causal pairs "
        "per document) / s / dense bf16 peak"
    )


if __name__ == "__main__":
    main()
