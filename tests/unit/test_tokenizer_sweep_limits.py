"""Issue 22: `tokenizer sweep` when learning cannot reach the sizes asked. Every size above what
learning reached is one line naming the reached size, exit 2, nothing written (it was a
ZeroDivisionError in the knee); some sizes above it are marked in sweep.md; and no empty
"adding pieces: 0piece" bar when no pieces are listed."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from langgraft.__main__ import main

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A tiny Chinese corpus: 16 new characters and ~19 merges are all it can teach tok512."""
    path = tmp_path / "zh.txt"
    path.write_text("一只小猫在花园里玩。\n小狗跑到公园去了。\n" * 6, encoding="utf-8")
    return path


def sweep_argv(shared_data: Path, corpus: Path, out: Path, sizes: str) -> list[str]:
    tok512 = shared_data / "models" / "stories260K" / "tok512.model"
    return ["tokenizer", "sweep", "--source", str(tok512), "--learn-from", str(corpus),
            "--held-out", str(corpus), "--sizes", sizes, "--hidden-size", "8", "--out", str(out)]  # fmt: skip


def test_every_size_above_what_learning_reaches_is_one_line(shared_data, corpus, tmp_path, capsys) -> None:  # fmt: skip
    out = tmp_path / "sweep"
    assert main(sweep_argv(shared_data, corpus, out, "5000,6000,7000")) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln.lower()]
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].startswith("langgraft tokenizer: error: --sizes 5000,6000,7000: learning from "
                             "--learn-from reached "), err  # fmt: skip
    assert "every size asked is above it: ask for sizes up to " in err[0], err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zh.txt"]


def test_sizes_partly_above_are_marked(shared_data, corpus, tmp_path) -> None:
    import json

    out = tmp_path / "sweep"
    assert main(sweep_argv(shared_data, corpus, out, "515,520,5000")) == 0
    rows = json.loads((out / "sweep.json").read_text())
    reached = rows[-1]["vocab_size"]
    assert [r["size"] for r in rows] == [515, 520, 5000] and 520 < reached < 5000
    last = (out / "sweep.md").read_text().splitlines()[-1]
    assert last.startswith(f"| {reached:,} (asked 5,000) |"), last


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_empty_adding_pieces_bar(shared_data, corpus, tmp_path, monkeypatch) -> None:
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert main(sweep_argv(shared_data, corpus, tmp_path / "sweep", "515,520")) == 0
    shown = term.getvalue()
    assert "adding learned" in shown  # the bars do show on a terminal
    assert "adding pieces" not in shown, shown
