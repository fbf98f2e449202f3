"""What the report shows people (issue 22): degenerate samples flagged next to the figures,
plot labels without internal file names or undrawable characters, a legend wherever colours mean
something (main run vs control in the timeline), a legend that covers no bar, one palette."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from test_report import eval_dir, synthetic_run, tokenizer_report

from langgraft.report import plots
from langgraft.report.build import ReportInputs, write_report
from langgraft.report.quality import degeneracy

pytestmark = pytest.mark.timeout(120)

DEGENERATE = (
    "，，，，，，，，，，，，，，，，，，，，，，，，"  # the demo's trained model, verbatim shape
)
NORMAL_ZH = "却说那女娲氏炼石补天之时，于大荒山无稽崖炼成高经十二丈、方经二十四丈顽石"
NORMAL_EN = " there was a little girl named Lily. She loved to play outside in the park."


def test_degeneracy_flags_repetition_not_normal_text() -> None:
    assert degeneracy(DEGENERATE)["degenerate"]
    assert degeneracy(" the cat the cat the cat the cat the cat the cat")["degenerate"]
    assert not degeneracy(NORMAL_ZH)["degenerate"]
    assert not degeneracy(NORMAL_EN)["degenerate"]
    assert degeneracy("，，，") is None  # too short to judge


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Every figure the report draws, by file name, before it is closed."""
    seen: dict[str, object] = {}
    save = plots._save

    def keep(fig, path):  # noqa: ANN001, ANN202
        seen[Path(path).name] = fig
        fig.canvas.draw()
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return seen


def demo_like_inputs(tmp_path: Path, trained_says: str) -> ReportInputs:
    run = synthetic_run(tmp_path / "run")
    evals = {}
    for name, nats in (("imported", 40.0), ("trained", 6.0)):
        d = eval_dir(tmp_path / name, name, {"zh-modern": nats * math.log(2)}, 0.25, 0.04)
        says = trained_says if name == "trained" else NORMAL_EN
        rows = [{"prompt": p, "completion": says} for p in ("从前", "Once upon a time")]
        (d / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        evals[name] = d
    tok = tokenizer_report(tmp_path / "tok")
    rows = json.loads((tok / "report.json").read_text())
    for r in rows:
        r["corpus"] = str(tmp_path / "corpus/zh-modern-heldout.jsonl")
    (tok / "report.json").write_text(json.dumps(rows))
    t0 = [{"name": "train", "start": 10.0, "seconds": 30.0}]
    parts = [{"name": f"{who}: {stage}", "start": 11.0 + 9 * k + j, "seconds": 8.0,
              "part_of": step, "group": group}
             for j, (step, who, group) in enumerate((("train", "main run", "main run (self-replay)"),
                                                     ("no-replay", "no-replay control", "no-replay control")))
             for k, stage in enumerate(("embeddings", "injection"))]  # fmt: skip
    return ReportInputs(run=run, evals=evals, baseline="imported", final="trained",
                        tokenizer_report=tok, timeline=sorted(t0 + parts, key=lambda r: r["start"]))  # fmt: skip


def test_degenerate_samples_are_a_visible_warning(tmp_path: Path) -> None:
    md = (write_report(demo_like_inputs(tmp_path / "a", DEGENERATE), tmp_path / "ra")
          / "report.md").read_text("utf-8")  # fmt: skip
    head = md.split("## Held-out bits per character")[0]
    assert "## Warnings" in head and "trained: degenerate generations." in head
    assert "2 of 2 samples are degenerate" in head and "⚠ degenerate" in md
    md = (write_report(demo_like_inputs(tmp_path / "b", NORMAL_ZH), tmp_path / "rb")
          / "report.md").read_text("utf-8")  # fmt: skip
    assert "## Warnings" not in md and "degenerate generations" not in md and "⚠" not in md


def test_plot_labels_legends_and_palette(tmp_path: Path, figures: dict) -> None:
    out = write_report(demo_like_inputs(tmp_path, NORMAL_ZH), tmp_path / "report")
    ax = figures["tokenizer_compression.png"].axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["zh-modern"], ticks  # not zh-modern-heldout.jsonl
    # timeline: the control's stages are labelled and coloured as the control's, with a legend
    ax = figures["timeline.png"].axes[0]
    names = [t.get_text().strip() for t in ax.get_yticklabels()]
    assert names == ["train", "main run: embeddings", "main run: injection",
                     "no-replay control: embeddings", "no-replay control: injection"]  # fmt: skip
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["demo step", "main run (self-replay)", "no-replay control"]
    # cmmlu: the legend covers no bar
    fig = figures["cmmlu.png"]
    ax = fig.axes[0]
    box = ax.get_legend().get_window_extent()
    assert not any(box.overlaps(b.get_window_extent()) for b in ax.patches if b.get_height() > 0)
    # one palette: the generic report's baseline/final are the demo's imported/trained colours
    assert plots._color("baseline", 0) == plots._color("imported", 3)
    assert plots._color("final", 0) == plots._color("trained", 3)
    assert "Noto Sans CJK" not in (out / "report.html").read_text("utf-8")


def test_labels_only_hold_characters_a_font_can_draw() -> None:
    text = plots.drawable("红楼梦 held-out")
    assert text.endswith(" held-out")
    assert all(plots.has_font_for(c) for c in text)
    assert (
        plots.drawable("红楼梦") == "红楼梦" or plots.drawable("红楼梦") == "\\u7ea2\\u697c\\u68a6"
    )
