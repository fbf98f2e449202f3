"""`langgraft eval mc --mode loglik` against lm-eval-harness 0.4.13 on the same questions, prompts
and model: whole-command wall time, alternated, and per-question agreement.

    pip install -e '.[bench]'        # lm-eval==0.4.13 (optional; CI does not install it)
    /work/venv/bin/python bench/bench_eval_vs_lm_eval.py                       # 0- and 5-shot
    /work/venv/bin/python bench/bench_eval_vs_lm_eval.py --shots 0 --rounds 1  # quicker

The model is a stories260K-shaped LLaMA (dim 64, 5 layers, 8 heads, 4 KV heads, tied embeddings)
over the real LLaMA-2 vocabulary with a 4,096 context and random weights (seed 0), saved once as a
HF directory that both tools load. The questions are the first `--subjects` CMMLU subjects (the
shared data has CMMLU, not MMLU: 641 questions for the default four). lm-eval reads langgraft's own
rendered prompts through a custom task (`dataset_path: json`, `output_type: multiple_choice`,
`target_delimiter: ""`, choices = the scored continuations, `add_bos_token=True`), so both score
log p(continuation | BOS + prompt) for the same strings. Each round runs both commands as
subprocesses in alternating order with the same threads (`--threads`, default 1) and batch size;
the script prints each wall time, the ratio of the medians and how many predictions agree, and
exits 1 unless every prediction agrees and the ratio reaches `--min-ratio` (3x).
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


def make_model(out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from langgraft.tokenizer import write_hf_tokenizer
    from langgraft.tokenizer.spmodel import load_proto

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=64,
        intermediate_size=172,
        num_hidden_layers=5,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        initializer_range=0.2,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).eval().save_pretrained(out)
    write_hf_tokenizer(load_proto(SHARED / "tokenizers" / "llama2" / "tokenizer.model"), out)


def write_lm_eval_task(tmp: Path, subjects: list[str], shots: int) -> str:
    """langgraft's prompts as an lm-eval custom task; returns the task name."""
    from langgraft.eval import load_task
    from langgraft.eval.prompts import style_for, subject_prompts

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
                    "prompt": pp.render(k),
                    "choices": [style.answer(q, c, False) for c in range(4)],
                    "answer": q.answer,
                    "source": q.source,
                }
            )
    name = f"langgraft_cmmlu_{shots}shot"
    data = tmp / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    (tmp / f"{name}.yaml").write_text(TASK_YAML.format(name=name, data=data))
    return name


def run(cmd: list[str], env: dict[str, str], log: Path) -> float:
    t0 = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=3600)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"FAIL: {' '.join(cmd[:4])} ... exited {proc.returncode}; see {log}")
    return seconds


def agreement(ours_dir: Path, lm_dir: Path) -> tuple[int, int, float]:
    ours = [json.loads(x) for x in (ours_dir / "predictions.jsonl").read_text().splitlines()]
    (samples,) = lm_dir.rglob("samples_*.jsonl")
    lm = {}
    for line in samples.read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        lm[d["doc"]["source"]] = [float(r[0]) for r in d["filtered_resps"]]
    same, diff = 0, 0.0
    for r in ours:
        ll = lm[r["source"]]
        same += "ABCD"[max(range(4), key=ll.__getitem__)] == r["loglik"]["pred"]
        diff = max(diff, max(abs(a - b) for a, b in zip(ll, r["loglik"]["scores"], strict=True)))
    return same, len(ours), diff


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--shots", type=int, nargs="+", default=[0, 5])
    p.add_argument("--rounds", type=int, default=2, help="alternated runs of each command")
    p.add_argument("--subjects", nargs="+", default=SUBJECTS)
    p.add_argument("--batch-size", type=int, default=16, help="both tools")
    p.add_argument("--threads", type=int, default=1, help="OMP/torch threads, both tools")
    p.add_argument("--min-ratio", type=float, default=3.0)
    p.add_argument("--keep", type=Path, help="keep the work directory here")
    args = p.parse_args()
    lm_eval = shutil.which("lm_eval") or str(Path(sys.executable).parent / "lm_eval")
    if not Path(lm_eval).exists():
        print(
            "lm-eval is not installed: pip install -e '.[bench]' (lm-eval==0.4.13)", file=sys.stderr
        )
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="bench-lm-eval-")) if args.keep is None else args.keep
    tmp.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": str(args.threads),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TQDM_DISABLE": "1",
    }
    model = tmp / "model"
    if not (model / "config.json").is_file():
        make_model(model)
    failed = False
    for shots in args.shots:
        task = write_lm_eval_task(tmp, args.subjects, shots)
        ours_cmd = [sys.executable, "-m", "langgraft", "eval", "mc", "--task", "cmmlu"]
        ours_cmd += ["--data", str(CMMLU), "--model", str(model), "--mode", "loglik"]
        ours_cmd += ["--shots", str(shots), "--batch-size", str(args.batch_size), "--overwrite"]
        ours_cmd += ["--subjects", *args.subjects, "--out", str(tmp / f"ours-{shots}")]
        lm_cmd = [lm_eval, "--model", "hf", "--model_args"]
        lm_cmd += [f"pretrained={model},add_bos_token=True,dtype=float32", "--tasks", task]
        lm_cmd += ["--include_path", str(tmp), "--device", "cpu", "--batch_size"]
        lm_cmd += [str(args.batch_size), "--log_samples"]
        times: dict[str, list[float]] = {"langgraft": [], "lm-eval": []}
        for rnd in range(args.rounds):
            order = ["langgraft", "lm-eval"] if rnd % 2 == 0 else ["lm-eval", "langgraft"]
            for tool in order:
                if tool == "lm-eval":
                    out = tmp / f"lm-{shots}-{rnd}"
                    shutil.rmtree(out, ignore_errors=True)
                    cmd = [*lm_cmd, "--output_path", str(out)]
                else:
                    cmd = ours_cmd
                times[tool].append(run(cmd, env, tmp / f"{tool}-{shots}-{rnd}.log"))
                print(
                    f"{shots}-shot round {rnd + 1}: {tool:9s} {times[tool][-1]:7.1f} s", flush=True
                )
        same, n, diff = agreement(tmp / f"ours-{shots}", tmp / f"lm-{shots}-{args.rounds - 1}")
        ours_s, lm_s = statistics.median(times["langgraft"]), statistics.median(times["lm-eval"])
        ratio = lm_s / ours_s
        print(
            f"{shots}-shot, {n} questions: langgraft {ours_s:.1f} s, lm-eval {lm_s:.1f} s "
            f"(medians of {args.rounds}) -> {ratio:.2f}x; predictions agree {same}/{n}; "
            f"max |log-prob diff| {diff:.1e}"
        )
        if same != n or ratio < args.min_ratio:
            failed = True
            print(
                f"FAIL: {shots}-shot ratio {ratio:.2f}x (target {args.min_ratio}x), agreement {same}/{n}",
                file=sys.stderr,
            )
    if args.keep is None:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
