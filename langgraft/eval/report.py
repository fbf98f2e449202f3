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
        overall[f"{m}_macro"] = macro_average([e[m] for e in subjects.values()])
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


def macro_average(subjects: list[dict]) -> dict[str, float | int]:
    """Mean of the subjects' accuracies and its standard error sqrt(sum se_k^2) / K.

    A subject scored on one question has no standard error (its variance cannot be estimated
    from one answer), yet it weighs 1/K in the mean: leaving its term out of the sum would
    understate the error, and leaving the subject out would change the mean. So the macro
    standard error is NaN ("not available") as soon as one subject lacks its own."""
    k = len(subjects)
    if not k:
        return {"acc": float("nan"), "stderr": float("nan"), "n": 0}
    ses = [e["stderr"] for e in subjects]
    se = math.sqrt(sum(x * x for x in ses)) / k  # NaN propagates: see the docstring
    return {"acc": sum(e["acc"] for e in subjects) / k, "stderr": se, "n": k}


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


def counts_summary(task: Task, limit: int | None, only: list[str] | None) -> str:
    """What a run will score, in a few lines: the release's totals, the left-out files once, and
    what --limit / --subjects leave (the counts per subset: `counts_table`, and results.json)."""
    subjects = [task.subjects[s] for s in only if s in task.subjects] if only else None
    subjects = subjects or list(task.subjects.values())
    total = task.num_questions()
    skipped = skipped_by_reason(task)
    line = f"{task.name}/{task.split}: {total:,} questions in {len(task.subjects)} subsets"
    if skipped:
        why = ", ".join(f"{n:,} {r}" for r, n in skipped.items())
        line += f" (skipped {sum(skipped.values()):,} rows: {why})"
    lines = [line]
    if task.left_out:
        lines.append("  left out: " + ", ".join(f"{f} ({r})" for f, r in task.left_out.items()))
    if limit or only:
        n = sum(min(len(s.questions), limit or len(s.questions)) for s in subjects)
        what = [f"--limit {limit}"] if limit else []
        what += [f"--subjects ({len(subjects)})"] if only else []
        lines.append(f"  this run ({', '.join(what)}): {n:,} questions")
    return "\n".join(lines)


def _count(xs) -> dict[int, int]:
    out: dict[int, int] = defaultdict(int)
    for x in xs:
        out[x] += 1
    return dict(out)


def pct(m: dict) -> str:
    """Accuracy in points, with its standard error where one exists (n = 1, or a macro average
    over such subjects, has none: see macro_average)."""
    if math.isfinite(m["stderr"]):
        return f"{100 * m['acc']:.2f} ± {100 * m['stderr']:.2f}"
    return f"{100 * m['acc']:.2f} (SE n/a)" if m["n"] > 1 else f"{100 * m['acc']:.2f}"


def markdown(result: dict) -> str:
    metrics = result["metrics"]
    head = "| | n | " + " | ".join(metrics) + " |\n|---|---:|" + "---:|" * len(metrics) + "\n"
    lines = [f"# {result['task']} ({result['split']}) — {result.get('model', '')}\n", head.rstrip()]
    ov = result["overall"]
    lines.append(
        f"| **overall (micro)** | {ov['n']} | " + " | ".join(pct(ov[m]) for m in metrics) + " |"
    )
    lines.append(
        "| overall (macro) | "
        + str(ov[metrics[0] + "_macro"]["n"])
        + " subjects | "
        + " | ".join(pct(ov[m + "_macro"]) for m in metrics)
        + " |"
    )
    for c, e in result["categories"].items():
        lines.append(f"| *{c}* | {e['n']} | " + " | ".join(pct(e[m]) for m in metrics) + " |")
    for s, e in result["subjects"].items():
        lines.append(f"| {s} | {e['n']} | " + " | ".join(pct(e[m]) for m in metrics) + " |")
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


# Files `eval mc --compare out/eval-base/*` meets beside the results in an eval directory
# (langgraft.report.evaluate's layout, `eval text --out`, `eval mc --out`): not results, skipped.
LAYOUT_FILES = {
    "eval.json", "plan.json", "config.json", "text_results.json", "text_results.md",
    "generations.jsonl", "predictions.jsonl", "results.md", "results.csv",
}  # fmt: skip


def collect_results(paths: list[str | Path]) -> tuple[list[tuple[Path, dict]], list[Path]]:
    """(results.json path, result) for every `eval mc` run among `paths`, and the paths skipped.

    A path is a results.json, a directory holding one (`eval mc --out`), or an eval directory
    whose subdirectories hold them (EVAL_DIR/cmmlu/results.json); the other files of those
    layouts (eval.json, text_results.json, ...) and directories holding only `eval text` results
    are skipped, so a shell glob over eval directories works. The same file twice counts once."""
    found: dict[Path, tuple[Path, dict]] = {}
    skipped: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir() and not (path / "results.json").is_file():
            subs = sorted(d / "results.json" for d in path.iterdir() if d.is_dir())
            subs = [f for f in subs if f.is_file()]
            if not subs:
                if (path / "text_results.json").is_file():
                    skipped.append(path)
                    continue
                raise UserError(
                    f"{path}: no results.json in it or its subdirectories "
                    "(give `langgraft eval mc --out` directories or an eval directory)"
                )
        elif path.is_file() and path.name in LAYOUT_FILES:
            skipped.append(path)
            continue
        else:
            subs = [path / "results.json" if path.is_dir() else path]
        for f in subs:
            found.setdefault(f.resolve(), (f, load_result(f)))
    if not found:
        raise UserError(f"{' '.join(map(str, paths))}: no `langgraft eval mc` results among them")
    return list(found.values()), skipped


Runs = dict[str, dict[str, tuple[Path, dict]]]


def by_model(found: list[tuple[Path, dict]]) -> Runs:
    """{model: {task: (path, result)}} of `collect_results`' runs, refusing two runs of one
    model on one task."""
    runs: Runs = defaultdict(dict)
    for path, r in found:
        model = r.get("model") or str(path)
        if r["task"] in runs[model]:
            raise UserError(
                f"{path}: a second {r['task']} run of model {model!r} (the first: "
                f"{runs[model][r['task']][0]}); compare one run per model and task"
            )
        runs[model][r["task"]] = (path, r)
    return runs


def _task_metrics(runs: dict, task: str, metric: str | None) -> list[str]:
    """Every scoring mode any run of `task` has (first-token, loglik, ...), in run order."""
    if metric is not None:
        return [metric]
    out: list[str] = []
    for by_task in runs.values():
        if task in by_task:
            out += [m for m in by_task[task][1]["metrics"] if m not in out]
    return out


def _column(task: str, m: str, metrics: list[str]) -> str:
    title = TASK_TITLES.get(task, task)
    return title if len(metrics) == 1 else f"{title} {m.removesuffix('_acc')}"


def _task_order(tasks: set[str]) -> list[str]:
    return [t for t in TASK_ORDER if t in tasks] + sorted(tasks - set(TASK_ORDER))


def read_runs(paths: list[str | Path]) -> Runs:
    """`by_model` of the runs among `paths` (see collect_results)."""
    return by_model(collect_results(paths)[0])


def compare(runs: Runs, metric: str | None = None) -> str:
    """A markdown table: one row per model, one column per task and scoring mode (micro accuracy
    x 100)."""
    if metric is not None:
        for by_task in runs.values():
            for path, r in by_task.values():
                if metric not in r["overall"]:
                    raise UserError(
                        f"{path}: has no metric {metric!r} (it has {', '.join(r['metrics'])})"
                    )
    columns = []
    for task in _task_order({t for by_task in runs.values() for t in by_task}):
        metrics = _task_metrics(runs, task, metric)
        columns += [(task, m, _column(task, m, metrics)) for m in metrics]
    lines = ["| Model | " + " | ".join(c[2] for c in columns) + " |"]
    lines.append("|---|" + "---:|" * len(columns))
    for model, by_task in runs.items():
        cells = []
        for task, m, _ in columns:
            r = by_task.get(task, (None, None))[1]
            if r is None or m not in r["overall"]:
                cells.append("–")
                continue
            shots = r.get("config", {}).get("shots")
            cell = f"{100 * r['overall'][m]['acc']:.2f}"
            cells.append(cell + (f" ({shots}-shot)" if shots is not None else ""))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
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


def forgetting(runs: Runs, metric: str | None = None) -> str:
    """Base (the first model given) vs each other model, per benchmark and scoring mode:
    accuracy, the difference in points and whether it exceeds twice its standard error."""
    models = list(runs)
    if len(models) < 2:
        return ""
    base = models[0]
    lines = [
        f"| benchmark | model | acc | Δ vs {base} (points) | 2×SE | beyond 2×SE | SE |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for task in _task_order(set(runs[base])):
        pb_path, rb = runs[base][task]
        metrics = [metric] if metric is not None else list(rb["metrics"])
        for m in metrics:
            lines += _forgetting_rows(runs, task, m, _column(task, m, metrics))
    return "\n".join(lines) + "\n"


def _forgetting_rows(runs: dict, task: str, m: str, label: str) -> list[str]:
    models = list(runs)
    base = models[0]
    pb_path, rb = runs[base][task]
    if m not in rb["overall"]:
        raise UserError(f"{pb_path}: has no metric {m!r} (it has {', '.join(rb['metrics'])})")
    lines = [f"| {label} | {base} (base) | {100 * rb['overall'][m]['acc']:.2f} | | | | |"]
    for model in models[1:]:
        if task not in runs[model]:
            continue
        po_path, ro = runs[model][task]
        if m not in ro["overall"]:  # scored in other modes only
            lines.append(f"| {label} | {model} | – | | | | |")
            continue
        if ro["overall"]["n"] != rb["overall"]["n"]:
            raise UserError(
                f"{po_path}: {ro['overall']['n']} questions vs {rb['overall']['n']} in "
                f"{pb_path}; compare runs over the same questions"
            )
        se, kind = _delta_se(rb, ro, _predictions(pb_path), _predictions(po_path), m)
        d = ro["overall"][m]["acc"] - rb["overall"][m]["acc"]
        beyond = "yes" if abs(d) > 2 * se else ("no" if math.isfinite(se) else "n/a")
        lines.append(
            f"| {label} | {model} | {100 * ro['overall'][m]['acc']:.2f} | "
            f"{100 * d:+.2f} | {200 * se:.2f} | {beyond} | {kind} |"
        )
    return lines
