"""Greedy generation (batched, left-padded) against a token-by-token argmax by hand, and the answer
extraction rules."""

from __future__ import annotations

import pytest
import torch
from eval_helpers import tiny_model, tokenizer

from langgraft.eval.greedy import extract_letter, greedy_generate


def _greedy_by_hand(ids: list[int], n: int) -> str:
    model, tok = tiny_model(), tokenizer()
    out: list[int] = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(torch.tensor([ids + out])).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            out.append(nxt)
    return tok.decode(out, skip_special_tokens=True)


def test_batched_greedy_equals_one_by_one() -> None:
    tok = tokenizer()
    prompts = [
        tok(t)["input_ids"]
        for t in ("答案：", "The answer is therefore", "问题 1. 甲乙丙丁？\n答案是")
    ]
    got = greedy_generate(tiny_model(), tok, prompts, max_new_tokens=6, batch_size=2)
    assert got == [_greedy_by_hand(p, 6) for p in prompts]


@pytest.mark.parametrize(
    ("text", "rule", "letter"),
    [
        (" B. because", "first", "B"),
        ("And the answer is C", "first", "C"),  # the A of "And" is part of a word
        ("答案是 D，不是A", "first", "D"),
        ("no letter here", "first", None),
        ("【解析】A错，B对 <eoe>\n【答案】: B <eoa> C D", "last", "B"),  # stops at <eoa>
        ("选 A 或 C", "last", "C"),
    ],
)
def test_extract_letter(text: str, rule: str, letter: str | None) -> None:
    assert extract_letter(text, rule) == letter
