"""Read what a report is made of: a training run directory and evaluation directories.

A run directory is what `langgraft train` writes: metrics.jsonl (required), recipe.json,
summary.json, export/. An evaluation directory is the layout of `langgraft.report.evaluate`
(text_results.json, <task>/results.json, generations.jsonl), each file optional; a
text_results.json or results.json one directory down is found too (`eval text --out DIR/text`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langgraft.errors import UserError
from langgraft.jsonio import iter_jsonl, read_json


@dataclass
class RunData:
    path: Path
    metrics: list[dict[str, Any]]
    """Training rows (they have `loss`), in step order."""
    evals: list[dict[str, Any]]
    """Held-out eval rows (`eval/...` keys) from the training eval hook."""
    recipe: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)
    """{prepared data path: manifest.json} of every dataset the recipe names."""

    def stage_names(self) -> dict[int, str]:
        names = {}
        if self.recipe:
            names = {i: s.get("name") or f"stage{i}" for i, s in enumerate(self.recipe["stages"])}
        for r in self.metrics:
            names.setdefault(r["stage"], f"stage{r['stage']}")
        return dict(sorted(names.items()))


@dataclass
class EvalData:
    name: str
    path: Path
    text: dict[str, dict[str, Any]] = field(default_factory=dict)
    """{corpus: `eval text` record (nats_per_char, bits_per_byte, ...)}."""
    mc: dict[str, dict[str, Any]] = field(default_factory=dict)
    """{task: `eval mc` results}."""
    generations: list[dict[str, Any]] = field(default_factory=list)
    answer_counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    """{task: {metric: {letter: how often the model chose it}}}, from predictions.jsonl."""

    def bits_per_char(self, corpus: str) -> float | None:
        r = self.text.get(corpus)
        return None if r is None else r["nats_per_char"] / math.log(2)


def _rows(path: Path) -> list[dict[str, Any]]:
    return [row for _, row in iter_jsonl(path)]


def load_run(path: Path) -> RunData:
    path = Path(path)
    mf = path / "metrics.jsonl"
    if not mf.is_file():
        raise UserError(f"{path}: no metrics.jsonl; give a `langgraft train` run directory")
    rows = _rows(mf)
    for n, r in enumerate(rows, 1):
        if not isinstance(r.get("step"), int) or not isinstance(r.get("stage"), int):
            raise UserError(
                f"{mf}: row {n} has no integer step/stage; not a langgraft metrics file"
            )
    train = [r for r in rows if "loss" in r]
    if not train:
        raise UserError(f"{mf}: no training rows (with a loss) to report")
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
    recipe = read_json(path / "recipe.json") if (path / "recipe.json").is_file() else None
    summary = read_json(path / "summary.json") if (path / "summary.json").is_file() else None
    run = RunData(path, train, evals, recipe, summary)
    if recipe:
        paths = [d["path"] for s in recipe.get("stages", []) for d in s.get("data", [])]
        paths += list(recipe.get("eval", {}).get("data", []))
        for p in dict.fromkeys(paths):
            m = Path(p) / "manifest.json"
            if m.is_file():
                run.manifests[p] = read_json(m)
    return run


def _find(path: Path, name: str) -> list[Path]:
    return sorted([*path.glob(name), *path.glob(f"*/{name}")])


def _answer_counts(records: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for metric, key in (("first_token_acc", "first_token"), ("loglik_acc", "loglik")):
        for r in records:
            if key in r:
                letter = r[key]["pred"]
                out.setdefault(metric, {})[letter] = out.get(metric, {}).get(letter, 0) + 1
    return out


def load_eval(name: str, path: Path) -> EvalData:
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such evaluation directory")
    ev = EvalData(name, path)
    for f in _find(path, "text_results.json"):
        for r in read_json(f).get("corpora", []):
            ev.text[r["name"]] = r
    for f in _find(path, "results.json"):
        r = read_json(f)
        if isinstance(r, dict) and "task" in r and "overall" in r:
            ev.mc[r["task"]] = r
            if (f.parent / "predictions.jsonl").is_file():
                ev.answer_counts[r["task"]] = _answer_counts(
                    _rows(f.parent / "predictions.jsonl")
                )
    for f in _find(path, "generations.jsonl"):
        ev.generations += _rows(f)
    if not (ev.text or ev.mc or ev.generations):
        raise UserError(
            f"{path}: no text_results.json, results.json or generations.jsonl; give a directory "
            "written by `langgraft eval text|mc --out` or by `langgraft demo`"
        )
    return ev


def load_tokenizer_report(path: Path | None) -> list[dict[str, Any]]:
    if path is None:
        return []
    p = Path(path)
    p = p / "report.json" if p.is_dir() else p
    if not p.is_file():
        raise UserError(f"{p}: no such tokenizer report (from `langgraft tokenizer report --out`)")
    rows = read_json(p)
    if not isinstance(rows, list) or not all("tokens_per_char" in r for r in rows):
        raise UserError(f"{p}: not a `langgraft tokenizer report` report.json")
    return rows
