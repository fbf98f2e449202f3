"""Where a training step's time goes at stories260K's size: torch.profiler's self CPU time of
one forward + backward of the real stories260K (llama2.c, imported), split into attention
kernels, matmuls and the rest, plus a side-by-side of SDPA's CPU backends.

    PYTHONPATH=. OMP_NUM_THREADS=1 python bench/bench_step_profile.py     # ~1 min, 1 thread

Why it exists: issue 20 item 7 asks langgraft's step to be 1.2x (eager) / 1.5x (compiled)
transformers.Trainer's on this model. Both run the same HF forward, so the ratio is bounded by
the share of the step that is *not* those shared kernels; this prints that share. The model and
rows are those of bench/bench_train.py (block 256, micro-batch 8, fp32, SDPA); rows are random
ids (the kernels' cost does not depend on the ids).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared" / "data"


def import_model(out: Path) -> None:
    d = SHARED / "models" / "stories260K"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "langgraft", "model", "import-llama2c",
                    "--checkpoint", str(d / "stories260K.bin"), "--tokenizer", str(d / "tok512.model"),
                    "--out", str(out)], check=True, env=env, capture_output=True, timeout=300)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=3, help="profiled steps (after 3 warm-up steps)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--block", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        import_model(Path(tmp) / "model")
        model = AutoModelForCausalLM.from_pretrained(
            Path(tmp) / "model", attn_implementation="sdpa"
        )
    model.train()
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.block))

    def step() -> None:
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1]
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)).backward()

    for _ in range(3):
        step()
    t = time.perf_counter()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    wall = (time.perf_counter() - t) / args.steps * 1000
    shares = {"attention (SDPA fwd+bwd)": 0.0, "matmul (mm/bmm/addmm)": 0.0, "everything else": 0.0}
    for ev in prof.key_averages():
        us = ev.self_cpu_time_total
        if "scaled_dot_product" in ev.key:
            shares["attention (SDPA fwd+bwd)"] += us
        elif ev.key in ("aten::mm", "aten::bmm", "aten::addmm"):
            shares["matmul (mm/bmm/addmm)"] += us
        else:
            shares["everything else"] += us
    total = sum(shares.values())
    print(f"step (profiled) {wall:.0f} ms; threads {torch.get_num_threads()}; "
          f"load {open('/proc/loadavg').read().split()[0]}")  # fmt: skip
    for k, v in shares.items():
        print(f"  {k:28s} {v / total:6.1%}")
    other = shares["everything else"] / total
    # A trainer that keeps the model's attention and matmul kernels can at best remove all the
    # rest (it cannot: rotary, norms and SiLU are the model's own work, fused at best by compile).
    print(f"upper bound of a step's speed-up over this one while it runs the same attention and "
          f"matmul kernels: {1 / (1 - other):.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
