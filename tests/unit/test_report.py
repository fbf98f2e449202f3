"""`langgraft report` from a synthetic run: every picture is a real PNG, the HTML is one
self-contained file, the tables carry the input figures (bits = nats / ln 2), the chance verdict
follows the standard errors, and bad input is one clear error."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from langgraft.__main__ import main
from langgraft.errors import UserError
from langgraft.report.build import ReportInputs, chance_verdict, write_report

pytestmark = pytest.mark.timeout(120)

PNG = b"\x89PNG\r\n\x1a\n"
STAGES = ["embeddings", "injection", "replay"]


def synthetic_run(d: Path) -> Path:
    d.mkdir(parents=True)
    rows, tokens, t = [], 0, 1000.0
    for step in range(1, 61):
        stage = (step - 1) // 20
        tokens += 4096
        t += 0.5
        row = {"step": step, "stage": stage, "stage_step": (step - 1) % 20 + 1, "loss": 8.0 / step**0.3,
               "lr": 1e-3 * (1 - ((step - 1) % 20) / 20), "tokens_seen": tokens, "tok_s": 8000.0,
               "time": t, "loss/zh": 9.0 / step**0.3}  # fmt: skip
        if stage == 2 and step <= 50:  # English only in the first half of the last stage
            row["loss/en"] = 3.0
        rows.append(row)
        if step % 10 == 0:
            rows.append({"step": step, "stage": stage, "eval/zh-heldout/loss/zh": 7.0 / step**0.2,
                         "eval/zh-heldout/loss": 7.0 / step**0.2})  # fmt: skip
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = {"model": "m", "out": str(d), "stages": [{"name": n, "data": []} for n in STAGES]}
    (d / "recipe.json").write_text(json.dumps(recipe))
    return d


def eval_dir(d: Path, name: str, nats: dict[str, float], acc: float, se: float) -> Path:
    d.mkdir(parents=True)
    corpora = [{"name": k, "nats_per_char": v, "bits_per_byte": v} for k, v in nats.items()]
    (d / "text_results.json").write_text(json.dumps({"model": name, "corpora": corpora}))
    (d / "cmmlu").mkdir()
    overall = {"n": 100, "first_token_acc": {"acc": acc, "stderr": se, "n": 100},
               "loglik_acc": {"acc": acc, "stderr": se, "n": 100}}  # fmt: skip
    result = {"task": "cmmlu", "split": "test", "metrics": ["first_token_acc", "loglik_acc"],
              "overall": overall, "config": {"shots": 5}}  # fmt: skip
    (d / "cmmlu/results.json").write_text(json.dumps(result))
    gen = {"prompt": "Once upon a time", "completion": f" {name} <says> hi"}
    (d / "generations.jsonl").write_text(json.dumps(gen) + "\n")
    return d


def tokenizer_report(d: Path) -> Path:
    d.mkdir()
    rows = [{"tokenizer": t, "corpus": "zh.txt", "vocab_size": v, "tokens_per_char": r,
             "byte_fallback_share": 0.1, "relative_length": r / 2.0}
            for t, v, r in (("old", 512, 2.0), ("new", 2048, 1.0))]  # fmt: skip
    (d / "report.json").write_text(json.dumps(rows))
    return d


@pytest.fixture
def inputs(tmp_path: Path) -> ReportInputs:
    run = synthetic_run(tmp_path / "run")
    before = eval_dir(
        tmp_path / "before", "before", {"zh": 20 * math.log(2), "en": 1.0}, 0.26, 0.04
    )
    after = eval_dir(tmp_path / "after", "after", {"zh": 5 * math.log(2), "en": 1.1}, 0.24, 0.04)
    return ReportInputs(run=run, evals={"before": before, "after": after}, baseline="before",
                        final="after", tokenizer_report=tokenizer_report(tmp_path / "tok"))  # fmt: skip


def test_report_files_pictures_and_figures(inputs: ReportInputs, tmp_path: Path) -> None:
    import matplotlib.image

    out = write_report(inputs, tmp_path / "report")
    pngs = sorted(out.glob("*.png"))
    names = {p.name for p in pngs}
    assert {"loss.png", "lr.png", "heldout_bits_per_char.png", "tokenizer_compression.png",
            "cmmlu.png", "timeline.png"} <= names  # fmt: skip
    for p in pngs:
        assert p.read_bytes()[:8] == PNG
        h, w, _ = matplotlib.image.imread(p).shape
        assert h > 150 and w > 400
    md = (out / "report.md").read_text(encoding="utf-8")
    for p in pngs:
        assert f"]({p.name})" in md
    # bits per character = nats / ln 2, and the change is measured against the baseline
    assert "| zh | 20.000 | 5.000 | -75.0% |" in md
    assert "| en | 1.443 | 1.587 | +10.0% |" in md
    assert "0 embeddings | 20 | 81,920 |" in md  # steps and tokens per stage
    assert "**Every model here is at chance.**" in md
    assert "| 2 replay | en | 100% | 100% | 0% | 0% |" in md  # where a category appears
    assert "| 2 replay | zh | 100% | 100% | 100% | 100% |" in md
    # held-out loss at each stage's end: the eval rows at steps 20, 40 and 60
    assert f"| zh | {7 / 20**0.2:.3f} | {7 / 40**0.2:.3f} | {7 / 60**0.2:.3f} |" in md
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count('src="data:image/png;base64,') == len(pngs)
    assert not re.search(r'(src|href)="(https?:)?//', html), "the page must not fetch anything"
    assert "&lt;says&gt;" in html and "<says>" not in html  # generations are escaped
    figures = json.loads((out / "report.json").read_text())["bits_per_char"]
    assert figures["zh"] == {"before": pytest.approx(20.0), "after": pytest.approx(5.0)}


def test_chance_verdict_follows_the_standard_error() -> None:
    assert chance_verdict("cmmlu", 0.30, 0.04).startswith("at chance")
    assert chance_verdict("cmmlu", 0.60, 0.02) == "above chance"
    assert chance_verdict("cmmlu", 0.10, 0.02) == "below chance"
    assert chance_verdict("agieval", 0.30, 0.04) == ""  # options vary: no single chance level


def test_cli_with_an_eval_baseline(inputs: ReportInputs, tmp_path: Path, capsys) -> None:
    argv = ["report", str(inputs.run), "--baseline", str(inputs.evals["before"]),
            "--eval", f"after={inputs.evals['after']}", "--out", str(tmp_path / "r")]  # fmt: skip
    assert main(argv) == 0
    md = (tmp_path / "r/report.md").read_text(encoding="utf-8")
    assert "| held-out corpus | baseline | after |" in md


def test_a_wrong_run_dir_leaves_nothing_behind(tmp_path: Path, capsys) -> None:
    """README: `langgraft report runs/7b ...` before any run exists left an empty runs/7b/."""
    run = tmp_path / "runs" / "7b"
    assert main(["report", str(run), "--baseline", str(tmp_path / "eval")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_bad_inputs_are_one_clear_error(inputs: ReportInputs, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no metrics.jsonl"):
        write_report(ReportInputs(run=tmp_path), tmp_path / "r1")
    bad = inputs.run / "metrics.jsonl"
    bad.write_text(bad.read_text() + "{not json\n")
    with pytest.raises(UserError, match=r"metrics.jsonl:\d+: invalid JSON"):
        write_report(inputs, tmp_path / "r2")
    empty = tmp_path / "empty-eval"
    empty.mkdir()
    with pytest.raises(UserError, match="no text_results.json"):
        write_report(ReportInputs(run=synthetic_run(tmp_path / "run2"), evals={"x": empty}),
                     tmp_path / "r3")  # fmt: skip
