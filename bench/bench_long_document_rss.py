"""Benchmark: peak memory of `prepare pretrain` and `tokenizer report` on ONE long document, at
several sizes; the ratio largest/smallest shows whether memory grows with the document (issue 15:
one 54 MB document peaked at 6.8 GB in prepare and 8.5 GB in the report). Not a test; prints a
table.

    python bench/bench_long_document_rss.py                        # 8, 32 and 54 MB, ~5 minutes
    python bench/bench_long_document_rss.py --sizes 2 16 --skip-report
    python bench/bench_long_document_rss.py --src /path/to/old/checkout   # the same, older code
    python bench/bench_long_document_rss.py --prepare-tokenizer ../shared/data/tokenizers/llama3/tokenizer.model

The document is 红楼梦 (../shared/data/corpus/zh/hongloumeng.txt) repeated, as the `text` of a
single jsonl row; the tokenizer is tok512 of stories260K for prepare (sentencepiece backend, checked
against tokenizer.json; --prepare-tokenizer another, e.g. Llama-3's byte-level file, which prepare
encodes with tokenizer.json) and LLaMA-2's for the report. The document's own text is in memory
whatever the code does (the jsonl line, then the decoded string: ~1.7 bytes per byte of
Chinese UTF-8), so "flat" means growth near that, not the tokenizer's ~100 bytes per character. Each run is a fresh child process whose
peak resident memory the kernel records (getrusage ru_maxrss, exact; both commands run in one
process here) is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
D = (ROOT / ".." / "shared" / "data").resolve()
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_prepare_rss import _tree_rss_kb  # noqa: E402


def peak_rss_mb(cmd: list[str], src: Path) -> tuple[float, float, float]:
    """(peak MB of the process tree sampled every 20 ms, the kernel's exact peak MB of the
    process itself (getrusage ru_maxrss via wait4), seconds)."""
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=src, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    peak = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, _tree_rss_kb(proc.pid))
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed ({proc.returncode}):\n{err[-2000:]}")
    return peak / 1024, usage.ru_maxrss / 1024, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[8, 32, 54], help="document MB")
    ap.add_argument("--src", type=Path, default=ROOT, help="checkout to run (default: this one)")
    ap.add_argument("--prepare-tokenizer", default=str(D / "models/stories260K/tok512.model"))
    ap.add_argument("--skip-report", action="store_true", help="measure prepare only")
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
            del text
            prep = [*py, "prepare", "pretrain", "--input", f"zh={doc}", "--tokenizer",
                    a.prepare_tokenizer, "--text-field", "text",
                    "--max-length", "512", "--no-progress", "--out", f"{tmp}/prep{mb:g}"]  # fmt: skip
            rep = [*py, "tokenizer", "report", "--tokenizer",
                   str(D / "tokenizers/llama2/tokenizer.model"), "--corpus", str(doc)]  # fmt: skip
            _, p_mb, p_s = peak_rss_mb(prep, a.src)
            _, r_mb, r_s = (0.0, 0.0, 0.0) if a.skip_report else peak_rss_mb(rep, a.src)
            rows.append((mb, p_mb, p_s, r_mb, r_s))
            print(f"  {mb:g} MB: prepare {p_mb:,.0f} MB peak ({p_s:.1f} s)"
                  + ("" if a.skip_report else f", report {r_mb:,.0f} MB ({r_s:.1f} s)"), flush=True)  # fmt: skip
            (Path(tmp) / f"doc{mb:g}.jsonl").unlink()
            shutil.rmtree(f"{tmp}/prep{mb:g}", ignore_errors=True)
    print(f"code: {a.src}; prepare tokenizer: {a.prepare_tokenizer}")
    print("| document MB | prepare peak MB | prepare s | report peak MB | report s |")
    print("|---:|---:|---:|---:|---:|")
    for mb, p_mb, p_s, r_mb, r_s in rows:
        rep_cols = "- | -" if a.skip_report else f"{r_mb:,.0f} | {r_s:.1f}"
        print(f"| {mb:g} | {p_mb:,.0f} | {p_s:.1f} | {rep_cols} |")
    (s, ps, _, rs, _), (big, pb, _, rb, _) = min(rows), max(rows)
    report = "" if a.skip_report else f", report {rb / rs:.2f}x"
    print(f"ratio {big:g} MB / {s:g} MB: prepare {pb / ps:.2f}x{report} (document {big / s:g}x); "
          f"prepare growth {(pb - ps) / (big - s):.1f} MB per MB of document")  # fmt: skip


if __name__ == "__main__":
    main()
