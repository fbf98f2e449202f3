"""Evaluate one model into an "eval directory", the layout `langgraft report` reads.

    EVAL_DIR/
      eval.json            {"name", "model"}: which model this directory describes
      text_results.json    `langgraft eval text` format: bits per character per corpus
      cmmlu/results.json   `langgraft eval mc` format (any */results.json is read)
      generations.jsonl    `langgraft generate --out` format: prompt, completion, settings

Every file is optional for the report; `langgraft eval text --out EVAL_DIR/text` and `langgraft
eval mc --out EVAL_DIR/cmmlu` write the same formats, so a user's own evaluations can be reported
without this module.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class EvalPlan:
    """What to measure on each model."""

    corpora: dict[str, list[str]] = field(default_factory=dict)
    """{corpus name: documents} for bits per character."""
    window: int = 256
    """Window length in tokens for the text loss (BOS included)."""
    mc_task: str | None = None
    """Multiple-choice task (e.g. cmmlu) scored in both modes, or None."""
    mc_data: Path | None = None
    """The task's release directory."""
    mc_limit: int | None = None
    """Questions per subject (None: all)."""
    prompts: list[str] = field(default_factory=list)
    """Prompts for greedy sample generations (the same for every model)."""
    max_new_tokens: int = 60
    """Tokens generated per prompt."""


def load_eval_model(model_dir: Path) -> tuple[Any, Any]:
    from langgraft.decoding import ModelOptions, load_model

    # auto: fp32 on CPU (the demo), bf16 on a GPU (a 7B baseline given to `langgraft report`)
    return load_model(ModelOptions(model=Path(model_dir), dtype="auto", device="auto"))


def text_losses(model: Any, tok: Any, plan: EvalPlan) -> list[dict[str, Any]]:
    from langgraft.eval.text import evaluate_text

    return [
        evaluate_text(model, tok, docs, name, plan.window, batch_size=8).to_dict()
        for name, docs in plan.corpora.items()
    ]


def generations(model: Any, tok: Any, plan: EvalPlan) -> list[dict[str, Any]]:
    from langgraft.decoding import (
        SamplingOptions,
        completion_text,
        default_stop_ids,
        generate_ids,
    )
    from langgraft.generate import encode_prompt

    opts = SamplingOptions(max_new_tokens=plan.max_new_tokens, greedy=True)
    stop = default_stop_ids(model, tok)
    out = []
    for prompt in plan.prompts:  # one at a time: no padding, so each is what `generate` gives
        ids = encode_prompt(tok, prompt, None)
        new, finish = generate_ids(model, tok, [ids], opts, stop)[0]
        out.append(
            {"prompt": prompt, "completion": completion_text(tok, ids, new),
             "completion_tokens": len(new), "finish_reason": finish,
             "settings": {**asdict(opts), "model": str(getattr(model, "name_or_path", ""))}}
        )  # fmt: skip
    return out


def evaluate_model(name: str, model_dir: Path, out: Path, plan: EvalPlan) -> Path:
    """Write EVAL_DIR `out` for the model at `model_dir` (replacing a previous one)."""
    from langgraft.config import to_dict
    from langgraft.fsutil import atomic_output_dir

    model, tok = load_eval_model(model_dir)
    texts = text_losses(model, tok, plan)
    gens = generations(model, tok, plan)
    mc = None
    if plan.mc_task is not None:
        from langgraft.eval import McOptions, evaluate_mc, load_task

        task = load_task(plan.mc_task, plan.mc_data)
        mc = evaluate_mc(model, tok, task, McOptions(limit=plan.mc_limit, mode="both"))
        mc = {"model": name, "model_path": str(Path(model_dir).resolve()), **mc}
    with atomic_output_dir(out, overwrite=True, inputs=[model_dir]) as tmp:
        (tmp / "eval.json").write_text(
            json.dumps({"name": name, "model": str(model_dir)}, indent=2) + "\n"
        )
        payload = {"model": name, "corpora": texts}
        (tmp / "text_results.json").write_text(
            json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        with open(tmp / "generations.jsonl", "w", encoding="utf-8") as f:
            for g in gens:
                f.write(json.dumps(g, ensure_ascii=False) + "\n")
        if mc is not None:
            from langgraft.eval.report import write_results

            (tmp / plan.mc_task).mkdir()
            write_results(tmp / plan.mc_task, mc)
        plan_record = {k: v for k, v in to_dict(plan).items() if k != "corpora"}
        plan_record["corpora"] = {k: sum(map(len, v)) for k, v in plan.corpora.items()}
        (tmp / "plan.json").write_text(json.dumps(plan_record, indent=2, ensure_ascii=False))
    return out
