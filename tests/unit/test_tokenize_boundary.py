"""A source/target row is tokenized whole; the label mask comes from the tokens' offsets (issue 22).

Both tokenizer families: sentencepiece (the real LLaMA-2 model, and stories260K's tok512, whose
normaliser removes extra whitespace), the same LLaMA-2 model through tokenizer.json (offsets
from `tokenizers`, where the dummy prefix "▁" sits on the first character), and Llama-3's
byte-level BPE. The reference for every row is the tokenizer's own encoding of `source + target`
as one text, and its own offsets (`return_offsets_mapping`), never langgraft's code.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from langgraft.data.sources import JSON_ROW
from langgraft.data.tokenize import Encoder, EncoderSpec

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
TOKENIZERS = {
    "llama2": (DATA / "tokenizers/llama2/tokenizer.model", "auto"),
    "llama2-json": (DATA / "tokenizers/llama2/tokenizer.model", "hf"),
    "tok512": (DATA / "models/stories260K/tok512.model", "auto"),
    "llama3": (DATA / "tokenizers/llama3/tokenizer.model", "auto"),
}

# Rows in Chinese and English, and the edges: an empty source, a source that ends with a space
# (the token " Blue" would straddle), a target that starts with one, newlines on both sides, a
# combining accent, emoji (byte-level splits one character into several tokens), "<s>" as text.
ROWS = [
    ("问：天空是什么颜色？答：", "蓝色。"),
    ("", "蓝色。"),
    ("Question: what colour is the sky?\nAnswer:", " Blue."),
    ("Question: what colour is the sky?\nAnswer: ", "Blue."),
    ("Translate: ", "天空"),
    ("第一回 甄士隐梦幻识通灵\n", "\n贾雨村风尘怀闺秀"),
    ("a\n\n", "\n\nb"),
    ("cafe", "\u0301 au lait"),
    ("emoji ", "😀😀 ok"),
    ("literal <s> stays text ", "</s>"),
    ("  leading and trailing  ", "  spaces  "),
    ("答：", "A"),
]


@functools.lru_cache(maxsize=8)
def _encoder(name: str) -> Encoder:
    path, backend = TOKENIZERS[name]
    return Encoder(EncoderSpec(str(path), "pretrain", None, False, ("lbl",), backend=backend))


def _encode(enc: Encoder, rows: list[tuple[str, str]]) -> object:
    items = [
        (0, k + 1, JSON_ROW, json.dumps({"source": s, "target": t, "category": "c"}).encode())
        for k, (s, t) in enumerate(rows)
    ]
    return enc.encode(items)


def _reference(enc: Encoder, source: str, target: str) -> tuple[list[int], list[int], bool]:
    """The whole row's ids; from the tokenizer's own offsets, the trained flag of each (a token
    is trained iff it begins at or after the target's first character); and whether the last
    untrained token ends inside the target (it straddles the boundary)."""
    got = enc.tokenizer(source + target, add_special_tokens=False, return_offsets_mapping=True)
    offsets, cut = got["offset_mapping"], len(source)
    trained = [int(a >= cut) for a, _ in offsets]
    before = trained.index(1) if 1 in trained else len(trained)
    return got["input_ids"], trained, before > 0 and offsets[before - 1][1] > cut


def _random_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """Rows cut at every kind of place: inside words, after spaces, between CJK characters,
    inside "\\r\\n" and runs of newlines."""
    alphabet = [" ", "  ", "\n", "\r\n", "\t", "the", "sky", "Blue", "'s", "42", ".", ":", "：",
                "。", "天空", "蓝", "色", "红楼梦", "é", "\u0301", "😀", "<s>"]  # fmt: skip
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        text = "".join(rng.choice(alphabet, size=int(rng.integers(2, 14))))
        cut = int(rng.integers(1, len(text)))
        rows.append((text[:cut], text[cut:]))
    return rows


@pytest.mark.parametrize("name", list(TOKENIZERS))
def test_rows_are_tokenized_whole_and_masked_by_offsets(name: str) -> None:
    enc = _encoder(name)
    rows = ROWS + _random_rows(300, seed=1)
    out = _encode(enc, rows)
    kept, straddled = {}, {line for _, line, _ in out.straddled}
    offset = 0
    problems = {p[1]: p[3] for p in out.problems}
    accepted = [k for k in range(len(rows)) if k + 1 not in problems]
    for k, n in zip(accepted, out.lengths, strict=True):
        kept[k] = (out.ids[offset : offset + n].tolist(), out.mask[offset : offset + n].tolist())
        offset += n
    assert offset == len(out.ids)
    for k, (source, target) in enumerate(rows):
        ids, trained, straddles = _reference(enc, source, target)
        if k not in kept:  # rejected: nothing of the target has a token of its own
            assert sum(trained) == 0, (source, target)
            assert straddles == ("inside a token" in problems[k + 1]), (source, target)
            continue
        assert (k + 1 in straddled) == straddles, (source, target)
        got_ids, got_mask = kept[k]
        assert got_ids == [enc.bos, *ids, enc.eos], (source, target)
        assert got_mask == [0, *trained, 1], (source, target)
    assert straddled, "the rows include a token that straddles the boundary"


def test_no_dummy_prefix_at_the_boundary() -> None:
    """The issue's row: LLaMA-2 trained "▁" as the first target token (the target was
    tokenized on its own); the whole row has none."""
    enc = _encoder("llama2")
    out = _encode(enc, [("问：天空是什么颜色？答：", "蓝色。")])
    trained = out.ids[out.mask == 1].tolist()
    assert enc.tokenizer.decode(trained[:-1]) == "蓝色。"
    assert enc.tokenizer.convert_ids_to_tokens(trained[0]) != "▁"
    ids = enc.tokenizer("问：天空是什么颜色？答：蓝色。", add_special_tokens=False).input_ids
    assert out.ids.tolist() == [enc.bos, *ids, enc.eos] and not out.straddled


@pytest.mark.parametrize("name", ["llama2", "llama2-json", "llama3"])
def test_a_token_across_the_boundary_is_not_trained_and_is_reported(name: str) -> None:
    """A row "Answer: " + "Blue.": its token " Blue" holds a source space, so it is not
    trained (no source text is trained on) and the row is reported; a target entirely inside
    such a token leaves the row with nothing to train on: rejected as empty_target, saying why."""
    enc = _encoder(name)
    out = _encode(enc, [("Answer: ", "Blue."), ("Answer: ", "Blue")])
    tokens = enc.tokenizer.convert_ids_to_tokens(out.ids.tolist())
    assert [t for t, m in zip(tokens, out.mask, strict=True) if m][:-1] == ["."]
    assert out.straddled == [(0, 1, "a token that holds ' ' + 'Blue'")]
    assert [(p[1], p[2]) for p in out.problems] == [(2, "empty_target")]
    assert "inside a token that holds ' ' + 'Blue'" in out.problems[0][3]


def test_workers_encode_rows_as_the_main_process(tmp_path: Path) -> None:
    """A worker process's sentencepiece-only encoder cuts rows exactly as the main process."""
    from langgraft.data.textenc import LightTextEncoder

    enc = _encoder("llama2")
    light = Encoder(enc.spec, enc.light_spec())
    assert isinstance(light.text, LightTextEncoder)
    rows = ROWS + _random_rows(100, seed=2)
    a, b = _encode(enc, rows), _encode(light, rows)
    assert a.ids.tolist() == b.ids.tolist() and a.mask.tolist() == b.mask.tolist()
    assert a.straddled == b.straddled and a.problems == b.problems


@pytest.mark.parametrize("name", ["tok512", "llama3"])
def test_a_long_row_is_cut_at_the_boundary_as_a_short_one(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row longer than LONG_TEXT_CHARS is streamed window by window; its ids and mask are the
    short path's, wherever the boundary falls (in the first window, a later one, at a cut), and
    a straddling token is reported from the window that holds it."""
    from langgraft.data import textenc
    from langgraft.data import tokenize as tk

    enc = _encoder(name)
    lines = "".join(f"line {k} of the story\n" for k in range(40))
    cases = [("Answer: ", "Blue sky.\n" + lines), (lines, "蓝色。\n" + lines),
             (lines[:-1], "\n" + lines), (lines + "Answer: ", "Blue\n" + lines)]  # fmt: skip
    for source, target in cases:
        short = _encode(enc, [(source, target)])
        monkeypatch.setattr(tk, "LONG_TEXT_CHARS", 64)
        monkeypatch.setattr(textenc, "LONG_TEXT_CHARS", 64)
        assert not _encode(enc, [(source, target)]).lengths[0]  # now the long path
        pieces, at = enc.long_document(source, target)
        pieces = list(pieces)
        monkeypatch.undo()
        assert len(pieces) > 4
        assert np.concatenate([p[0] for p in pieces]).tolist() == short.ids.tolist()
        assert np.concatenate([p[1] for p in pieces]).tolist() == short.mask.tolist()
        assert bool(at.straddled) == bool(short.straddled), (source[-10:], target[:10])


def test_prepare_counts_and_warns_about_rows_cut_inside_a_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from langgraft.data.config import PrepareConfig
    from langgraft.data.prepare import prepare

    src = tmp_path / "qa.jsonl"
    rows = [{"source": "Answer: ", "target": "Blue.", "category": "en"},
            {"source": "Answer:", "target": " Blue.", "category": "en"},
            {"source": "问：", "target": "蓝色。", "category": "zh"}]  # fmt: skip
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    with caplog.at_level(logging.WARNING):
        result = prepare(PrepareConfig(input=[str(src)], tokenizer=TOKENIZERS["llama2"][0],
                                       out=tmp_path / "out", max_length=64, progress=False))  # fmt: skip
    counts = result.manifest["counts"]
    assert counts["rows"]["packed"] == 3 and counts["rows"]["boundary_inside_token"] == 1
    assert "1 row(s) have a token that begins in the source" in caplog.text
    assert "qa.jsonl:1: a token that holds ' ' + 'Blue'" in caplog.text
