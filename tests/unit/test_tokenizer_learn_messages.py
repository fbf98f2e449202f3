"""What `tokenizer expand --learn-from` says it does is what it does (issue 22: it said "learning
up to 1 merges" while adding 1,536 characters, and ran a second learning pass unexplained)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from langgraft.__main__ import main
from langgraft.tokenizer.learn import learn_sentencepiece_pieces, missing_characters
from langgraft.tokenizer.spmodel import load_proto


@pytest.fixture(scope="module")
def corpus(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    lines = (shared_data / "corpus/zh/hongloumeng.txt").read_text("utf-8").splitlines()
    out = tmp_path_factory.mktemp("zh") / "zh.txt"
    out.write_text("\n".join(lines[:300]), encoding="utf-8")
    return out


def learn(shared_data: Path, corpus: Path, extra: int, caplog) -> tuple[list, int]:
    proto = load_proto(shared_data / "models/stories260K/tok512.model")
    samples = [(corpus.read_text("utf-8"), 1)]
    n_chars = len(missing_characters(proto, samples, 0.9995))
    caplog.set_level(logging.INFO, logger="langgraft")
    return learn_sentencepiece_pieces(proto, samples, n_chars + extra, True, 2, 0.9995), n_chars


def test_characters_that_fill_the_budget_learn_no_merges(shared_data, corpus, caplog) -> None:
    cands, n_chars = learn(shared_data, corpus, -10, caplog)
    assert all(c.origin == "learned:char" for c in cands) and len(cands) == n_chars
    assert "no merges are learned" in caplog.text
    assert "learning up to" not in caplog.text


def test_merges_fill_what_the_characters_leave(shared_data, corpus, caplog) -> None:
    cands, n_chars = learn(shared_data, corpus, 40, caplog)
    merges = [c for c in cands if c.origin.startswith("learned:merge")]
    assert 0 < len(merges) <= 40
    assert (
        f"adding {n_chars:,} characters the source lacks, then learning merges for the other 40"
        in caplog.text
    )
    assert "learning up to 40 merges" in caplog.text


def test_summary_counts_kinds_and_second_pass_is_explained(shared_data, corpus, tmp_path, caplog,
                                                           capsys) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, logger="langgraft")
    out = tmp_path / "tok"
    assert main(["tokenizer", "expand", "--source", str(shared_data / "models/stories260K/tok512.model"),
                 "--learn-from", str(corpus), "--target-size", "3000", "--hold-out", "0.1",
                 "--out", str(out)]) == 0  # fmt: skip
    info = json.loads((out / "expansion.json").read_text())
    kinds = info["added_by_kind"]
    assert kinds["new characters"] > 0 and kinds["learned merges"] > 0
    assert sum(kinds.values()) == info["added"] == 3000 - 512
    printed = capsys.readouterr().out
    assert (
        f"{kinds['new characters']:,} new characters, {kinds['learned merges']:,} learned merges"
        in printed
    )
    assert "learning once more without it (--no-measure-keep-cost skips this)" in caplog.text
    assert caplog.text.count("learning up to") == 2
