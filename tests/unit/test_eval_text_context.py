"""`eval text` gives every tokenizer the same context in characters: on the real stories260K with
its tok512 tokenizer and with an expanded one (about half the tokens per Chinese character), the
old/new bits/char difference no longer moves with the window length in tokens, and every
character is scored exactly once.

Before (token windows of `max_length - 1` behind BOS), the same 1,500 held-out Hongloumeng
characters gave a base - expanded difference of 56.55, 55.98 and 55.18 bits/char at windows of
160, 256 and 512 tokens: the expanded tokenizer's windows cover twice the text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from langgraft.__main__ import main
from langgraft.errors import UserError
from langgraft.eval.text import _token_starts, evaluate_text, plan_windows

TOLERANCE = 1e-3  # bits/char: float noise of different batch shapes, 1/1000 of the old drift


@pytest.fixture(scope="module")
def models(stories: Path, shared_data: Path, tmp_path_factory) -> dict:
    from transformers import AutoModelForCausalLM

    from langgraft.tokenizer import load_tokenizer

    t = tmp_path_factory.mktemp("text-context")
    text = (shared_data / "corpus" / "zh" / "hongloumeng.txt").read_text(encoding="utf-8")
    (t / "zh.txt").write_text(text[:20_000], encoding="utf-8")
    assert main(["tokenizer", "expand", "--source", str(stories), "--learn-from",
                 str(t / "zh.txt"), "--target-size", "1024", "--out", str(t / "tok")]) == 0  # fmt: skip
    assert main(["model", "expand", "--model", str(stories), "--tokenizer", str(t / "tok"),
                 "--out", str(t / "zh")]) == 0  # fmt: skip
    (t / "held.txt").write_text(text[100_000:101_500], encoding="utf-8")
    out = {"held": [text[100_000:101_500]], "dirs": {"base": stories, "zh": t / "zh"}, "t": t}
    for name, d in (("base", stories), ("zh", t / "zh")):
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
        out[name] = (model, load_tokenizer(d))
    return out


def _bits(models: dict, name: str, max_length: int) -> float:
    model, tok = models[name]
    res = evaluate_text(model, tok, models["held"], "zh", max_length, batch_size=8,
                        context_chars=40, stride_chars=10)  # fmt: skip
    assert res.chars == 1500 and res.context_chars == 40 and res.stride_chars == 10
    return res.bits_per_char


def test_difference_does_not_move_with_the_window(models: dict) -> None:
    ids = {k: _token_starts(models[k][1], models["held"][0], "zh")[0] for k in ("base", "zh")}
    assert len(ids["zh"]) < 0.6 * len(ids["base"])  # the expanded tokenizer compresses ~2x
    diffs = [_bits(models, "base", n) - _bits(models, "zh", n) for n in (160, 256, 512)]
    assert max(diffs) - min(diffs) < TOLERANCE, diffs


@pytest.mark.parametrize("name", ["base", "zh"])
def test_each_window_sees_the_same_characters_and_scores_each_once(models: dict, name) -> None:
    doc = models["held"][0]
    ids, starts = _token_starts(models[name][1], doc, "zh")
    wins = plan_windows(starts, len(doc), 40, 10, 160)
    scored_tokens = [i for w in wins for i in range(*w.scored)]
    assert scored_tokens == list(range(len(ids)))  # every token once, in order
    scored_chars = [c for w in wins for c in range(*w.chars)]
    assert scored_chars == list(range(len(doc)))  # every character once
    for w in wins:
        (a, t), s = w.context, starts[w.scored[0]]
        assert w.scored[1] - a + 1 <= 160
        # context = exactly the tokens that start in the 40 characters before s
        assert a == t or s - starts[a] <= 40
        assert a == 0 or s - starts[a - 1] > 40
        assert starts[w.scored[1] - 1] < s + 10  # scored: the tokens starting in 10 characters


def test_context_that_cannot_fit_is_refused(models: dict) -> None:
    model, tok = models["base"]
    with pytest.raises(UserError, match=r"zh: document 1: the context of character \d+ .* takes "
                       r"\d+ tokens: --max-length 64 leaves no room"):  # fmt: skip
        evaluate_text(model, tok, models["held"], "zh", 64, context_chars=40, stride_chars=10)


def test_cli_reports_bits_per_char_and_compares_only_like_contexts(models: dict, capsys) -> None:
    t, outs = models["t"], {}
    for name, d in models["dirs"].items():
        outs[name] = t / f"eval-{name}"
        args = ["eval", "text", "--model", str(d), "--data", str(t / "held.txt"), "--out",
                str(outs[name]), "--max-length", "256", "--context-chars", "40",
                "--stride-chars", "10", "--overwrite"]  # fmt: skip
        assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| corpus | tokens | chars | nats/token | bits/char | ± SE | bits/byte |" in printed
    assert "nats/char" not in printed and "context 40 characters, stride 10" in printed
    row = json.loads((outs["zh"] / "text_results.json").read_text())["corpora"][0]
    assert row["bits_per_char"] == pytest.approx(_bits(models, "zh", 256), rel=1e-6)
    assert (row["context_chars"], row["stride_chars"], row["chars"]) == (40, 10, 1500)
    assert main(["eval", "text", "--compare", str(outs["base"]), str(outs["zh"])]) == 0
    assert "| held.txt | zh |" in capsys.readouterr().out
    # another context is another quantity: refused, not compared
    other = t / "eval-other"
    args = ["eval", "text", "--model", str(models["dirs"]["zh"]), "--data", str(t / "held.txt"),
            "--out", str(other), "--max-length", "256", "--overwrite"]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    assert main(["eval", "text", "--compare", str(outs["base"]), str(other)]) == 2
    err = capsys.readouterr().err
    assert "scored with context/stride 43/42 characters" in err and "with 40/10" in err
