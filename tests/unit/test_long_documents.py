"""Long documents are encoded in bounded pieces (issue 15: one 54 MB document peaked at 8.5 GB in
`tokenizer report`, as one tokenizer call holds ~100 bytes per character of its output)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
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


# --- prepare: a long document streams through in windows (issue 15: 6.8 GB at 54 MB) ---------

WINDOW = 16_384  # small, so that ~2M characters of real text get ~120 cuts in every context


@pytest.fixture(scope="module")
def long_text(shared_data: Path) -> str:
    """Real Chinese and English text as one document: 红楼梦 (chapter breaks, indented
    paragraphs, tabs, full-width spaces) then tinyshakespeare (speaker lines)."""
    zh = (shared_data / "corpus/zh/hongloumeng.txt").read_text("utf-8")
    en = (shared_data / "corpus/en/tinyshakespeare.txt").read_text("utf-8")
    return zh + "\n" + en[:400_000]


@pytest.fixture(scope="module")
def tok_zh(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """stories260K's tok512 expanded with Chinese-LLaMA's pieces by the real CLI."""
    from langgraft.__main__ import main

    out = tmp_path_factory.mktemp("tokzh") / "tok"
    assert main(["tokenizer", "expand", "--source", str(shared_data / "models/stories260K/tok512.model"),
                 "--merge-sp", str(shared_data / "tokenizers/chinese-llama-sp/chinese_sp.model"),
                 "--out", str(out)]) == 0  # fmt: skip
    return out


@functools.lru_cache(maxsize=8)
def _text_encoder(tok: Path, backend: str = "auto") -> object:
    """One per tokenizer for the module (loading Llama-3's takes seconds); tests patch its
    attributes only through monkeypatch, which restores them."""
    from langgraft.data import textenc

    return textenc.TextEncoder(load_tokenizer(tok), tok, backend)


@pytest.mark.parametrize("which", ["tok512", "tok_zh", "llama3"])
def test_a_long_text_in_windows_has_the_ids_of_the_whole_text(
    which: str, long_text: str, shared_data: Path, request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """sentencepiece (tok512; tok512 + Chinese-LLaMA pieces) and tokenizer.json (Llama-3's
    byte-level BPE): the windows' ids, concatenated, are the whole text's, id for id."""
    from langgraft.data import textenc

    tok = {
        "tok512": shared_data / "models/stories260K/tok512.model",
        "tok_zh": request.getfixturevalue("tok_zh") if which == "tok_zh" else None,
        "llama3": shared_data / "tokenizers/llama3/tokenizer.model",
    }[which]
    enc = _text_encoder(tok)
    assert enc.name == ("tokenizer.json" if which == "llama3" else "sentencepiece")
    monkeypatch.setattr(textenc, "LONG_TEXT_CHARS", WINDOW)
    seen: list[int] = []
    if enc.sp is None:
        real_hf = enc.encode_hf
        monkeypatch.setattr(enc, "encode_hf", lambda t: seen.extend(map(len, t)) or real_hf(t))
    windows = list(enc.encode_long(long_text))
    whole = enc.sp.encode(long_text) if enc.sp is not None else real_hf([long_text])[0]
    assert len(windows) > 50
    assert np.concatenate(windows).tolist() == whole
    if enc.sp is None:
        assert max(seen) <= 2 * WINDOW  # never the whole text in one tokenizer.json call


def test_windows_only_where_the_cut_is_provably_exact(
    shared_data: Path, tok_zh: Path, long_text: str
) -> None:
    """A model this cannot prove exact for is encoded whole: a unigram model with NFKC rules
    (chinese_sp) and tokenizer.json without the Llama-3 pre-tokenizer (tok_zh's Metaspace).
    And the rule is not vacuous: a cut after "\\n" before a space changes tok512's ids
    (remove_extra_whitespaces strips the space at the start of the second window)."""
    from langgraft.data import textenc

    model = shared_data / "tokenizers/chinese-llama-sp/chinese_sp.model"
    assert textenc._sp_splits_at_newlines(model) is None
    hf = _text_encoder(tok_zh, "hf")
    assert hf.sp is None and not hf.hf_splits
    assert len(list(hf.encode_long(long_text[:300_000]))) == 1
    enc = _text_encoder(shared_data / "models/stories260K/tok512.model")
    text = "Once upon a time\n there was"
    assert enc.sp.encode(text) != enc.sp.encode(text[:17]) + enc.sp_rest.encode(text[17:])
    assert enc.sp.encode(text) == enc.sp.encode(text[:16]) + enc.sp_rest.encode(text[16:])
    # by hand: windows of 4 characters, never before the " " of "\n b" (the first window has
    # no cut, so the first one after it)
    text = "a\n b\n\nc\n\td\n" * 3
    assert textenc.safe_cuts(text, 4, strict=False) == [5, 8, 11, 16, 19, 22, 27, 30]
    # strict (tokenizer.json): never where the whitespace that follows holds a newline
    assert textenc.safe_cuts(text, 4, strict=True) == [2, 6, 8, 11, 13, 17, 19, 22, 24, 28, 30]
    assert textenc.safe_cuts("ab\n \ncd\n  ef\n", 2, strict=True) == [5, 8]
    assert textenc.safe_cuts("no newline at all" * 10, 4, strict=False) == []


@pytest.mark.parametrize("which", ["tok512", "llama3"])
def test_windows_are_exact_on_adversarial_whitespace(
    which: str, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random texts made of the characters the proofs turn on (spaces, tabs, CR, LF, letters,
    digits, punctuation, a contraction, CJK), cut into windows of 8: every text's ids are the
    whole text's."""
    from langgraft.data import textenc

    tok = {"tok512": shared_data / "models/stories260K/tok512.model",
           "llama3": shared_data / "tokenizers/llama3/tokenizer.model"}[which]  # fmt: skip
    enc = _text_encoder(tok)
    monkeypatch.setattr(textenc, "LONG_TEXT_CHARS", 8)
    alphabet = [
        " ",
        "  ",
        "\t",
        "\n",
        "\n",
        "\r\n",
        "a",
        "Lily",
        "7",
        "42",
        "!",
        "'s",
        "。",
        "红楼",
    ]
    rng = np.random.default_rng(0)
    whole_enc = enc.sp.encode if enc.sp is not None else (lambda t: enc.encode_hf([t])[0])
    cuts = 0
    for _ in range(300):
        text = "".join(rng.choice(alphabet, size=int(rng.integers(5, 40))))
        windows = list(enc.encode_long(text))
        cuts += len(windows) - 1
        assert np.concatenate(windows).tolist() == whole_enc(text), repr(text)
    assert cuts > 300


def _prepare_long(tmp_path: Path, name: str, tok: Path, rows: list[dict]) -> Path:
    from langgraft.data.config import PrepareConfig
    from langgraft.data.prepare import prepare

    src = tmp_path / "doc.jsonl"  # one input for both runs: the manifests name it
    if not src.exists():
        src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    out = tmp_path / name
    prepare(PrepareConfig(input=[f"zh={src}"], tokenizer=tok, out=out, max_length=256,
                          num_bins=2, progress=False))  # fmt: skip
    return out


@pytest.mark.parametrize("which", ["tok512", "llama3"])
def test_prepare_streams_a_long_document_and_writes_the_same_dataset(
    which: str, tmp_path: Path, shared_data: Path, long_text: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """`prepare pretrain` never hands a tokenizer, nor the packer, more than about one window
    of a long document, and writes byte for byte the dataset of encoding it whole (the path
    every shorter row takes), with the same accounting."""
    from langgraft.data import pack, textenc
    from langgraft.data import tokenize as tk

    tok = {"tok512": shared_data / "models/stories260K/tok512.model",
           "llama3": shared_data / "tokenizers/llama3/tokenizer.model"}[which]  # fmt: skip
    text = long_text[:400_000]
    rows = [
        {"target": "A short row before.", "category": "en"},
        {"target": text, "category": "zh"},
        {"source": "问：", "target": text[1000:200_000], "category": "zh"},
        {"target": "A short row after.", "category": "en"},
    ]
    # raising=False: on code without windows the test fails on what it checks, not here
    monkeypatch.setattr(tk, "LONG_TEXT_CHARS", 1 << 40, raising=False)  # every row encoded whole
    whole = _prepare_long(tmp_path, "whole", tok, rows)

    calls, added = [], []
    real_hf, real_add = textenc.TextEncoder.encode_hf, pack.BestFitPacker.add
    import sentencepiece as spm

    real_sp = spm.SentencePieceProcessor.encode

    def sp_encode(self, text, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.extend(map(len, text) if isinstance(text, list) else [len(text)])
        return real_sp(self, text, *a, **kw)

    def hf_encode(self, texts):  # noqa: ANN001, ANN202
        calls.extend(map(len, texts))
        return real_hf(self, texts)

    def add(self, ids, mask, trained=None):  # noqa: ANN001, ANN202
        added.append(len(ids))
        return real_add(self, ids, mask, trained)

    monkeypatch.setattr(tk, "LONG_TEXT_CHARS", WINDOW, raising=False)
    monkeypatch.setattr(textenc, "LONG_TEXT_CHARS", WINDOW, raising=False)
    monkeypatch.setattr(spm.SentencePieceProcessor, "encode", sp_encode)
    monkeypatch.setattr(textenc.TextEncoder, "encode_hf", hf_encode)
    monkeypatch.setattr(pack.BestFitPacker, "add", add)
    streamed = _prepare_long(tmp_path, "streamed", tok, rows)
    assert calls and max(calls) <= 2 * WINDOW  # 400,000 characters before
    assert max(added) <= 256  # whole documents of ~400,000 tokens before

    m_whole = json.loads((whole / "manifest.json").read_text())
    m_streamed = json.loads((streamed / "manifest.json").read_text())
    assert m_streamed == m_whole
    c = m_streamed["counts"]
    assert c["rows"]["in"] == c["rows"]["packed"] == 4 and not c["rows"]["rejected"]
    assert c["tokens"]["in"] + c["tokens"]["overlap_added"] == c["tokens"]["out"]
    files = sorted(p.relative_to(whole) for p in whole.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(streamed) for p in streamed.rglob("*") if p.is_file())
    for f in files:
        if f.name not in ("config.json", ".langgraft-output"):  # they name the output directory
            assert (whole / f).read_bytes() == (streamed / f).read_bytes(), f
