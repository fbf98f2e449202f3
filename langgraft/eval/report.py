"""Accuracies with standard errors per subject, per category and overall; results as JSON,
markdown and CSV; `compare` puts several results side by side (the Colossal-LLaMA-2 table).

The headline number is the micro average (every question weighs the same), as ColossalEval and
the CMMLU paper report it; the macro average (every subject weighs the same) is given next to it.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from langgraft.errors import UserError
from langgraft.eval.data import Task

# Column order of the Colossal-LLaMA-2 README table.
TASK_ORDER = ["mmlu", "cmmlu", "agieval", "gaokao", "ceval"]
TASK_TITLES = {
    "mmlu": "MMLU",
    "cmmlu": "CMMLU",
    "agieval": "AGIEval",
    "gaokao": "GAOKAO",
    "ceval": "CEval",
}


def accuracy(correct: list[bool]) -> dict[str, float | int]:
    """Mean and its standard error (sample std / sqrt(n), as lm-eval-harness reports it)."""
    n = len(correct)
    acc = sum(correct) / n if n else float("nan")
    se = math.sqrt(acc * (1 - acc) / (n - 1)) if n > 1 else float("nan")
    return {"acc": acc, "stderr": se, "n": n}


def summarize(task: Task, records: list[dict], metrics: list[str]) -> dict[str, Any]:
    by_subject: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_subject[r["subject"]].append(r)
    subjects, by_category = {}, defaultdict(list)
    for name, recs in by_subject.items():
        s = task.subjects[name]
        entry: dict[str, Any] = {
            "display": s.display,
            "categories": list(s.categories),
            "n": len(recs),
            "skipped": dict(sorted(s.skipped.items())),
            "truncated": sum(r["truncated"] for r in recs),
            "shots": dict(sorted(_count(r["shots"] for r in recs).items())),
        }
        for m in metrics:
            entry[m] = accuracy([r["correct"][m] for r in recs])
        subjects[name] = entry
        for c in s.categories:
            by_category[c].extend(recs)
    categories = {
        c: {"n": len(recs), **{m: accuracy([r["correct"][m] for r in recs]) for m in metrics}}
        for c, recs in sorted(by_category.items())
    }
    overall: dict[str, Any] = {"n": len(records)}
    for m in metrics:
        overall[m] = accuracy([r["correct"][m] for r in records])
        accs = [e[m]["acc"] for e in subjects.values()]
        ses = [e[m]["stderr"] for e in subjects.values() if not math.isnan(e[m]["stderr"])]
        overall[f"{m}_macro"] = {
            "acc": sum(accs) / len(accs) if accs else float("nan"),
            "stderr": math.sqrt(sum(x * x for x in ses)) / len(accs) if accs else float("nan"),
            "n": len(accs),
        }
    return {
        "task": task.name,
        "split": task.split,
        "metrics": metrics,
        "headline": metrics[0],
        "overall": overall,
        "categories": categories,
        "subjects": dict(sorted(subjects.items())),
        "skipped": sum(n for s in task.subjects.values() for n in s.skipped.values()),
        "skipped_by_reason": skipped_by_reason(task),
        "left_out": dict(task.left_out),
    }


def skipped_by_reason(task: Task) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for s in task.subjects.values():
        for reason, n in s.skipped.items():
            out[reason] += n
    return dict(sorted(out.items()))


def counts_table(task: Task) -> str:
    """Scored and skipped rows per subset, as printed before a run."""
    lines = [f"{task.name}/{task.split}: scored questions per subset"]
    for name, s in task.subjects.items():
        skipped = ", ".join(f"{n} {r}" for r, n in sorted(s.skipped.items()))
        lines.append(
            f"  {name:40s} {len(s.questions):6d}" + (f"  (skipped: {skipped})" if skipped else "")
        )
    lines.append(f"  {'total':40s} {task.num_questions():6d}")
    for f, reason in task.left_out.items():
        lines.append(f"  left out: {f} ({reason})")
    return "\n".join(lines)


def _count(xs) -> dict[int, int]:
    out: dict[int, int] = defaultdict(int)
    for x in xs:
        out[x] += 1
    return dict(out)


def _pct(m: dict) -> str:
    return (
        f"{100 * m['acc']:.2f} ± {100 * m['stderr']:.2f}" if m["n"] > 1 else f"{100 * m['acc']:.2f}"
    )


def markdown(result: dict) -> str:
    metrics = result["metrics"]
    head = "| | n | " + " | ".join(metrics) + " |\n|---|---:|" + "---:|" * len(metrics) + "\n"
    lines = [f"# {result['task']} ({result['split']}) — {result.get('model', '')}\n", head.rstrip()]
    ov = result["overall"]
    lines.append(
        f"| **overall (micro)** | {ov['n']} | " + " | ".join(_pct(ov[m]) for m in metrics) + " |"
    )
    lines.append(
        "| overall (macro) | "
        + str(ov[metrics[0] + "_macro"]["n"])
        + " subjects | "
        + " | ".join(_pct(ov[m + "_macro"]) for m in metrics)
        + " |"
    )
    for c, e in result["categories"].items():
        lines.append(f"| *{c}* | {e['n']} | " + " | ".join(_pct(e[m]) for m in metrics) + " |")
    for s, e in result["subjects"].items():
        lines.append(f"| {s} | {e['n']} | " + " | ".join(_pct(e[m]) for m in metrics) + " |")
    return "\n".join(lines) + "\n"


def write_results(out: Path, result: dict) -> None:
    """results.json (summary, config, templates), predictions.jsonl, results.md, results.csv."""
    summary = {k: v for k, v in result.items() if k != "records"}
    (out / "results.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    with (out / "predictions.jsonl").open("w", encoding="utf-8") as f:
        for r in result.get("records", []):
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    (out / "results.md").write_text(markdown(result), encoding="utf-8")
    with (out / "results.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        metrics = result["metrics"]
        w.writerow(["level", "name", "n"] + [f"{m}{x}" for m in metrics for x in ("", "_stderr")])
        rows = [("overall", "micro", result["overall"])]
        rows += [("category", c, e) for c, e in result["categories"].items()]
        rows += [("subject", s, e) for s, e in result["subjects"].items()]
        for level, name, e in rows:
            w.writerow(
                [level, name, e["n"]]
                + [f"{e[m][x]:.6f}" for m in metrics for x in ("acc", "stderr")]
            )


def load_result(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(
            f"{p}: no such results file (give a results.json or its directory)"
        ) from None
    except json.JSONDecodeError as e:
        raise UserError(f"{p}:{e.lineno}: not a results JSON ({e.msg})") from None
    if not isinstance(data, dict) or "task" not in data or "overall" not in data:
        raise UserError(f"{p}: not a `langgraft eval mc` results file")
    return data


def compare(paths: list[str | Path], metric: str | None = None) -> str:
    """A markdown table: one row per model, one column per task (micro accuracy x 100)."""
    table: dict[str, dict[str, str]] = defaultdict(dict)
    for p in paths:
        r = load_result(p)
        m = metric or r["headline"]
        if m not in r["overall"]:
            raise UserError(f"{p}: has no metric {m!r} (it has {', '.join(r['metrics'])})")
        shots = r.get("config", {}).get("shots")
        cell = f"{100 * r['overall'][m]['acc']:.2f}"
        table[r.get("model") or str(p)][r["task"]] = cell + (
            f" ({shots}-shot)" if shots is not None else ""
        )
    tasks = [t for t in TASK_ORDER if any(t in row for row in table.values())]
    tasks += sorted({t for row in table.values() for t in row} - set(tasks))
    lines = ["| Model | " + " | ".join(TASK_TITLES.get(t, t) for t in tasks) + " |"]
    lines.append("|---|" + "---:|" * len(tasks))
    for model, row in table.items():
        lines.append(f"| {model} | " + " | ".join(row.get(t, "–") for t in tasks) + " |")
    return "\n".join(lines) + "\n"


def _predictions(path: str | Path) -> dict[str, dict] | None:
    p = Path(path)
    pred = (p if p.is_dir() else p.parent) / "predictions.jsonl"
    if not pred.is_file():
        return None
    out = {}
    with pred.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                out[r["source"]] = r["correct"]
    return out


def _delta_se(base: dict, other: dict, pb, po, metric: str) -> tuple[float, str]:
    """Standard error of other - base: paired over the same questions when both runs kept their
    predictions (far tighter: the questions' difficulty cancels), else the two SEs combined."""
    if pb and po and set(pb) == set(po) and all(metric in c for c in pb.values()):
        d = [float(po[s][metric]) - float(pb[s][metric]) for s in pb]
        n = len(d)
        if n > 1:
            mean = sum(d) / n
            return math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1) / n), "paired"
    sb, so = base["overall"][metric]["stderr"], other["overall"][metric]["stderr"]
    return math.sqrt(sb * sb + so * so), "unpaired"


def forgetting(paths: list[str | Path], metric: str | None = None) -> str:
    """Base (the first model given) vs each other model, per benchmark: accuracy, the difference
    in points and whether it exceeds twice its standard error."""
    runs: dict[str, dict[str, tuple[Path, dict]]] = defaultdict(dict)
    for p in paths:
        r = load_result(p)
        runs[r.get("model") or str(p)][r["task"]] = (Path(p), r)
    models = list(runs)
    if len(models) < 2:
        return ""
    base = models[0]
    lines = [
        f"| benchmark | model | acc | Δ vs {base} (points) | 2×SE | beyond 2×SE | SE |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    tasks = [t for t in TASK_ORDER if t in runs[base]] + sorted(set(runs[base]) - set(TASK_ORDER))
    for task in tasks:
        pb_path, rb = runs[base][task]
        m = metric or rb["headline"]
        lines.append(
            f"| {TASK_TITLES.get(task, task)} | {base} (base) | {100 * rb['overall'][m]['acc']:.2f} | | | | |"
        )
        for model in models[1:]:
            if task not in runs[model]:
                continue
            po_path, ro = runs[model][task]
            if m not in ro["overall"]:
                raise UserError(f"{po_path}: has no metric {m!r} to compare with {pb_path}")
            if ro["overall"]["n"] != rb["overall"]["n"]:
                raise UserError(
                    f"{po_path}: {ro['overall']['n']} questions vs {rb['overall']['n']} in "
                    f"{pb_path}; compare runs over the same questions"
                )
            se, kind = _delta_se(rb, ro, _predictions(pb_path), _predictions(po_path), m)
            d = ro["overall"][m]["acc"] - rb["overall"][m]["acc"]
            beyond = "yes" if abs(d) > 2 * se else "no"
            lines.append(
                f"| {TASK_TITLES.get(task, task)} | {model} | {100 * ro['overall'][m]['acc']:.2f} | "
                f"{100 * d:+.2f} | {200 * se:.2f} | {beyond} | {kind} |"
            )
    return "\n".join(lines) + "\n"
