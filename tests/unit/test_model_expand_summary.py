"""`langgraft model expand` prints a few lines for people (issue 22: it dumped ~25 lines of JSON,
which langgraft.json already holds)."""

from __future__ import annotations

import json
from pathlib import Path

from langgraft.__main__ import main
from langgraft.tokenizer.hf import write_hf_tokenizer
from langgraft.tokenizer.spmodel import NORMAL, Piece, load_proto


def test_short_summary_and_full_record_in_langgraft_json(stories: Path, tmp_path: Path, capsys) -> None:  # fmt: skip
    proto = load_proto(stories / "tokenizer.model")
    low = min(p.score for p in proto.pieces if p.type == NORMAL)
    for k, piece in enumerate(["你", "好", "你好"]):
        proto.pieces.append(Piece(piece=piece, score=low - 1 - k, type=NORMAL))
    tok, out = tmp_path / "tok", tmp_path / "model"
    write_hf_tokenizer(proto, tok)
    assert main(["model", "expand", "--model", str(stories), "--tokenizer", str(tok),
                 "--out", str(out), "--pad-to-multiple-of", "64"]) == 0  # fmt: skip
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 3 and not any(line.lstrip().startswith(("{", '"')) for line in printed)
    assert (
        printed[0]
        == "512 -> 515 pieces (+3); vocab_size 512 -> 576 (61 padding rows); tied embeddings"
    )
    assert printed[1].startswith("  new rows: subtoken-mean, ")
    assert str(out / "langgraft.json") in printed[2]
    assert json.loads((out / "langgraft.json").read_text())["model_expand"]["n_added"] == 3
