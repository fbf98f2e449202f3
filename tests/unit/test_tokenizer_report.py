"""`tokenizer report`: figures from hand counts on a small jsonl corpus, and bad input."""

from __future__ import annotations

import json

import sentencepiece as spm

from langgraft.__main__ import main


def test_report_matches_hand_count(tmp_path, capsys, llama2_model):
    rows = [
        {"text": "你好，世界"},
        {"source": "问：", "target": "答案是 A"},
        {"text": "plain words"},
    ]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    assert main(["tokenizer", "report", "--tokenizer", str(llama2_model), "--corpus",
                 str(corpus), "--out", str(tmp_path / "rep")]) == 0  # fmt: skip
    texts = ["你好，世界", "问：答案是 A", "plain words"]
    sp = spm.SentencePieceProcessor(model_file=str(llama2_model))
    pieces = [p for t in texts for p in sp.encode_as_pieces(t)]
    (r,) = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert r["samples"] == 3 and r["characters"] == sum(map(len, texts))
    assert r["tokens"] == len(pieces)
    assert r["tokens_per_char"] == len(pieces) / sum(map(len, texts))
    n_bytes = sum(p.startswith("<0x") for p in pieces)
    assert n_bytes > 0 and r["byte_fallback_share"] == n_bytes / len(pieces)
    assert "| c.jsonl |" in capsys.readouterr().out


def test_report_bad_input(tmp_path, capsys, llama2_model):
    rc = main(["tokenizer", "report", "--tokenizer", str(llama2_model), "--corpus",
               str(tmp_path / "missing.txt")])  # fmt: skip
    assert rc == 2 and "missing.txt" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n')
    rc = main(["tokenizer", "report", "--tokenizer", str(llama2_model), "--corpus", str(bad)])
    assert rc == 2 and "bad.jsonl:2" in capsys.readouterr().err
    rc = main(["tokenizer", "report", "--tokenizer", str(llama2_model), "--names", "a", "b",
               "--corpus", str(bad)])  # fmt: skip
    assert rc == 2 and "--names" in capsys.readouterr().err
