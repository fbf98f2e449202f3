"""What a user runs: the README's `langgraft eval mc --mode loglik` command against lm-eval-harness
0.4.13 on the same questions and prompts, whole-process wall time, alternated, and per-question
agreement; at `--max-length 4096` and at the model's own limit, on an idle machine and with one
CPU-bound job beside both.

    pip install -e '.[bench]'        # lm-eval==0.4.13 (optional; CI does not install it)
    .venv/bin/python bench/bench_eval_vs_lm_eval.py                          # every setting
    .venv/bin/python bench/bench_eval_vs_lm_eval.py --shots 0 --loads idle --max-lengths model

The model is the real stories260K imported with `langgraft model import-llama2c` (512 positions,
its 512-piece tokenizer: Chinese falls back to bytes, so prompts are long), or `--model DIR`. The
questions are the first `--subjects` CMMLU subjects (the shared data has CMMLU, not MMLU: 641
questions for the default four). Each tool runs as a user starts it, as a subprocess from a clean
environment: no OMP_NUM_THREADS (each picks its own threads: langgraft its default, lm-eval
torch's, every core), langgraft without --batch-size (its default), lm-eval with `--batch_size`
(`--lm-batch-size`, 16: its default of 1 would be slower). Progress bars stay on (off a terminal
langgraft prints a line per 30 s, as a user sees).

Prompts: lm-eval reads langgraft's own rendered prompts through a custom task (`dataset_path:
json`, `output_type: multiple_choice`, `target_delimiter: ""`, choices = the scored
continuations, `add_bos_token=True`, `max_length` = the same limit), so both score log
p(continuation | BOS + prompt) for the same strings. Where the limit is below a prompt, langgraft
drops few-shot examples until it fits and lm-eval cuts tokens off the left: the task is written
after langgraft's first run with, per question, the prompt at the number of shots langgraft used
(predictions.jsonl), so both see the same text; a question langgraft still had to cut in the
middle (`truncated`) is scored by lm-eval on a left-cut prompt instead, and counted apart.

Each round also times the import floor: `python -c "import os, torch; from transformers import
LlamaForCausalLM; os._exit(0)"`, what any tool that runs the model through transformers pays
besides its work (start, imports, the fastest exit). lm-eval's wall over it is the most such a tool can gain; where that
bound is below `--min-ratio`, the target is out of reach by construction (stories260K at 0 shots:
lm-eval's compute is ~3 s of its ~16 s).

`--loads busy` starts `python -c 'while True: pass'` beside both tools for the whole setting.
The 1-minute load average is printed with every run. The script prints each wall time, the ratio
of the medians and how many predictions agree, and exits 1 unless every comparable prediction
agrees and every ratio reaches `--min-ratio`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared" / "data").resolve()
CMMLU = SHARED / "eval" / "cmmlu"
STORIES = SHARED / "models" / "stories260K"
SUBJECTS = ["agronomy", "anatomy", "ancient_chinese", "arts"]

TASK_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{prompt}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
target_delimiter: ""
metric_list:
  - metric: acc
"""


FLOOR = "import os, torch; from transformers import LlamaForCausalLM; os._exit(0)"


def load1() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def user_env() -> dict[str, str]:
    """The caller's environment without thread settings (what a user's shell has)."""
    drop = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "RAYON_NUM_THREADS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return env


def import_stories(out: Path) -> None:
    cmd = [sys.executable, "-m", "langgraft", "model", "import-llama2c"]
    cmd += ["--checkpoint", str(STORIES / "stories260K.bin")]
    cmd += ["--tokenizer", str(STORIES / "tok512.model"), "--out", str(out)]
    subprocess.run(cmd, env=user_env(), check=True, capture_output=True, timeout=600)


def write_lm_eval_task(tmp: Path, subjects: list[str], shots: int, ours: Path, tag: str) -> str:
    """langgraft's prompts, at the shots langgraft used per question, as an lm-eval task."""
    from langgraft.eval import load_task
    from langgraft.eval.prompts import style_for, subject_prompts

    used = {}
    for line in (ours / "predictions.jsonl").read_text("utf-8").splitlines():
        r = json.loads(line)
        used[r["source"]] = r["shots"]
    task = load_task("cmmlu", CMMLU)
    style = style_for("cmmlu", "official", "zh")
    rows = []
    for name in subjects:
        s = task.subjects[name]
        k = min(shots, len(s.shots))
        for q, pp in zip(
            s.questions, subject_prompts(s, style, k, False, s.questions), strict=True
        ):
            rows.append(
                {
                    "prompt": pp.render(used[q.source]),
                    "choices": [style.answer(q, c, False) for c in range(4)],
                    "answer": q.answer,
                    "source": q.source,
                }
            )
    name = f"langgraft_cmmlu_{tag}"
    data = tmp / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    (tmp / f"{name}.yaml").write_text(TASK_YAML.format(name=name, data=data))
    return name


def run(cmd: list[str], log: Path) -> float:
    t0 = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.run(cmd, env=user_env(), stdout=f, stderr=subprocess.STDOUT, timeout=3600)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"FAIL: {' '.join(cmd[:4])} ... exited {proc.returncode}; see {log}")
    return seconds


def agreement(ours_dir: Path, lm_dir: Path) -> tuple[int, int, int, float]:
    """(agreeing, comparable, cut by langgraft, max |log p diff| over the comparable ones)."""
    ours = [json.loads(x) for x in (ours_dir / "predictions.jsonl").read_text().splitlines()]
    (samples,) = lm_dir.rglob("samples_*.jsonl")
    lm = {}
    for line in samples.read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        lm[d["doc"]["source"]] = [float(r[0]) for r in d["filtered_resps"]]
    same, n, cut, diff = 0, 0, 0, 0.0
    for r in ours:
        if r["truncated"]:
            cut += 1
            continue
        ll = lm[r["source"]]
        n += 1
        same += "ABCD"[max(range(4), key=ll.__getitem__)] == r["loglik"]["pred"]
        diff = max(diff, max(abs(a - b) for a, b in zip(ll, r["loglik"]["scores"], strict=True)))
    return same, n, cut, diff


def setting(args, tmp: Path, model: Path, shots: int, max_len: int | None, load: str) -> bool:
    """One (shots, limit, load) setting, both tools alternated; True when it passes."""
    tag = f"{shots}shot-{max_len or 'model'}-{load}"
    ours_out = tmp / f"ours-{tag}"
    ours = [sys.executable, "-m", "langgraft", "eval", "mc", "--task", "cmmlu"]
    ours += ["--data", str(CMMLU), "--model", str(model), "--mode", "loglik"]
    ours += ["--shots", str(shots), "--subjects", *args.subjects, "--out", str(ours_out)]
    ours += ["--overwrite"] + (["--max-length", str(max_len)] if max_len else [])
    model_args = f"pretrained={model},add_bos_token=True,dtype=float32"
    model_args += f",max_length={max_len}" if max_len else ""
    lm = [args.lm_eval, "--model", "hf", "--model_args", model_args, "--include_path", str(tmp)]
    lm += ["--device", "cpu", "--batch_size", str(args.lm_batch_size), "--log_samples"]
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load == "busy" else None
    # What any tool that runs the model through transformers pays besides its work: start
    # Python, import torch and the model's transformers class, and leave by the fastest exit
    # there is (os._exit skips the interpreter's teardown). lm-eval's wall over this is the most
    # any such tool can gain.
    floor = [sys.executable, "-c", FLOOR]
    times: dict[str, list[float]] = {"langgraft": [], "lm-eval": [], "import floor": []}
    task = None
    try:
        for rnd in range(args.rounds):
            order = ["langgraft", "lm-eval"] if rnd % 2 == 0 else ["lm-eval", "langgraft"]
            if task is None:  # the task needs langgraft's shots per question
                order = ["langgraft", "lm-eval"]
            order.append("import floor")
            for tool in order:
                if tool == "lm-eval":
                    out = tmp / f"lm-{tag}-{rnd}"
                    shutil.rmtree(out, ignore_errors=True)
                    task = task or write_lm_eval_task(tmp, args.subjects, shots, ours_out, tag)
                    cmd = [*lm, "--tasks", task, "--output_path", str(out)]
                elif tool == "import floor":
                    cmd = floor
                else:
                    cmd = ours
                before = load1()
                times[tool].append(run(cmd, tmp / f"{tool}-{tag}-{rnd}.log"))
                print(
                    f"{tag} round {rnd + 1}: {tool:12s} {times[tool][-1]:7.1f} s "
                    f"(load1 {before} -> {load1()})",
                    flush=True,
                )
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    same, n, cut, diff = agreement(ours_out, tmp / f"lm-{tag}-{args.rounds - 1}")
    ours_s, lm_s = statistics.median(times["langgraft"]), statistics.median(times["lm-eval"])
    ratio, floor_s = lm_s / ours_s, statistics.median(times["import floor"])
    print(
        f"RESULT {tag}: langgraft {ours_s:.1f} s, lm-eval {lm_s:.1f} s (medians of {args.rounds}) "
        f"-> {ratio:.2f}x; predictions agree {same}/{n} ({cut} cut mid-question by langgraft, "
        f"not compared); max |log-prob diff| {diff:.1e}; import floor {floor_s:.1f} s: no tool "
        f"that loads the model with transformers can beat lm-eval by more than "
        f"{lm_s / floor_s:.2f}x here",
        flush=True,
    )
    return same == n and ratio >= args.min_ratio


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--shots", type=int, nargs="+", default=[0, 5])
    p.add_argument("--max-lengths", nargs="+", default=["4096", "model"],
                   help="prompt limits: a number of tokens, or 'model' (its own limit)")  # fmt: skip
    p.add_argument("--loads", nargs="+", choices=["idle", "busy"], default=["idle", "busy"])
    p.add_argument("--rounds", type=int, default=2, help="alternated runs of each command")
    p.add_argument("--subjects", nargs="+", default=SUBJECTS)
    p.add_argument("--model", type=Path, help="HF model directory (default: stories260K)")
    p.add_argument("--lm-batch-size", type=int, default=16, help="lm-eval's --batch_size")
    p.add_argument("--min-ratio", type=float, default=5.0)
    p.add_argument("--keep", type=Path, help="keep the work directory here")
    args = p.parse_args()
    args.lm_eval = shutil.which("lm_eval") or str(Path(sys.executable).parent / "lm_eval")
    if not Path(args.lm_eval).exists():
        print(
            "lm-eval is not installed: pip install -e '.[bench]' (lm-eval==0.4.13)", file=sys.stderr
        )
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-lm-eval-")) if args.keep is None else args.keep
    tmp.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    model = args.model or tmp / "stories260K"
    if not (model / "config.json").is_file():
        import_stories(model)
    ok = True
    for load in args.loads:
        for shots in args.shots:
            for m in args.max_lengths:
                ok &= setting(args, tmp, model, shots, None if m == "model" else int(m), load)
    if args.keep is None:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
