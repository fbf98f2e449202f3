"""Training on a real pretrained model: `langgraft train` vs transformers.Trainer on SmolLM2-135M
(LLaMA architecture, 30 layers, tied embeddings, byte-level BPE of 49,152), tokens/s and peak RSS.

    PYTHONPATH=. OMP_NUM_THREADS=1 python bench/bench_train_smollm2.py             # ~5 min, 2 cores
    PYTHONPATH=. python bench/bench_train_smollm2.py --steps 4 --rounds 1          # a quick look

The model is imported from ../shared/data/models/smollm2-135m (GGUF Q4_1, dequantized to fp32 by
`langgraft model import-gguf`; or --model DIR, a HF directory) and the data is real English
(wikitext-2) and modern Chinese (LibreOffice help) text, packed by `langgraft prepare` to
--seq-len tokens with the model's own tokenizer. Both arms train the same rows in the same order
with the same hyper-parameters (bench_train.py's arms: AdamW, warm-up + cosine, clip 1.0, fp32,
SDPA attention, eager: no torch.compile), one process each with --threads torch threads:

- langgraft: `langgraft train` (per-document attention, chunked loss, loader thread, metrics);
- trainer: transformers.Trainer over the same rows, right-padded (plain causal attention).

tokens/s is wall-clock after --warmup steps (the first steps' allocations excluded); tokens per
CPU-second counts all threads of the arm's process; peak memory is the arm process's peak RSS
(`resource.getrusage`, from start to the end of training: model, optimizer, activations). Arms
alternate for --rounds rounds; each ratio is taken within a round. The machine's load average
is printed before and after every arm: on a shared machine wall-clock figures are lower bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_train  # noqa: E402  (the arms, shared with the stories260K benchmark)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared" / "data"
GGUF = SHARED / "models" / "smollm2-135m" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def sh(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "langgraft", *args], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=900)  # fmt: skip
    if p.returncode != 0:
        raise SystemExit(f"langgraft {args[0]} {args[1]} failed:\n{p.stderr[-3000:]}")


def prepare_inputs(work: Path, model: Path | None, seq_len: int) -> None:
    """work/model (the HF model) and work/data (packed rows), built once per work dir."""
    if not (work / "model" / "config.json").exists():
        if model is None:
            sh("model", "import-gguf", "--gguf", str(GGUF), "--out", str(work / "model"))
        else:
            (work / "model").symlink_to(model.resolve())
    if not (work / "data" / "manifest.json").exists():
        en = (SHARED / "corpus/en/wikitext-2-valid.txt").read_text(encoding="utf-8")
        (work / "en.txt").write_text(en[: en.index("\n", 20_000) + 1], encoding="utf-8")
        pages = (SHARED / "corpus/zh-modern/libreoffice-help-zh-cn.jsonl").read_text("utf-8")
        (work / "zh.jsonl").write_text("\n".join(pages.splitlines()[:12]) + "\n", "utf-8")
        sh("prepare", "pretrain", "--input", f"en={work / 'en.txt'}",
           f"zh-modern={work / 'zh.jsonl'}", "--text-field", "text", "--tokenizer",
           str(work / "model"), "--out", str(work / "data"), "--max-length", str(seq_len),
           "--num-bins", "1", "--no-progress")  # fmt: skip


def run_arm(name: str, work: Path, a: argparse.Namespace, k: int) -> dict:
    out = work / f"run-{name}-{k}"
    cmd = [sys.executable, __file__, "--arm", name, "--work", str(work), "--steps", str(a.steps),
           "--micro-batch", str(a.micro_batch), "--threads", str(a.threads), "--out", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(a.threads)}
    load_before = os.getloadavg()
    p = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise SystemExit(f"arm {name} failed:\n{p.stderr[-3000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res["tok_s"] = bench_train.steady(res["times"], res["tokens"], a.warmup)
    res["tok_cpu_s"] = bench_train.steady(res["cpu"], res["tokens"], a.warmup)
    res["load"] = (load_before, os.getloadavg())
    return res


def arm(name: str, a: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(a.threads)
    a.compile = False
    res = bench_train.ARMS[name](a.work, a.out, a)
    # ru_maxrss is KiB on Linux: the process's peak from start to the end of training
    res["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per arm run")
    ap.add_argument("--rounds", type=int, default=2, help="alternated rounds of both arms")
    ap.add_argument("--warmup", type=int, default=2, help="steps excluded from tokens/s")
    ap.add_argument("--micro-batch", type=int, default=2, help="rows per step")
    ap.add_argument("--seq-len", type=int, default=128, help="tokens per packed row")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per arm")
    ap.add_argument("--model", type=Path, default=None, help="a HF directory instead of the GGUF")
    ap.add_argument("--work", type=Path, default=None, help="scratch dir (default: a temp dir)")
    ap.add_argument("--arm", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.arm:
        print(json.dumps(arm(a.arm, a)))
        return
    if a.steps <= a.warmup:
        raise SystemExit(f"--steps {a.steps} must exceed --warmup {a.warmup}")
    work = a.work or Path(tempfile.mkdtemp(prefix="bench-smollm2-"))
    t0 = time.perf_counter()
    prepare_inputs(work, a.model, a.seq_len)
    print(f"inputs ready in {time.perf_counter() - t0:.0f} s: {work}", flush=True)
    arms = ["langgraft", "trainer"]
    results: dict[str, list[dict]] = {n: [] for n in arms}
    for k in range(a.rounds):
        for name in arms[k % 2 :] + arms[: k % 2]:
            r = run_arm(name, work, a, k)
            results[name].append(r)
            (b1, _, _), (e1, _, _) = r["load"]
            print(f"round {k + 1} {name:9s} {r['tok_s']:6.1f} tok/s wall-clock, "
                  f"{r['tok_cpu_s']:6.1f} tok per CPU-s, peak RSS {r['peak_rss'] / 2**20:,.0f} MiB "
                  f"(run {r['wall']:.0f} s; load 1-min {b1:.2f} -> {e1:.2f})", flush=True)  # fmt: skip
    seen = results["langgraft"][0]["tokens"]
    print(f"\nSmolLM2-135M, {a.seq_len}-token rows, micro-batch {a.micro_batch}, {a.steps} steps "
          f"({sum(seen[a.warmup :]):,} tokens timed after {a.warmup}), {a.threads} thread(s) "
          f"per arm, eager; median of {a.rounds} round(s):")  # fmt: skip
    for key, unit, fmt in (("tok_s", "tokens/s wall-clock", ".1f"),
                           ("tok_cpu_s", "tokens per CPU-second", ".1f"),
                           ("peak_rss", "peak RSS MiB", ",.0f")):  # fmt: skip
        scale = 2**20 if key == "peak_rss" else 1
        med = {n: statistics.median(r[key] for r in results[n]) / scale for n in arms}
        ratios = [x[key] / y[key] for x, y in zip(results["langgraft"], results["trainer"],
                                                  strict=True)]  # fmt: skip
        print(f"  {unit}: langgraft {med['langgraft']:{fmt}}, trainer {med['trainer']:{fmt}}; "
              f"langgraft / trainer {statistics.median(ratios):.2f}x "
              f"(per round {', '.join(f'{x:.2f}' for x in ratios)})")  # fmt: skip
    la, lt = results["langgraft"][0]["losses"], results["trainer"][0]["losses"]
    print(
        f"  first/last loss: langgraft {la[0]:.3f}/{la[-1]:.3f}, trainer {lt[0]:.3f}/{lt[-1]:.3f}"
        " (Trainer logs a mean over micro-batches; langgraft's is token-weighted)"
    )
    print(f"  load average (1, 5, 15 min) at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{os.cpu_count()} CPUs; total {time.perf_counter() - t0:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
