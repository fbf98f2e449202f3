"""`evaluate_text`: loss per token / char / byte against a hand computation, and corpus reading."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from eval_helpers import SHARED_DATA, tiny_model, tokenizer

from langgraft.errors import UserError
from langgraft.eval import evaluate_text, read_corpus


def test_text_loss_matches_hand_computation() -> None:
    docs = ["The cat sat on the mat.", "红楼梦是一部小说。"]
    tok, model = tokenizer(), tiny_model()
    res = evaluate_text(model, tok, docs, max_length=6, batch_size=3)
    nll, n_tok = 0.0, 0
    for d in docs:
        ids = tok(d, add_special_tokens=False)["input_ids"]
        n_tok += len(ids)
        for i in range(0, len(ids), 5):  # windows of max_length - 1 behind BOS
            row = [1, *ids[i : i + 5]]
            with torch.no_grad():
                lp = torch.log_softmax(model(torch.tensor([row])).logits[0].float(), -1)
            nll -= sum(lp[j - 1, row[j]].item() for j in range(1, len(row)))
    assert res.tokens == n_tok and res.documents == 2
    assert res.windows == sum(
        -(-len(tok(d, add_special_tokens=False)["input_ids"]) // 5) for d in docs
    )
    assert res.nll == pytest.approx(nll, rel=1e-5)
    assert res.chars == sum(map(len, docs)) and res.bytes == sum(len(d.encode()) for d in docs)
    assert res.bits_per_byte == pytest.approx(nll / math.log(2) / res.bytes, rel=1e-5)
    assert res.nats_per_char == pytest.approx(nll / res.chars, rel=1e-5)
    # A random model over a 32k vocabulary: about ln(32000) nats per token, no better.
    assert 0.7 * math.log(32000) < res.loss_per_token < 2.5 * math.log(32000)


def test_window_clamped_to_model_context() -> None:
    doc = "word " * 3000  # ~3000 tokens; the tiny model's context is 2048
    res = evaluate_text(tiny_model(), tokenizer(), [doc], max_length=100_000)
    assert res.max_length == 2048 and res.windows == 2


def test_read_corpus_formats_and_limits(tmp_path: Path) -> None:
    docs = read_corpus(SHARED_DATA / "corpus" / "zh" / "hongloumeng.txt", max_chars=1000)
    assert len(docs) == 1 and len(docs[0]) == 1000 and "\r" not in docs[0]
    jl = tmp_path / "c.jsonl"
    jl.write_text("\n".join(json.dumps({"body": t}) for t in ("abc", "defg", "hij")) + "\n")
    assert read_corpus(jl, "body", max_chars=5) == ["abc", "de"]
    with pytest.raises(UserError, match=r"c.jsonl:1: no string field 'text'; set --text-key"):
        read_corpus(jl)
    (tmp_path / "c.csv").write_text("a,b")
    with pytest.raises(UserError, match="unknown corpus format '.csv'"):
        read_corpus(tmp_path / "c.csv")
