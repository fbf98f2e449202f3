"""`prepare chat` accepts the README's chat rows, which have no `category` (issue 22): such a row
takes the input's name, as raw text does; a row's own category still wins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langgraft.__main__ import main

TOK512 = Path(__file__).resolve().parents[2] / ".." / "shared/data/models/stories260K/tok512.model"

# The row format README.md shows for `prepare chat`, with no category.
README_ROW = {
    "messages": [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "What colour is the sky?"},
        {"role": "assistant", "content": "Blue."},
    ]
}


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    return path


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_chat_rows_without_category_take_the_input_name(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    sft = _write(tmp_path / "sft.jsonl", [README_ROW] * 3)
    tagged = _write(tmp_path / "more.jsonl", [README_ROW, {**README_ROW, "category": "qa"}])
    args = ["prepare", "chat", "--tokenizer", str(TOK512), "--max-length", "128", "--no-progress"]
    assert main([*args, "--input", str(sft), "--out", str(tmp_path / "a")]) == 0
    m = _manifest(tmp_path / "a")
    assert {k: v["rows"] for k, v in m["categories"].items()} == {"sft": 3}
    assert main([*args, "--input", f"mine={sft}", str(tagged), "--out", str(tmp_path / "b")]) == 0
    m = _manifest(tmp_path / "b")
    assert {k: v["rows"] for k, v in m["categories"].items()} == {"mine": 3, "more": 1, "qa": 1}
    # a source/target row still needs one (or --allow-missing-category)
    data = _write(tmp_path / "qa.jsonl", [{"source": "Q: ", "target": "A"}])
    argv = ["prepare", "pretrain", "--input", str(data), "--tokenizer", str(TOK512),
            "--out", str(tmp_path / "c"), "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    assert "qa.jsonl:1: missing field 'category'" in capsys.readouterr().err


def test_allow_missing_category_is_refused_for_chat(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Its meaning ("unknown") no longer applies to chat rows: refused, not ignored."""
    sft = _write(tmp_path / "sft.jsonl", [README_ROW])
    argv = ["prepare", "chat", "--input", str(sft), "--tokenizer", str(TOK512),
            "--allow-missing-category", "--out", str(tmp_path / "o"), "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--allow-missing-category is for `prepare pretrain`" in err[0]
    assert not (tmp_path / "o").exists()
