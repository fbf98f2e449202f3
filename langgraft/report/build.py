"""Assemble the report: read the run and the evaluations, draw the plots, write report.md and
report.html (self-contained) into one directory."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langgraft.report import plots
from langgraft.report.document import Image, Para, Pre, Section, Table, to_html, to_markdown
from langgraft.report.inputs import (
    EvalData,
    RunData,
    load_eval,
    load_run,
    load_tokenizer_report,
)
from langgraft.report.quality import degeneracy, degenerate_summary

CHANCE = {"mmlu": 0.25, "cmmlu": 0.25, "ceval": 0.25}  # four options, one right


@dataclass
class ReportInputs:
    run: Path
    """A `langgraft train` run directory."""
    evals: dict[str, Path] = field(default_factory=dict)
    """{label: evaluation directory}, in the order the columns should appear."""
    baseline: str | None = None
    """Label (in evals) of the model before training; changes are measured against it."""
    final: str | None = None
    """Label (in evals) of the trained model."""
    tokenizer_report: Path | None = None
    """A `langgraft tokenizer report --out` directory or its report.json."""
    timeline: list[dict[str, Any]] | None = None
    """[{"name", "start", "seconds"}]; default: the training stages from metrics.jsonl."""
    extra: list[Section] = field(default_factory=list)
    """Sections placed after the summary (the demo's targets and checks)."""
    title: str = ""
    """Report title (default: from the run directory)."""


def pct(new: float, old: float) -> str:
    return f"{100 * (new / old - 1):+.1f}%" if old else "n/a"


def stage_rows(run: RunData) -> list[dict[str, Any]]:
    out = []
    for stage, name in run.stage_names().items():
        rs = [r for r in run.metrics if r["stage"] == stage]
        if not rs:
            continue
        prev = [r for r in run.metrics if r["stage"] < stage]
        t_prev = prev[-1]["time"] if prev and "time" in prev[-1] else None
        t0 = t_prev if t_prev is not None else rs[0].get("time")
        seconds = rs[-1]["time"] - t0 if t0 is not None and "time" in rs[-1] else None
        tok_s = [r["tok_s"] for r in rs if r.get("tok_s")]
        out.append(
            {"stage": stage, "name": name, "steps": len(rs),
             "tokens": rs[-1].get("tokens_seen", 0) - (prev[-1].get("tokens_seen", 0) if prev else 0),
             "first_loss": rs[0]["loss"], "final_loss": rs[-1]["loss"],
             "tok_s": statistics.median(tok_s) if tok_s else None, "seconds": seconds,
             "start": (t0 - run.metrics[0]["time"]) if t0 is not None and "time" in run.metrics[0] else None}
        )  # fmt: skip
    return out


def _bits_table(
    evals: list[EvalData], corpora: list[str], base: str | None, final: str | None
) -> Table:
    heads = ["held-out corpus", *[e.name for e in evals]]
    if base and final:
        heads.append(f"{final} vs {base}")
    rows = []
    by = {e.name: e for e in evals}
    for c in corpora:
        row = [c] + [f"{v:.3f}" if (v := e.bits_per_char(c)) is not None else "–" for e in evals]
        if base and final:
            b, f = by[base].bits_per_char(c), by[final].bits_per_char(c)
            row.append(pct(f, b) if b is not None and f is not None else "–")
        rows.append(row)
    return Table(heads, rows)


def summary_section(run: RunData, evals: list[EvalData], corpora, inp: ReportInputs) -> Section:
    sec = Section("Summary")
    stages = stage_rows(run)
    tokens = run.metrics[-1].get("tokens_seen", 0)
    secs = [s["seconds"] for s in stages if s["seconds"] is not None]
    sec.blocks.append(Para(
        f"{len(stages)} stage(s), {run.metrics[-1]['step']:,} optimizer steps, {tokens:,} tokens"
        + (f", {sum(secs) / 60:.1f} min of training" if secs else "") + ". "
        + "; ".join(f"{s['name']}: loss {s['first_loss']:.3f} -> {s['final_loss']:.3f}" for s in stages)
        + "."
    ))  # fmt: skip
    by = {e.name: e for e in evals}
    if inp.baseline in by and inp.final in by:
        parts = []
        for c in corpora:
            b, f = by[inp.baseline].bits_per_char(c), by[inp.final].bits_per_char(c)
            if b is not None and f is not None:
                parts.append(f"**{c}** {b:.3f} -> {f:.3f} ({pct(f, b)})")
        if parts:
            sec.blocks.append(Para(
                f"Held-out bits per character, {inp.baseline} -> {inp.final}: " + ", ".join(parts) + "."
            ))  # fmt: skip
    return sec


def heldout_section(evals, corpora, inp: ReportInputs, out: Path) -> Section | None:
    if not any(e.text for e in evals):
        return None
    sec = Section("Held-out bits per character (what was gained, what was forgotten)")
    sec.blocks.append(Para(
        "Bits per character = total negative log-likelihood / characters / ln 2, so models with "
        "different tokenizers compare on the same text. Lower is better. Every corpus here is held "
        "out: no model trained on it."
    ))  # fmt: skip
    sec.blocks.append(_bits_table(evals, corpora, inp.baseline, inp.final))
    img = plots.bits_per_char(evals, corpora, out / "heldout_bits_per_char.png")
    if img:
        sec.blocks.append(Image(img, "Held-out bits per character per corpus and model"))
    return sec


def mixing_rows(run: RunData) -> list[list[str]]:
    """Per stage with several categories: share of steps that hold each, per quarter."""
    rows = []
    for stage, name in run.stage_names().items():
        rs = [r for r in run.metrics if r["stage"] == stage]
        cats = sorted({k[5:] for r in rs for k in r if k.startswith("loss/")})
        if len(cats) < 2 or len(rs) < 4:
            continue
        quarters = [rs[len(rs) * q // 4 : len(rs) * (q + 1) // 4] for q in range(4)]
        for c in cats:
            shares = [sum(f"loss/{c}" in r for r in part) / len(part) for part in quarters]
            rows.append([f"{stage} {name}", c, *(f"{100 * x:.0f}%" for x in shares)])
    return rows


def heldout_by_stage(run: RunData) -> tuple[list[str], list[list[str]]]:
    """Held-out loss per category at the end of each stage (the eval hook's last row there)."""
    names = run.stage_names()
    keys = sorted({k for r in run.evals for k in r if k.startswith("eval/") and "/loss/" in k})
    rows = []
    for k in keys:
        last = {r["stage"]: r[k] for r in run.evals if k in r}
        rows.append([k.rsplit("/", 1)[1]] + [f"{last[i]:.3f}" if i in last else "–" for i in names])
    return [f"after {i} {n}" for i, n in names.items()], rows


def training_section(run: RunData, out: Path) -> Section:
    sec = Section("Training")
    rows = stage_rows(run)
    sec.blocks.append(Table(
        ["stage", "steps", "tokens", "loss first -> final", "tokens/s (median)", "wall time"],
        [[f"{r['stage']} {r['name']}", f"{r['steps']:,}", f"{r['tokens']:,}",
          f"{r['first_loss']:.3f} -> {r['final_loss']:.3f}",
          f"{r['tok_s']:,.0f}" if r["tok_s"] else "–",
          f"{r['seconds']:.0f} s" if r["seconds"] is not None else "–"] for r in rows],
    ))  # fmt: skip
    heads, held = heldout_by_stage(run)
    if held:
        sec.blocks.append(Para(
            "Held-out loss per category (nats/token, from the training eval hook) at the end of "
            "each stage: where a language is gained, and where one is forgotten."
        ))  # fmt: skip
        sec.blocks.append(Table(["held-out category", *heads], held))
    mix = mixing_rows(run)
    if mix:
        sec.blocks.append(Para(
            "Where each category appears within a stage (share of optimizer steps whose batch "
            "holds it, per quarter of the stage): a mix should be spread evenly."
        ))  # fmt: skip
        sec.blocks.append(Table(["stage", "category", "Q1", "Q2", "Q3", "Q4"], mix, align="llrrrr"))
    sec.blocks.append(Image(plots.loss_curves(run, out / "loss.png"),
                            "Loss against tokens seen, per stage and per category"))  # fmt: skip
    sec.blocks.append(Image(plots.learning_rate(run, out / "lr.png"), "Learning rate"))
    return sec


def tokenizer_section(rows: list[dict[str, Any]], out: Path) -> Section | None:
    if not rows:
        return None
    sec = Section("Tokenizer compression")
    sec.blocks.append(Table(
        ["corpus", "tokenizer", "vocabulary", "tokens/char", "byte fallback", "vs first"],
        [[plots.corpus_label(r["corpus"]), r["tokenizer"], f"{r['vocab_size']:,}", f"{r['tokens_per_char']:.3f}",
          f"{100 * r['byte_fallback_share']:.1f}%", f"{r['relative_length']:.3f}"] for r in rows],
        align="llrrrr",
    ))  # fmt: skip
    img = plots.compression(rows, out / "tokenizer_compression.png")
    if img:
        sec.blocks.append(Image(img, "Tokens per character on held-out text (lower is better)"))
    return sec


def chance_verdict(task: str, acc: float, se: float) -> str:
    chance = CHANCE.get(task)
    if chance is None or math.isnan(se):
        return ""
    if abs(acc - chance) <= 1.96 * se:
        return f"at chance ({100 * chance:.0f}% is inside the 95% interval)"
    return "above chance" if acc > chance else "below chance"


def mc_sections(evals: list[EvalData], out: Path) -> list[Section]:
    tasks = list(dict.fromkeys(t for e in evals for t in e.mc))
    secs = []
    for task in tasks:
        sec = Section(f"{task.upper()} (multiple choice, both scoring modes)")
        rows, verdicts = [], []
        for e in evals:
            r = e.mc.get(task)
            if r is None:
                continue
            ov = r["overall"]
            for m in r["metrics"]:
                v = chance_verdict(task, ov[m]["acc"], ov[m]["stderr"])
                verdicts.append(v.startswith("at chance"))
                counts = e.answer_counts.get(task, {}).get(m, {})
                top = max(counts, key=counts.get) if counts else None
                chosen = f"{top} ({100 * counts[top] / sum(counts.values()):.0f}%)" if top else "–"
                rows.append([e.name, m, f"{100 * ov[m]['acc']:.2f} ± {100 * ov[m]['stderr']:.2f}",
                             str(ov["n"]), str(r.get("config", {}).get("shots", "")), chosen, v])  # fmt: skip
        sec.blocks.append(Para(
            "first_token_acc reads the next-token logits restricted to the answer letters "
            "(ColossalEval); loglik_acc compares the log-likelihood of each answer "
            "(lm-eval-harness). ± is one standard error."
        ))  # fmt: skip
        if verdicts and all(verdicts):
            sec.blocks.append(Para(
                "**Every model here is at chance.** The differences between rows are noise, not "
                "skill: a model this small cannot answer these questions, before or after training."
            ))  # fmt: skip
        for e in evals:
            for m, counts in e.answer_counts.get(task, {}).items():
                top = max(counts, key=counts.get)
                if counts[top] >= 0.9 * sum(counts.values()):
                    sec.blocks.append(Para(
                        f"{e.name} ({m}) answers {top} to {100 * counts[top] / sum(counts.values()):.0f}% "
                        f"of the questions: its accuracy is about the share of {top} among the right answers."
                    ))  # fmt: skip
        sec.blocks.append(Table(
            ["model", "mode", "accuracy %", "questions", "shots", "most chosen answer", "verdict"],
            rows, align="llrrrll"))  # fmt: skip
        img = plots.multiple_choice(evals, task, out / f"{task}.png", CHANCE.get(task, 0.25))
        if img:
            sec.blocks.append(Image(img, f"{task.upper()} accuracy with 95% intervals"))
        secs.append(sec)
    return secs


def generations_section(evals: list[EvalData]) -> Section | None:
    have = [e for e in evals if e.generations]
    if not have:
        return None
    prompts = list(dict.fromkeys(g["prompt"] for e in have for g in e.generations))
    sec = Section("Sample generations (greedy, same prompts)")
    text = " ".join(g["completion"] for e in have for g in e.generations)
    if "\ufffd" in text:
        sec.blocks.append(Para(
            "� marks byte tokens that do not form a valid UTF-8 character: the model produced "
            "bytes of a character it has no piece for, and not all of them."
        ))  # fmt: skip
    for e, note in degenerate_models(have).items():
        sec.blocks.append(Para(f"**Warning: {e} generates degenerate text.** {note}."))
    rows = []
    for p in prompts:
        row = [p]
        for e in have:
            g = next((g for g in e.generations if g["prompt"] == p), None)
            d = degeneracy(g["completion"]) if g is not None else None
            flag = "⚠ degenerate: " if d is not None and d["degenerate"] else ""
            row.append("–" if g is None else flag + (g["completion"].strip() or "(stops at once)"))
        rows.append(row)
    sec.blocks.append(Table(["prompt", *[e.name for e in have]], rows, align="l" * (len(have) + 1)))
    return sec


def degenerate_models(evals: list[EvalData]) -> dict[str, str]:
    """{model: what is degenerate about its greedy samples} for the models whose samples loop."""
    out = {}
    for e in evals:
        note = degenerate_summary([g["completion"] for g in e.generations])
        if note:
            out[e.name] = note
    return out


def warnings_section(evals: list[EvalData]) -> Section | None:
    """Shown right after the summary: a figure such as "-86% bits/char" must not stand alone
    when the same model's own text is one character repeated."""
    bad = degenerate_models([e for e in evals if e.generations])
    if not bad:
        return None
    sec = Section("Warnings")
    for name, note in bad.items():
        sec.blocks.append(Para(
            f"**{name}: degenerate generations.** {note}. Lower bits per character on held-out "
            "text says the model predicts that text better; it does not mean the model writes "
            "fluent text (see the sample generations)."
        ))  # fmt: skip
    return sec


def timeline_section(inp: ReportInputs, run: RunData, out: Path) -> Section | None:
    steps = inp.timeline
    if not steps:
        steps = [{"name": r["name"], "start": r["start"], "seconds": r["seconds"]}
                 for r in stage_rows(run) if r["seconds"] is not None and r["start"] is not None]  # fmt: skip
    img = plots.timeline(steps, out / "timeline.png")
    if img is None:
        return None
    sec = Section("Timeline")
    sec.blocks.append(Image(img, "Where the time went"))
    top = [s for s in steps if not s.get("part_of")]  # sub-steps are drawn, not summed
    cpu = any(s.get("cpu_seconds") is not None for s in steps)
    heads = ["step", "wall seconds"] + (["CPU seconds (this process)"] if cpu else [])
    rows = []
    for s in steps:
        c = s.get("cpu_seconds")
        name = f"… {s['name']}" if s.get("part_of") else s["name"]
        rows.append(
            [name, f"{s['seconds']:.1f}"] + ([f"{c:.1f}" if c is not None else "–"] if cpu else [])
        )
    if cpu:
        total_cpu = sum(s.get("cpu_seconds") or 0 for s in top)
        rows.append(["**total**", f"{sum(s['seconds'] for s in top):.1f}", f"{total_cpu:.1f}"])
        sec.blocks.append(Para(
            "Wall time depends on what else the machine runs; CPU time of this process is the "
            "better guide to what an idle machine takes (PyTorch may use more than one core)."
        ))  # fmt: skip
    sec.blocks.append(Table(heads, rows))
    return sec


def recipe_section(run: RunData) -> Section | None:
    if not run.recipe and not run.manifests:
        return None
    import yaml

    sec = Section("Recipe and data")
    if run.manifests:
        rows = []
        for p, m in run.manifests.items():
            c = m.get("counts", {})
            rej = sum(c.get("rows", {}).get("rejected", {}).values())
            cats = (
                ", ".join(sorted(m.get("categories", {})))
                if isinstance(m.get("categories"), dict)
                else ""
            )
            rows.append([Path(p).name, cats, f"{c.get('rows', {}).get('in', 0):,}", f"{rej:,}",
                         f"{c.get('sequences', 0):,}", f"{c.get('tokens', {}).get('out', 0):,}",
                         f"{100 * c.get('packing_efficiency', 0):.1f}%", str(len(m.get("buckets", [])))])  # fmt: skip
        sec.blocks.append(Table(
            ["dataset", "categories", "rows in", "rejected", "sequences", "tokens", "packing", "buckets"],
            rows, align="llrrrrrr"))  # fmt: skip
    if run.recipe:
        sec.blocks.append(Para("The resolved recipe (recipe.json of the run):"))
        sec.blocks.append(Pre(yaml.safe_dump(run.recipe, sort_keys=False, allow_unicode=True)))
    return sec


def write_report(inp: ReportInputs, out: Path) -> Path:
    """Write out/report.md, out/report.html and the PNGs; returns `out`."""
    run = load_run(inp.run)
    evals = [load_eval(name, path) for name, path in inp.evals.items()]
    tok_rows = load_tokenizer_report(inp.tokenizer_report)
    corpora = list(dict.fromkeys(c for e in evals for c in e.text))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sections = [summary_section(run, evals, corpora, inp), warnings_section(evals), *inp.extra]
    sections += [
        heldout_section(evals, corpora, inp, out),
        training_section(run, out),
        tokenizer_section(tok_rows, out),
        *mc_sections(evals, out),
        generations_section(evals),
        timeline_section(inp, run, out),
        recipe_section(run),
    ]
    sections = [s for s in sections if s is not None]
    title = inp.title or f"langgraft report: {Path(inp.run).resolve().name}"
    (out / "report.md").write_text(to_markdown(title, sections, out), encoding="utf-8")
    (out / "report.html").write_text(to_html(title, sections), encoding="utf-8")
    figures = {c: {e.name: e.bits_per_char(c) for e in evals} for c in corpora}
    (out / "report.json").write_text(
        json.dumps({"bits_per_char": figures, "stages": stage_rows(run)}, indent=2) + "\n"
    )
    return out
