"""Benchmark: peak memory of `prepare pretrain` and `tokenizer report` on ONE long document, at two
sizes; the ratio large/small shows whether memory grows with the document (issue 15: one 54 MB
document peaked at 6.8 GB in prepare and 8.5 GB in the report). Not a test; prints a table.

    python bench/bench_long_document_rss.py                         # 2 MB and 16 MB, ~2 minutes
    python bench/bench_long_document_rss.py --src /path/to/old/checkout   # the same, older code

The document is 红楼梦 (../shared/data/corpus/zh/hongloumeng.txt) repeated, as the `text` of a
single jsonl row; the tokenizer is tok512 of stories260K for prepare (sentencepiece backend, checked
against tokenizer.json) and LLaMA-2's for the report. Each run is a fresh child process whose
whole process tree's resident memory is sampled every 20 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
D = (ROOT / ".." / "shared" / "data").resolve()
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_prepare_rss import _tree_rss_kb  # noqa: E402


def peak_rss_mb(cmd: list[str], src: Path) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=src, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss_kb(proc.pid))
        time.sleep(0.02)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed ({proc.returncode}):\n{err[-2000:]}")
    return peak / 1024, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=float, nargs=2, default=[2, 16], help="document sizes in MB")
    ap.add_argument("--src", type=Path, default=ROOT, help="checkout to run (default: this one)")
    a = ap.parse_args()
    novel = (D / "corpus/zh/hongloumeng.txt").read_text("utf-8")
    py = [sys.executable, "-m", "langgraft"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mb in a.sizes:
            n = int(mb * 1e6 / len(novel.encode()) * len(novel)) + 1
            text = (novel * (n // len(novel) + 1))[:n]
            doc = Path(tmp) / f"doc{mb:g}.jsonl"
            doc.write_text(json.dumps({"text": text}, ensure_ascii=False) + "\n", "utf-8")
            prep = [*py, "prepare", "pretrain", "--input", f"zh={doc}", "--tokenizer",
                    str(D / "models/stories260K/tok512.model"), "--text-field", "text",
                    "--max-length", "512", "--no-progress", "--out", f"{tmp}/prep{mb:g}"]  # fmt: skip
            rep = [*py, "tokenizer", "report", "--tokenizer",
                   str(D / "tokenizers/llama2/tokenizer.model"), "--corpus", str(doc)]  # fmt: skip
            p_mb, p_s = peak_rss_mb(prep, a.src)
            r_mb, r_s = peak_rss_mb(rep, a.src)
            rows.append((mb, p_mb, p_s, r_mb, r_s))
    print(f"code: {a.src}")
    print("| document MB | prepare peak MB | prepare s | report peak MB | report s |")
    print("|---:|---:|---:|---:|---:|")
    for mb, p_mb, p_s, r_mb, r_s in rows:
        print(f"| {mb:g} | {p_mb:,.0f} | {p_s:.1f} | {r_mb:,.0f} | {r_s:.1f} |")
    (s, ps, _, rs, _), (big, pb, _, rb, _) = rows
    print(f"ratio {big:g} MB / {s:g} MB: prepare {pb / ps:.2f}x, report {rb / rs:.2f}x "
          f"(document {big / s:g}x)")  # fmt: skip


if __name__ == "__main__":
    main()
