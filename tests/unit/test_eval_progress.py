"""A long `eval mc` run off a terminal says how far it is and how long it will take."""

from __future__ import annotations

import io
import logging

import pytest
from eval_helpers import CMMLU, tiny_model, tokenizer

from langgraft.eval import McOptions, evaluate_mc, load_task
from langgraft.eval import progress as progress_module

SUBJECTS = ["agronomy", "anatomy", "arts"]


def _run(caplog, monkeypatch, every_s: float, tty: bool) -> list[str]:
    stderr = io.StringIO()
    stderr.isatty = lambda: tty  # type: ignore[method-assign]
    monkeypatch.setattr("sys.stderr", stderr)
    monkeypatch.setattr(progress_module, "PROGRESS_EVERY_S", every_s)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="langgraft.eval.progress"):
        task = load_task("cmmlu", CMMLU)
        opts = McOptions(mode="first-token", shots=0, limit=2, subjects=SUBJECTS)
        evaluate_mc(tiny_model(), tokenizer(), task, opts)
    return [r.getMessage() for r in caplog.records if "questions (" in r.getMessage()]


@pytest.mark.parametrize(("every_s", "want"), [(0.0, 2), (1e9, 1)])
def test_progress_lines_off_a_terminal(caplog, monkeypatch, every_s, want):
    lines = _run(caplog, monkeypatch, every_s, tty=False)
    assert len(lines) == want, lines
    # The first line, after the first subject, gives the whole run's expected duration.
    assert lines[0].startswith("cmmlu: 2/6 questions (33%), expected total ")
    assert "left" in lines[0]
    if want == 2:
        assert lines[1].startswith("cmmlu: 4/6 questions (67%), elapsed ")
    # On a terminal the bar says it: no lines.
    assert _run(caplog, monkeypatch, every_s, tty=True) == []


def test_eval_text_says_how_far_it_is_off_a_terminal(caplog, monkeypatch):
    """The SmolLM2 demo's evaluation step printed nothing for 169 s off a terminal."""
    from langgraft.eval.text import evaluate_text

    stderr = io.StringIO()
    stderr.isatty = lambda: False  # type: ignore[method-assign]
    monkeypatch.setattr("sys.stderr", stderr)
    monkeypatch.setattr(progress_module, "PROGRESS_EVERY_S", 0.0)
    docs = ["春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。" * 8]
    with caplog.at_level(logging.INFO, logger="langgraft.eval.progress"):
        evaluate_text(tiny_model(), tokenizer(), docs, "poem", max_length=32, batch_size=1,
                      context_chars=8, stride_chars=8)  # fmt: skip
    lines = [r.getMessage() for r in caplog.records if " batches (" in r.getMessage()]
    assert len(lines) >= 2 and lines[0].startswith("poem: 1/") and "expected total" in lines[0]
