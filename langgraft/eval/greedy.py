"""Greedy generation after each multiple-choice prompt, and the answer letter read from the text
(the exact-match half of ColossalEval's combined AGIEval metric).

Generation is transformers' `generate` (greedy, `max_new_tokens`, stops at EOS) over left-padded
batches of the same token ids the scorer reads, so both halves of the combined metric see one
prompt. Prompts are sorted by length first so a batch pads little.
"""

from __future__ import annotations

import re
from typing import Any

from tqdm import tqdm

# ColossalEval single_choice_accuracy with all_classes A-D: an upper-case choice letter that is
# not part of a word ("And" does not count as A).
_LETTER = re.compile(r"(?<![a-z])[A-D](?![a-z])")
_ANY_LETTER = re.compile(r"[A-D]")


def extract_letter(text: str, rule: str = "first") -> str | None:
    """The answer letter in generated `text`, or None.

    `first`: the first choice letter not inside a word (ColossalEval). `last`: the last A-D before
    the first `<eoa>` (GAOKAO-Bench's single_choice rule, which reads the text backwards).
    """
    if rule == "last":
        found = _ANY_LETTER.findall(text.split("<eoa>", 1)[0])
        return found[-1] if found else None
    m = _LETTER.search(text)
    return m.group(0) if m else None


def greedy_generate(
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    max_new_tokens: int,
    batch_size: int = 16,
) -> list[str]:
    """Decoded continuation (special tokens dropped) of each prompt, in input order."""
    import torch

    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    steps = range(0, len(order), batch_size)
    with torch.inference_mode():
        for start in tqdm(steps, desc="generate", unit="batch", disable=None, leave=False):
            idx = order[start : start + batch_size]
            width = max(len(prompts[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                n = len(prompts[i])
                ids[row, width - n :] = torch.tensor(prompts[i])
                mask[row, width - n :] = 1
            gen = model.generate(
                input_ids=ids.to(model.device),
                attention_mask=mask.to(model.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
            )
            for row, i in enumerate(idx):
                out[i] = tokenizer.decode(gen[row, width:].tolist(), skip_special_tokens=True)
    return out
