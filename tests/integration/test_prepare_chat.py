"""`langgraft prepare chat` end to end: loss only on assistant spans, template saved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langgraft.__main__ import main
from langgraft.data.config import ChatPrepareConfig
from langgraft.data.prepare import prepare
from langgraft.templates import get_template

CONVOS = [
    {
        "messages": [
            {"from": "human", "value": "Name a colour."},
            {"from": "gpt", "value": "Blue."},
        ],
        "category": "qa",
    },
    {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Count to three."},
            {"role": "assistant", "content": "1 2 3"},
            {"role": "user", "content": "Again?"},
            {"role": "assistant", "content": "1 2 3"},
        ],
        "category": "qa",
    },
    {"messages": [{"role": "user", "content": "Nobody answers."}], "category": "qa"},
]


def test_chat_trains_only_assistant_spans_and_saves_the_template(
    tmp_path: Path, shared_data: Path
) -> None:
    import datasets

    from langgraft.tokenizer.hf import load_tokenizer

    tok_path = shared_data / "tokenizers" / "llama2" / "tokenizer.model"
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(c) + "\n" for c in CONVOS))
    cfg = ChatPrepareConfig(
        input=[str(data)], tokenizer=tok_path, out=tmp_path / "out", max_length=256, progress=False
    )
    m = prepare(cfg).manifest
    assert m["kind"] == "chat" and m["template"] == {"name": "llama2", "stop_token_ids": [2]}
    assert m["settings"]["template"] == "llama2"
    assert m["counts"]["rows"]["rejected"] == {"no_assistant_turn": 1}
    tok = load_tokenizer(tok_path)
    template = get_template(m["template"]["name"])
    rows = list(datasets.load_from_disk(str(tmp_path / "out"))["bucket_00"])
    segments = []
    for r in rows:
        start = 0
        for n in r["doc_lens"]:
            segments.append((r["input_ids"][start : start + n], r["labels"][start : start + n]))
            start += n
    expected = []
    for c in CONVOS[:2]:
        msgs = [
            {
                "role": {"human": "user", "gpt": "assistant"}.get(x.get("from"), x.get("role")),
                "content": x.get("value", x.get("content")),
            }
            for x in c["messages"]
        ]
        segs = template.encode(msgs, tok)
        ids = [i for s, _ in segs for i in s]
        labels = [i if t else -100 for s, t in segs for i in s]
        expected.append((ids, labels))
    assert sorted(map(repr, segments)) == sorted(map(repr, expected))
    for _ids, labels in segments:
        trained = tok.decode([i for i in labels if i != -100])
        assert "Human" not in trained and "Count" not in trained and "colour" not in trained
    assert m["counts"]["tokens"]["target_in"] == m["counts"]["tokens"]["supervised_out"]


def test_chat_rejects_text_files_and_unknown_templates(
    tmp_path: Path, shared_data: Path, capsys
) -> None:
    txt = tmp_path / "a.txt"
    txt.write_text("hello\n")
    tok = str(shared_data / "tokenizers" / "llama2" / "tokenizer.model")
    rc = main(
        ["prepare", "chat", "--input", str(txt), "--tokenizer", tok, "--out", str(tmp_path / "o")]
    )
    assert rc == 2 and "chat input must be jsonl" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(
            [
                "prepare",
                "chat",
                "--input",
                str(txt),
                "--tokenizer",
                tok,
                "--out",
                "o",
                "--template",
                "x",
            ]
        )
