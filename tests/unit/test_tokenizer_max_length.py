"""The length limit an expanded tokenizer and an expanded model carry (issue 22): the model's own
(stories260K: 512 positions), never a made-up 4,096 that makes transformers warn on every text
longer than 512 tokens."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from transformers import AutoTokenizer

from langgraft.__main__ import main
from langgraft.tokenizer.hf import load_tokenizer, write_hf_tokenizer
from langgraft.tokenizer.spmodel import load_proto

PIECES = ["人工智能", "你好", "世界"]


def expand_tokenizer(source: Path, tmp: Path) -> Path:
    pieces = tmp / "pieces.jsonl"
    pieces.write_text("".join(json.dumps({"piece": p}) + "\n" for p in PIECES), "utf-8")
    out = tmp / "tok"
    assert main(["tokenizer", "expand", "--source", str(source), "--pieces", str(pieces),
                 "--out", str(out)]) == 0  # fmt: skip
    return out


def max_length(d: Path) -> int | None:
    return json.loads((d / "tokenizer_config.json").read_text()).get("model_max_length")


def test_tokenizer_expand_keeps_the_model_directory_limit(stories: Path, tmp_path: Path) -> None:
    assert max_length(stories) == 512
    out = expand_tokenizer(stories, tmp_path)
    assert max_length(out) == 512
    assert json.loads((out / "expansion.json").read_text())["model_max_length"] == 512


def test_bare_tokenizer_model_gets_no_made_up_limit(shared_data: Path, tmp_path: Path) -> None:
    out = expand_tokenizer(shared_data / "models/stories260K/tok512.model", tmp_path)
    assert max_length(out) is None
    assert AutoTokenizer.from_pretrained(out).model_max_length > 10**8


def test_model_expand_writes_the_model_limit(stories: Path, tmp_path: Path, caplog) -> None:
    """A tokenizer directory that says 4,096 (as `tokenizer expand` wrote before) is copied with
    the model's 512; transformers' own loader honours it."""
    tok = tmp_path / "tok4096"
    write_hf_tokenizer(load_proto(stories / "tokenizer.model"), tok, model_max_length=4096)
    out = tmp_path / "model"
    assert main(["model", "expand", "--model", str(stories), "--tokenizer", str(tok),
                 "--out", str(out)]) == 0  # fmt: skip
    assert max_length(out) == 512
    assert AutoTokenizer.from_pretrained(out).model_max_length == 512


def test_langgraft_loads_do_not_warn_on_long_documents(stories: Path, caplog) -> None:
    """Every stage tokenizes whole documents and windows them itself: transformers' warning
    about ids longer than the model's limit is a false alarm there (it printed on every
    `eval text`)."""
    caplog.set_level(logging.WARNING)
    for tok in (load_tokenizer(stories), load_tokenizer(stories / "tokenizer.model")):
        assert len(tok("Once upon a time " * 150, add_special_tokens=False)["input_ids"]) > 512
    assert "longer than the specified maximum" not in caplog.text
