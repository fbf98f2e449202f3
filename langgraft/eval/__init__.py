"""Stage 5: evaluation. Multiple-choice benchmarks (MMLU, CMMLU, C-Eval, AGIEval, GAOKAO-Bench)
through small task adapters and one scorer, and text loss comparable across tokenizers.

    langgraft eval mc --task cmmlu --data ../shared/data/eval/cmmlu --model DIR --out OUT --limit 2
    langgraft eval mc --task agieval --data ../shared/data/eval/agieval --model DIR --out OUT \
        --prompt colossal          # 5-shot, combined metric (first-token OR greedy exact match)
    langgraft eval mc --compare base/cmmlu grafted/cmmlu     # forgetting: delta vs 2x SE
    langgraft eval text --model DIR --data ../shared/data/corpus/zh/hongloumeng.txt --out OUT

From Python (e.g. a periodic probe inside training):

    from langgraft.eval import McOptions, evaluate_mc, evaluate_text, load_task, probe_mc
    accs = probe_mc(model, tokenizer, load_task("cmmlu", data_dir), limit=5)
"""

from __future__ import annotations

from typing import Any

from langgraft.eval.data import MCQuestion, Subject, Task
from langgraft.eval.mc import McOptions, evaluate_mc
from langgraft.eval.tasks import load_task
from langgraft.eval.text import TextLoss, evaluate_text, read_corpus


def probe_mc(
    model: Any,
    tokenizer: Any,
    task: Task,
    limit: int | None = 5,
    shots: int | None = None,
    mode: str = "first-token",
    subjects: list[str] | None = None,
) -> dict[str, float]:
    """Quick accuracy probe: `{metric: micro acc, metric/category: acc}` on the first `limit`
    questions of each subject. Leaves the model in eval mode; the caller restores train mode."""
    result = evaluate_mc(
        model,
        tokenizer,
        task,
        McOptions(limit=limit, shots=shots, mode=mode, subjects=subjects),  # type: ignore[arg-type]
    )
    out = {m: result["overall"][m]["acc"] for m in result["metrics"]}
    for cat, e in result["categories"].items():
        out.update({f"{m}/{cat}": e[m]["acc"] for m in result["metrics"]})
    return out


__all__ = [
    "MCQuestion",
    "McOptions",
    "Subject",
    "Task",
    "TextLoss",
    "evaluate_mc",
    "evaluate_text",
    "load_task",
    "probe_mc",
    "read_corpus",
]
