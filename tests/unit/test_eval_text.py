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
    """The oracle scores token by token: each token behind BOS and every token that starts in
    the 6 characters before its own character (stride 1: one character per window)."""
    docs = ["The cat sat on the mat.", "红楼梦是一部小说。"]
    tok, model = tokenizer(), tiny_model()
    res = evaluate_text(model, tok, docs, max_length=64, batch_size=3, context_chars=6,
                        stride_chars=1)  # fmt: skip
    nll, n_tok, n_win = 0.0, 0, 0
    for d in docs:
        enc = tok(d, add_special_tokens=False, return_offsets_mapping=True)
        ids, starts = enc["input_ids"], [a for a, _ in enc["offset_mapping"]]
        n_tok += len(ids)
        n_win += len(set(starts))  # stride 1: a window per character a token starts at
        for j in range(len(ids)):
            first = min(k for k in range(j + 1) if starts[k] >= starts[j] - 6)
            row = [1, *ids[first : j + 1]]
            with torch.no_grad():
                lp = torch.log_softmax(model(torch.tensor([row])).logits[0].float(), -1)
            nll -= lp[-2, row[-1]].item()
    assert res.tokens == n_tok and res.documents == 2
    assert res.windows == n_win
    assert res.nll == pytest.approx(nll, rel=1e-5)
    assert res.chars == sum(map(len, docs)) and res.bytes == sum(len(d.encode()) for d in docs)
    assert res.bits_per_byte == pytest.approx(nll / math.log(2) / res.bytes, rel=1e-5)
    assert res.bits_per_char == pytest.approx(nll / math.log(2) / res.chars, rel=1e-5)
    # A random model over a 32k vocabulary: about ln(32000) nats per token, no better.
    assert 0.7 * math.log(32000) < res.loss_per_token < 2.5 * math.log(32000)


def test_window_clamped_to_model_context() -> None:
    doc = "word " * 3000  # ~3000 tokens; the tiny model's context is 2048
    res = evaluate_text(tiny_model(), tokenizer(), [doc], max_length=100_000)
    # the characters derived from the clamped length: 682 fit at 3 tokens each, half context
    assert res.max_length == 2048 and (res.context_chars, res.stride_chars) == (341, 341)
    assert res.windows == -(-15_000 // 341)


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


@pytest.mark.parametrize("max_length", [0, 1, -5])
def test_window_too_short_is_refused(max_length: int) -> None:
    # 0 used to report a loss of 0.0 and 1 a ValueError from range().
    with pytest.raises(UserError, match=f"--max-length {max_length}: a window needs BOS"):
        evaluate_text(tiny_model(), tokenizer(), ["some text"], max_length=max_length)


def test_bad_corpora_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(UserError, match=r"empty.txt: no text to score"):
        read_corpus(tmp_path / "empty.txt")
    (tmp_path / "blank.jsonl").write_text('{"text": ""}\n{"text": ""}\n')
    with pytest.raises(UserError, match=r"blank.jsonl: no text to score"):
        read_corpus(tmp_path / "blank.jsonl")
    (tmp_path / "sur.jsonl").write_text('{"text": "ok"}\n{"text": "a\\ud800b"}\n')
    with pytest.raises(UserError, match=r"sur.jsonl:2: text holds a lone surrogate"):
        read_corpus(tmp_path / "sur.jsonl")
    (tmp_path / "deep.jsonl").write_text('{"text": "ok"}\n' + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(UserError, match=r"deep.jsonl:2: JSON nested too deeply"):
        read_corpus(tmp_path / "deep.jsonl")
    with pytest.raises(UserError, match="no text to score"):
        evaluate_text(tiny_model(), tokenizer(), [], name="x")
    with pytest.raises(UserError, match="lone surrogate"):
        evaluate_text(tiny_model(), tokenizer(), ["a\ud800"], name="x")


def test_ratio_stderr_known_values() -> None:
    from langgraft.eval.text import _ratio_stderr

    assert _ratio_stderr([2.0, 4.0, 6.0], [1.0, 2.0, 3.0]) == 0.0  # y = 2x exactly
    # y = (1, 3), x = (1, 1): R = 2, residuals (-1, 1), var = 2 / (2 * 1) = 1, mean x = 1.
    assert _ratio_stderr([1.0, 3.0], [1.0, 1.0]) == pytest.approx(1.0)
    assert math.isnan(_ratio_stderr([1.0], [1.0]))


def test_text_compare_table(tmp_path: Path) -> None:
    from langgraft.eval.text import compare_text

    def write(name: str, bpc: float, se: float) -> Path:
        d = tmp_path / name
        d.mkdir()
        corpora = [{"name": "zh.txt", "bits_per_char": bpc, "bits_per_char_stderr": se}]
        (d / "text_results.json").write_text(json.dumps({"model": name, "corpora": corpora}))
        return d

    base, far, near = write("base", 8.0, 0.1), write("grafted", 3.0, 0.1), write("close", 8.2, 0.1)
    rows = compare_text(base, [far, near]).splitlines()
    assert rows[2] == "| zh.txt | base (base) | 8.0000 | | | |"
    assert rows[3] == "| zh.txt | grafted | 3.0000 | -5.0000 | 0.2828 | yes |"
    assert rows[4] == "| zh.txt | close | 8.2000 | +0.2000 | 0.2828 | no |"
    (tmp_path / "junk.json").write_text("[]")
    with pytest.raises(UserError, match="not a `langgraft eval text` results file"):
        compare_text(tmp_path / "junk.json", [base])
