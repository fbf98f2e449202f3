"""`prepare chat` splits a conversation longer than --max-length between exchanges: every
piece starts with BOS and the system prompt, no reply is trained without the question before
it, every reply is trained exactly once, and an exchange that cannot fit is dropped and counted
(never cut in the middle of the dialogue)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from langgraft.data.config import ChatPrepareConfig
from langgraft.data.prepare import prepare

SYSTEM = "You are a patient storyteller."


def exchange(k: int) -> list[dict[str, str]]:
    question = f"Question {k}: what did the little cat find in the big garden today?"
    reply = f"Answer {k}: the little cat found a red ball and a happy bird in the garden."
    return [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]


def test_long_conversations_split_at_exchanges_keeping_the_system_prompt(
    tmp_path: Path, shared_data: Path
) -> None:
    from langgraft.tokenizer.hf import load_tokenizer
    from langgraft.train.data import PreparedDataset

    tok_path = shared_data / "models" / "stories260K" / "tok512.model"
    tok = load_tokenizer(tok_path)
    long_chat = [{"role": "system", "content": SYSTEM}]
    for k in range(6):
        long_chat += exchange(k)
    huge = [{"role": "user", "content": "Tell me everything."},
            {"role": "assistant", "content": "the cat sat on a mat " * 60}]  # fmt: skip
    src = tmp_path / "sft.jsonl"
    rows = [{"messages": long_chat, "category": "qa"}, {"messages": huge, "category": "qa"}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = ChatPrepareConfig(
        input=[str(src)], tokenizer=tok_path, out=tmp_path / "out", max_length=160,
        progress=False,
    )  # fmt: skip
    m = prepare(cfg).manifest
    assert m["counts"]["rows"]["rejected"] == {"turn_too_long": 1}
    assert m["counts"]["rows"]["packed"] == 1
    docs = m["counts"]["documents"]
    assert docs["split"] == 0  # the packer never had to cut a conversation
    pieces = docs["packed"]
    assert pieces >= 3 and docs["conversation_pieces_added"] == pieces - 1

    replies: list[str] = []
    ds = PreparedDataset(tmp_path / "out")
    for b in ds.buckets:
        for i in range(b.num_rows):
            row, start = b.row(i), 0
            for n in row.doc_lens.tolist():
                ids = row.input_ids[start : start + n].tolist()
                labels = row.labels[start : start + n].tolist()
                start += n
                assert n <= 160 and ids[0] == tok.bos_token_id
                text = tok.decode(ids[1:])
                assert text.startswith(SYSTEM), text[:60]  # every piece keeps the system prompt
                after = text[len(SYSTEM) :].lstrip()
                assert after.startswith("Human:"), after[:40]  # and opens with a question
                trained = [t for t, lab in zip(ids, labels, strict=True) if lab != -100]
                decoded = tok.decode(trained, skip_special_tokens=True)
                for k, reply in re.findall(r"(Answer (\d+): .*?garden\.)", decoded):
                    replies.append(k)
                    assert f"Question {reply}:" in text  # its question is in the same piece
    want = [exchange(k)[1]["content"] for k in range(6)]
    assert sorted(replies) == sorted(want)  # each reply trained exactly once
