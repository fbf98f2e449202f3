"""Long documents are encoded in bounded pieces (issue 15: one 54 MB document peaked at 8.5 GB in
`tokenizer report`, as one tokenizer call holds ~100 bytes per character of its output)."""

from __future__ import annotations

from pathlib import Path

import pytest

from langgraft.tokenizer import report as rep
from langgraft.tokenizer.hf import load_tokenizer

pytestmark = pytest.mark.timeout(300)


def test_report_encodes_a_long_document_in_bounded_pieces(
    llama2_model: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (shared_data / "corpus" / "zh" / "hongloumeng.txt").read_text("utf-8")[:350_000]
    tok = load_tokenizer(llama2_model)
    monkeypatch.setattr(rep, "MAX_BATCH_CHARS", 150_000)
    calls: list[list[int]] = []

    class Recording:
        """The real tokenizer, recording the length of every text it is given."""

        def get_vocab(self) -> dict[str, int]:
            return tok.get_vocab()

        def __len__(self) -> int:
            return len(tok)

        def __call__(self, batch: list[str], **kw: object) -> object:
            calls.append([len(t) for t in batch])
            return tok(batch, **kw)

    m = rep.measure(Recording(), [text, "short"], 1024, "long")
    assert max(n for c in calls for n in c) <= rep.MAX_PIECE_CHARS
    assert max(sum(c) for c in calls) <= 150_000 and len(calls) >= 3
    assert sum(map(sum, calls)) == len(text) + 5  # every character encoded exactly once
    assert m["samples"] == 2 and m["characters"] == len(text) + 5
    whole = sum(len(ids) for ids in tok([text, "short"], add_special_tokens=False)["input_ids"])
    cuts = len(list(rep._pieces(text))) - 1
    assert cuts >= 3
    # a cut after a newline can only change the first token of the next piece
    assert abs(m["tokens"] - whole) <= 2 * cuts


def test_prepare_checks_a_long_text_on_a_prefix(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`prepare` encodes with sentencepiece and checks tokenizer.json agrees; the check must not
    hand a whole long document to tokenizer.json (that was the 6.8 GB peak)."""
    from langgraft.data import textenc

    path = shared_data / "models" / "stories260K" / "tok512.model"
    enc = textenc.TextEncoder(load_tokenizer(path), path)
    assert enc.sp is not None
    real, seen = enc.encode_hf, []

    def recording(texts: list[str]) -> list[list[int]]:
        seen.extend(map(len, texts))
        return real(texts)

    monkeypatch.setattr(enc, "encode_hf", recording)
    text = (shared_data / "corpus" / "en" / "tinyshakespeare.txt").read_text("utf-8")[:300_000]
    ids = enc.encode([text, "A short one."])
    assert enc.verified and seen and max(seen) <= textenc.MAX_CHECK_CHARS
    assert [x.tolist() for x in ids] == real([text, "A short one."])  # still exact
