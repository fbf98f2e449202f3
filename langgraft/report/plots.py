"""The report's pictures: matplotlib PNGs, one function per figure, each returning its path (or
None when the run has nothing to draw). Every label goes through `drawable`: text matplotlib has no
font for (Chinese on a machine without a CJK font) is written as \\u escapes instead of boxes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from langgraft.report.inputs import EvalData, RunData  # noqa: E402

STAGE_COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f"]
# One palette for the demo's and the generic report's models, by role: the starting model grey,
# the expanded one tan, the control red, the trained model blue.
MODEL_COLORS = {"imported": "#9d9d9d", "baseline": "#9d9d9d", "expanded": "#c9b8a6",
                "no replay": "#e15759", "no-replay": "#e15759", "control": "#e15759",
                "trained": "#4e79a7", "final": "#4e79a7"}  # fmt: skip
EXTRA_COLORS = ["#59a14f", "#b07aa1", "#f28e2b", "#76b7b2"]
STEP_COLOR = "#6b6b6b"  # timeline: the demo's own steps
CATEGORY_COLORS = ["#e15759", "#4e79a7", "#59a14f", "#b07aa1", "#f28e2b", "#76b7b2", "#9c755f"]
DPI = 110


_FONT_CACHE: dict[str, bool] = {}


def has_font_for(ch: str) -> bool:
    """Whether matplotlib's font (with its fallbacks) can draw `ch`; found fonts are added to
    the fallback list once, so CJK labels draw where a CJK font is installed."""
    if ord(ch) < 0x250:
        return True
    key = ch
    if key not in _FONT_CACHE:
        from matplotlib import font_manager
        from matplotlib.ft2font import FT2Font

        found = None
        for f in font_manager.fontManager.ttflist:
            try:
                if ord(ch) in FT2Font(f.fname).get_charmap():
                    found = f.name
                    break
            except (OSError, RuntimeError):
                continue  # an unreadable font file: not one that can draw it
        if found:
            fams = list(matplotlib.rcParams["font.sans-serif"])
            if found not in fams:
                matplotlib.rcParams["font.sans-serif"] = [*fams, found]
        _FONT_CACHE[key] = found is not None
    return _FONT_CACHE[key]


def drawable(text: str) -> str:
    """`text` as it can be drawn: characters no installed font has become \\uXXXX escapes."""
    if text.isascii():
        return text
    return "".join(c if has_font_for(c) else c.encode("ascii", "backslashreplace").decode()
                   for c in text)  # fmt: skip


def corpus_label(corpus: str) -> str:
    """A corpus as people name it: "zh-modern" for .../zh-modern-heldout.jsonl (the held-out
    file names are an implementation detail; every corpus in the report is held out)."""
    name = Path(corpus).name
    for ext in (".jsonl.gz", ".txt.gz", ".jsonl", ".json", ".txt", ".csv"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    return name.removesuffix("-heldout") or name


def _human(x: float, _pos: Any = None) -> str:
    """Axis ticks as 250k / 1.5M instead of a 1e6 offset."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:g}{unit}"
    return f"{x:g}"


def _tokens_axis(ax: Any) -> None:
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(_human))


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _smooth(values: list[float], span: int) -> list[float]:
    """Exponential moving average with bias correction (TensorBoard's smoothing)."""
    out, avg, a = [], 0.0, 2 / (span + 1)
    for i, v in enumerate(values):
        avg = (1 - a) * avg + a * v
        out.append(avg / (1 - (1 - a) ** (i + 1)))
    return out


def _tokens_at_step(run: RunData) -> dict[int, int]:
    return {r["step"]: r.get("tokens_seen", r["step"]) for r in run.metrics}


def _x(run: RunData) -> tuple[str, str]:
    has_tokens = all("tokens_seen" in r for r in run.metrics)
    return ("tokens_seen", "tokens seen") if has_tokens else ("step", "optimizer step")


def _shade_stages(ax: Any, run: RunData, key: str) -> None:
    names = run.stage_names()
    for i, (stage, name) in enumerate(names.items()):
        xs = [r[key] for r in run.metrics if r["stage"] == stage]
        if not xs:
            continue
        ax.axvspan(min(xs), max(xs), color=STAGE_COLORS[i % 7], alpha=0.07, lw=0)
        ax.text(min(xs), 1.0, f" {drawable(name)}", transform=ax.get_xaxis_transform(), fontsize=8,
                va="top", color=STAGE_COLORS[i % 7])  # fmt: skip


def _clip_start(ax: Any, points: list[tuple[float, float]]) -> None:
    """Keep the first steps' huge losses (new embedding rows) from flattening the rest: the y
    axis stops a little above the largest loss after the first tenth of the x range."""
    if not points:
        return
    lo, hi = min(x for x, _ in points), max(x for x, _ in points)
    tail = [y for x, y in points if x >= lo + 0.1 * (hi - lo)]
    top = max(y for _, y in points)
    if tail and top > 1.5 * max(tail):
        ax.set_ylim(min(y for _, y in points) * 0.9, max(tail) * 1.25)
        ax.text(0.01, 0.03, "y axis cut: the first steps start higher", transform=ax.transAxes,
                fontsize=7, color="#777")  # fmt: skip


def loss_curves(run: RunData, path: Path) -> Path:
    """Top: training loss per stage. Bottom: loss per category, training (line) and held-out
    (markers, from the eval hook), against tokens seen."""
    key, label = _x(run)
    cats = sorted({k[5:] for r in run.metrics for k in r if k.startswith("loss/")})
    held = sorted({k for r in run.evals for k in r if k.startswith("eval/") and "/loss/" in k})
    rows = 2 if cats or held else 1
    fig, axes = plt.subplots(rows, 1, figsize=(9, 3.4 * rows), sharex=True, squeeze=False)
    ax = axes[0][0]
    span = max(3, len(run.metrics) // 40)
    for i, (stage, name) in enumerate(run.stage_names().items()):
        rs = [r for r in run.metrics if r["stage"] == stage]
        if not rs:
            continue
        xs, ys = [r[key] for r in rs], [r["loss"] for r in rs]
        color = STAGE_COLORS[i % 7]
        ax.plot(xs, ys, color=color, alpha=0.25, lw=0.8)
        ax.plot(xs, _smooth(ys, span), color=color, lw=1.8, label=drawable(name))
    _clip_start(ax, [(r[key], r["loss"]) for r in run.metrics])
    ax.set_ylabel("training loss (nats/token)")
    ax.set_title("Training loss per stage (light: every step; dark: smoothed)", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    _shade_stages(ax, run, key)
    if rows == 2:
        ax = axes[1][0]
        at = _tokens_at_step(run)
        colors: dict[str, str] = {}
        for c in cats:
            rs = [r for r in run.metrics if f"loss/{c}" in r]
            colors[c] = CATEGORY_COLORS[len(colors) % 7]
            ys = _smooth([r[f"loss/{c}"] for r in rs], span)
            ax.plot([r[key] for r in rs], ys, color=colors[c], lw=1.2, alpha=0.8,
                    label=drawable(f"train {c}"))  # fmt: skip
        for k in held:
            cat = k.rsplit("/", 1)[1]
            color = colors.setdefault(cat, CATEGORY_COLORS[len(colors) % 7])
            rs = [r for r in run.evals if k in r]
            xs = [at.get(r["step"], r["step"]) if key == "tokens_seen" else r["step"] for r in rs]
            ax.plot(xs, [r[k] for r in rs], "o--", color=color, ms=4, lw=1,
                    label=drawable(f"held-out {cat}"))  # fmt: skip
        pts = [(r[key], r[f"loss/{c}"]) for c in cats for r in run.metrics if f"loss/{c}" in r]
        _clip_start(ax, pts)
        ax.set_ylabel("loss per category (nats/token)")
        ax.set_title("Per category: training (smoothed) and held-out (eval hook)", fontsize=10)
        ax.legend(fontsize=8, ncol=2, loc="best")
        _shade_stages(ax, run, key)
    axes[-1][0].set_xlabel(label)
    _tokens_axis(axes[-1][0])
    return _save(fig, path)


def learning_rate(run: RunData, path: Path) -> Path:
    key, label = _x(run)
    fig, ax = plt.subplots(figsize=(9, 2.6))
    for i, (stage, name) in enumerate(run.stage_names().items()):
        rs = [r for r in run.metrics if r["stage"] == stage and "lr" in r]
        ax.plot(
            [r[key] for r in rs],
            [r["lr"] for r in rs],
            color=STAGE_COLORS[i % 7],
            label=drawable(name),
        )
    ax.set_xlabel(label)
    _tokens_axis(ax)
    ax.set_ylabel("learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax.legend(fontsize=8)
    ax.set_title("Learning rate (warm-up, cosine decay; each stage restarts)", fontsize=10)
    return _save(fig, path)


def _color(name: str, k: int) -> str:
    return MODEL_COLORS.get(name, EXTRA_COLORS[k % 4])


def bits_per_char(evals: list[EvalData], corpora: list[str], path: Path) -> Path | None:
    """One panel per held-out corpus: bits per character of every model, lower is better."""
    corpora = [c for c in corpora if any(e.bits_per_char(c) is not None for e in evals)]
    if not corpora:
        return None
    fig, axes = plt.subplots(1, len(corpora), figsize=(2.6 * len(corpora) + 0.8, 3.4),
                             squeeze=False)  # fmt: skip
    for ax, corpus in zip(axes[0], corpora, strict=True):
        vals = [(e.name, e.bits_per_char(corpus)) for e in evals]
        vals = [(n, v) for n, v in vals if v is not None]
        bars = ax.bar(range(len(vals)), [v for _, v in vals],
                      color=[_color(n, k) for k, (n, _) in enumerate(vals)])  # fmt: skip
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
        ax.set_xticks(range(len(vals)), [drawable(n) for n, _ in vals], rotation=30, ha="right",
                      fontsize=8)  # fmt: skip
        ax.set_title(drawable(corpus_label(corpus)), fontsize=10)
        ax.margins(y=0.15)
    axes[0][0].set_ylabel("bits per character (lower is better)")
    fig.suptitle("Held-out bits per character, before -> after", fontsize=11)
    return _save(fig, path)


def _tokenizer_color(name: str, k: int) -> str:
    """The first tokenizer is the source: the imported model's grey, as in the other plots."""
    return MODEL_COLORS.get(name) or (MODEL_COLORS["imported"] if k == 0 else STAGE_COLORS[k % 7])


def compression(rows: list[dict[str, Any]], path: Path) -> Path | None:
    if not rows:
        return None
    corpora = list(dict.fromkeys(r["corpus"] for r in rows))
    toks = list(dict.fromkeys(r["tokenizer"] for r in rows))
    width = 0.8 / len(toks)
    fig, ax = plt.subplots(figsize=(max(6, 2 + 1.8 * len(corpora)), 3.4))
    for k, t in enumerate(toks):
        vals = [next(r["tokens_per_char"] for r in rows if r["corpus"] == c and r["tokenizer"] == t)
                for c in corpora]  # fmt: skip
        bars = ax.bar([i + k * width for i in range(len(corpora))], vals, width, label=drawable(t),
                      color=_tokenizer_color(t, k))  # fmt: skip
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xticks([i + width * (len(toks) - 1) / 2 for i in range(len(corpora))],
                  [drawable(corpus_label(c)) for c in corpora], fontsize=8)  # fmt: skip
    ax.set_ylabel("tokens per character (lower is better)")
    ax.set_title("Tokenizer compression on held-out text", fontsize=10)
    ax.legend(fontsize=8)
    ax.margins(y=0.12)
    return _save(fig, path)


def _timeline_order(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each top-level step followed by its parts, one group after the other (the demo runs the
    main training and the control side by side: sorted by start, their stages interleaved and
    the control's read as the main run's). Parts of a step that is not drawn (the control) go
    after the step they ran inside."""
    top = [s for s in steps if not s.get("part_of")]
    names = {s["name"] for s in top}
    out: list[dict[str, Any]] = []
    for s in top:
        out.append(s)
        out += [p for p in steps if p.get("part_of") == s["name"]]
        end = s["start"] + s["seconds"]
        out += [p for p in steps if p.get("part_of") not in names | {None}
                and s["start"] <= p["start"] <= end and p not in out]  # fmt: skip
    return out + [p for p in steps if p not in out]


def timeline(steps: list[dict[str, Any]], path: Path) -> Path | None:
    """Gantt chart of named steps: [{"name", "start", "seconds"[, "part_of", "group"]}] (seconds
    from the start). Parts of a step (training stages) are drawn thinner, coloured by their
    `group` (e.g. main run vs control), with a legend."""
    if not steps:
        return None
    steps = _timeline_order(steps)
    groups = list(dict.fromkeys(s.get("group") or s["part_of"] for s in steps if s.get("part_of")))
    colors = {g: c for g, c in zip(groups, ["#4e79a7", "#e15759", *EXTRA_COLORS], strict=False)}
    fig, ax = plt.subplots(figsize=(9, 1.0 + 0.32 * len(steps)))
    drawn: set[str] = set()
    for i, s in enumerate(steps):
        part = bool(s.get("part_of"))
        group = (s.get("group") or s["part_of"]) if part else "demo step"
        color = colors.get(group, STEP_COLOR)
        ax.barh(i, s["seconds"], left=s["start"], color=color, alpha=0.75 if part else 1,
                height=0.5 if part else 0.8,
                label=drawable(group) if group not in drawn else None)  # fmt: skip
        drawn.add(group)
        ax.text(s["start"] + s["seconds"], i, f" {s['seconds']:.0f} s", va="center", fontsize=8)
    ax.set_yticks(range(len(steps)), [("   " if s.get("part_of") else "") + drawable(s["name"])
                                      for s in steps], fontsize=8)  # fmt: skip
    ax.invert_yaxis()
    ax.set_xlabel("seconds since start")
    ax.margins(x=0.1)
    ax.set_title("Timeline", fontsize=10)
    if groups:  # beside the axes: inside, it covered the last bars
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _save(fig, path)


def multiple_choice(evals: list[EvalData], task: str, path: Path, chance: float) -> Path | None:
    """Accuracy per model and scoring mode with 95% intervals (1.96 standard errors)."""
    have = [e for e in evals if task in e.mc]
    if not have:
        return None
    metrics = list(dict.fromkeys(m for e in have for m in e.mc[task]["metrics"]))
    width = 0.8 / len(have)
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * len(metrics) * len(have) / 2, 3.2))
    for k, e in enumerate(have):
        ov = e.mc[task]["overall"]
        accs = [100 * ov[m]["acc"] if m in ov else math.nan for m in metrics]
        errs = [196 * ov[m]["stderr"] if m in ov else 0 for m in metrics]
        xs = [i + k * width for i in range(len(metrics))]
        ax.bar(xs, accs, width, yerr=errs, capsize=3, label=drawable(e.name),
               color=_color(e.name, k))  # fmt: skip
    ax.axhline(100 * chance, color="k", ls=":", lw=1, label=f"chance ({100 * chance:.0f}%)")
    ax.set_xticks([i + width * (len(have) - 1) / 2 for i in range(len(metrics))], metrics)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{task.upper()} accuracy, 95% intervals", fontsize=10)
    # Beside the axes, not on them: inside, it covered a bar (issue 22).
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _save(fig, path)
