"""`langgraft report RUN_DIR [--out DIR] [--baseline MODEL_OR_EVAL_DIR] [--eval NAME=DIR ...]`."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from langgraft.config import config_command, from_namespace
from langgraft.errors import UserError

if TYPE_CHECKING:
    from langgraft.report.inputs import RunData

log = logging.getLogger(__name__)


@dataclass
class ReportConfig:
    run: Path
    """A `langgraft train` run directory (metrics.jsonl, recipe.json, export/)."""
    out: Path | None = None
    """Where report.md, report.html and the PNGs go (default: RUN/report)."""
    baseline: Path | None = None
    """The model before training: an evaluation directory (text_results.json, */results.json,
    generations.jsonl), or a model directory, which is then evaluated with the run's last export
    on the held-out data the recipe names (eval.data)."""
    eval: list[str] = field(default_factory=list)
    """More evaluation directories as NAME=DIR (columns, in this order). The trained model's is
    RUN/eval when it exists."""
    tokenizer_report: Path | None = None
    """A `langgraft tokenizer report --out` directory, for the compression chart."""
    max_rows: int = 64
    """With a model --baseline: held-out rows per category decoded and scored."""
    overwrite: bool = False
    """Replace an existing --out that a previous langgraft report wrote (any other directory is
    refused)."""


def _pairs(specs: list[str]) -> dict[str, Path]:
    out = {}
    for s in specs:
        name, sep, path = s.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--eval {s!r}: expected NAME=DIR")
        out[name] = Path(path)
    return out


def heldout_texts(recipe: dict, tokenizer_dir: Path, max_rows: int) -> dict[str, list[str]]:
    """{category: documents} decoded from the held-out prepared datasets of the recipe."""
    from langgraft.tokenizer import load_tokenizer
    from langgraft.train.data import PreparedDataset

    tok = load_tokenizer(tokenizer_dir)
    special = {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}
    docs: dict[str, list[str]] = {}
    rows: dict[str, int] = {}  # per category, so a mixed held-out set scores every language
    for path in recipe.get("eval", {}).get("data", []):
        ds = PreparedDataset(path)
        for b in ds.buckets:
            for i in range(b.num_rows):
                row, start = b.row(i), 0
                if rows.get(row.category, 0) >= max_rows:
                    continue
                rows[row.category] = rows.get(row.category, 0) + 1
                for length in row.doc_lens.tolist():
                    ids = [
                        int(t) for t in row.input_ids[start : start + length] if t not in special
                    ]
                    start += length
                    if ids:
                        docs.setdefault(row.category, []).append(tok.decode(ids))
    if not docs:
        raise UserError("the recipe names no held-out data (eval.data); give --baseline EVAL_DIR")
    return docs


def last_export(run: Path) -> Path:
    exports = sorted((run / "export").glob("stage-*"), key=lambda p: int(p.name.split("-")[1]))
    if not exports:
        raise UserError(f"{run}/export: no stage exports to evaluate against the baseline")
    return exports[-1]


def run_report(args: argparse.Namespace) -> int:
    from langgraft.fsutil import atomic_output_dir, check_output
    from langgraft.report.inputs import load_run

    cfg = from_namespace(ReportConfig, args)
    run = load_run(cfg.run)  # a wrong RUN_DIR is refused before --out (RUN_DIR/report) exists
    out = cfg.out or cfg.run / "report"
    inputs = report_inputs(cfg)
    check_output(out, cfg.overwrite, inputs)  # before any model is evaluated
    with atomic_output_dir(out, cfg.overwrite, inputs) as tmp:
        _write(cfg, tmp, run)
    print(f"wrote {out}/report.md and {out}/report.html")
    return 0


def report_inputs(cfg: ReportConfig) -> list[Path | None]:
    """What the report reads. The run directory's own files, not the directory: the default
    --out is RUN/report, inside the run, and writing there touches none of them."""
    run = cfg.run
    read = [run / n for n in ("metrics.jsonl", "recipe.json", "summary.json", "export", "eval")]
    return [*read, cfg.baseline, *_pairs(cfg.eval).values(), cfg.tokenizer_report]


def _write(cfg: ReportConfig, out: Path, run: RunData) -> Path:
    from langgraft.report.build import ReportInputs, write_report
    from langgraft.report.evaluate import EvalPlan, evaluate_model

    evals: dict[str, Path] = {}
    baseline = final = None
    if cfg.baseline is not None:
        baseline = "baseline"
        if (cfg.baseline / "config.json").is_file():
            export = last_export(cfg.run)
            plan = EvalPlan(corpora=heldout_texts(run.recipe or {}, export, cfg.max_rows))
            evals["baseline"] = evaluate_model(
                "baseline", cfg.baseline, out / "eval/baseline", plan
            )
            evals["final"] = evaluate_model("final", export, out / "eval/final", plan)
            final = "final"
        else:
            evals["baseline"] = cfg.baseline
    if (cfg.run / "eval").is_dir() and final is None:
        evals["trained"], final = cfg.run / "eval", "trained"
    evals.update(_pairs(cfg.eval))
    inputs = ReportInputs(
        run=cfg.run, evals=evals, baseline=baseline, final=final,
        tokenizer_report=cfg.tokenizer_report,
    )  # fmt: skip
    return write_report(inputs, out)


def register(sub: argparse._SubParsersAction, name: str) -> None:
    config_command(
        sub, name, ReportConfig, run_report, positional=("run",),
        help="a report (markdown + self-contained HTML with plots) for a training run",
        description=(
            "Loss per stage and per category against tokens, learning rate, held-out bits per "
            "character before -> after, tokenizer compression, multiple-choice accuracy with "
            "standard errors, sample generations, the timeline, the resolved recipe and the data "
            "manifests, from a run directory and evaluation directories."
        ),
    )  # fmt: skip
