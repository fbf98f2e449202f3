"""Masking (BOS + source + target + EOS), special tokens by id, chat templates, tokenizer hash."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from langgraft.data.sources import BAD_FILE, BAD_ROW, JSON_ROW, TEXT_ROW
from langgraft.data.tokenize import Encoder, EncoderSpec, tokenizer_hash
from langgraft.errors import UserError
from langgraft.templates import get_template

CHAT_SPECIALS = [
    "<|im_start|>",
    "<|im_end|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]


@pytest.fixture(scope="module")
def tok512(shared_data: Path) -> Path:
    return shared_data / "models" / "stories260K" / "tok512.model"


@pytest.fixture(scope="module")
def chat_tokenizer_dir(tok512: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tok512 plus the special tokens of the llama3 and chatml templates, as a HF directory."""
    from langgraft.tokenizer.hf import load_tokenizer

    tok = load_tokenizer(tok512)
    tok.add_special_tokens({"additional_special_tokens": CHAT_SPECIALS})
    out = tmp_path_factory.mktemp("chat_tok")
    tok.save_pretrained(out)
    return out


def _encoder(tok: Path, kind: str = "pretrain", template: str | None = None) -> Encoder:
    return Encoder(EncoderSpec(str(tok), kind, None, False, ("lbl",), template))


def test_source_is_masked_target_and_eos_are_trained(llama2_model: Path) -> None:
    enc = _encoder(llama2_model)
    tok = enc.tokenizer
    row = b'{"source": "Question: why?", "target": " Because.", "category": "qa"}'
    out = enc.encode([(0, 1, JSON_ROW, row)])
    # the row is tokenized whole (the target alone would start with a dummy-prefix "▁")
    src = tok("Question: why?", add_special_tokens=False).input_ids
    whole = tok("Question: why? Because.", add_special_tokens=False).input_ids
    assert whole[: len(src)] == src
    assert out.ids.tolist() == [tok.bos_token_id, *whole, tok.eos_token_id]
    assert out.mask.tolist() == [0] * (1 + len(src)) + [1] * (len(whole) - len(src) + 1)
    assert out.categories == ["qa"] and out.lengths == [len(out.ids)]


def test_literal_special_token_text_stays_text(llama2_model: Path) -> None:
    enc = _encoder(llama2_model)
    out = enc.encode([(0, 1, TEXT_ROW, "a <s> b </s> <unk>")])
    inner = out.ids[1:-1].tolist()
    assert out.ids[0] == 1 and out.ids[-1] == 2
    assert not {0, 1, 2} & set(inner), "special ids only where inserted"


def test_empty_target_is_filtered_and_problems_keep_input_order(tok512: Path) -> None:
    enc = _encoder(tok512)
    items = [
        (0, 1, JSON_ROW, b'{"source": "s", "target": "", "category": "c"}'),
        (0, 2, JSON_ROW, b"not json"),
        (0, 3, TEXT_ROW, "fine"),
        (0, 4, BAD_ROW, ("invalid_utf8", "bad byte")),
        (1, 0, BAD_FILE, ("empty_file", "empty")),
    ]
    out = enc.encode(items)
    assert out.rows == 4
    assert [(p[1], p[2], p[4]) for p in out.problems] == [
        (1, "empty_target", False),
        (2, "malformed_json", False),
        (4, "invalid_utf8", False),
        (0, "empty_file", True),
    ]
    assert out.categories == ["lbl"] and int(out.mask.sum()) == len(out.ids) - 1


def test_tokenizer_hash_is_sha256_of_the_defining_file(
    tok512: Path, chat_tokenizer_dir: Path
) -> None:
    assert tokenizer_hash(tok512) == hashlib.sha256(tok512.read_bytes()).hexdigest()
    expected = hashlib.sha256((chat_tokenizer_dir / "tokenizer.json").read_bytes()).hexdigest()
    assert tokenizer_hash(chat_tokenizer_dir) == expected
    with pytest.raises(UserError, match="no tokenizer.json"):
        tokenizer_hash(chat_tokenizer_dir.parent)


CONVO = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye"},
    {"role": "assistant", "content": "See you."},
]


@pytest.mark.parametrize("name", ["llama2", "llama3", "chatml"])
def test_chat_loss_only_on_assistant_content_and_end_of_turn(
    name: str, chat_tokenizer_dir: Path
) -> None:
    enc = _encoder(chat_tokenizer_dir, "chat", name)
    tok, template = enc.tokenizer, get_template(name)
    import json

    line = json.dumps({"messages": CONVO, "category": "chat"}).encode()
    out = enc.encode([(0, 1, JSON_ROW, line)])
    segments = template.encode(CONVO, tok)
    # the batched encoder and the template agree token for token
    assert out.ids.tolist() == [i for ids, _ in segments for i in ids]
    assert out.mask.tolist() == [int(t) for ids, t in segments for _ in ids]
    trained = out.ids[out.mask.astype(bool)].tolist()
    stop = template.stop_token_ids(tok)[0]
    replies = [
        tok(m["content"], add_special_tokens=False).input_ids
        for m in CONVO
        if m["role"] == "assistant"
    ]
    assert trained == replies[0] + [stop] + replies[1] + [stop]
    assert out.mask[0] == 0
    # generation prompt = the conversation so far + assistant header, never trained text
    prompt = template.render_prompt(CONVO[:2], tok)
    assert prompt == out.ids[: len(prompt)].tolist()


def test_chat_templates_need_their_special_tokens(tok512: Path) -> None:
    with pytest.raises(UserError, match="<\\|im_start\\|>"):
        _encoder(tok512, "chat", "chatml")
    _encoder(tok512, "chat", "llama2")  # only BOS/EOS needed


def test_chat_rejects_raw_text_rows(tok512: Path) -> None:
    out = _encoder(tok512, "chat", "llama2").encode([(0, 1, TEXT_ROW, "plain")])
    assert [p[2] for p in out.problems] == ["wrong_type"]
    assert len(out.ids) == 0 and isinstance(out.ids, np.ndarray)


def test_sentencepiece_backend_is_checked_against_tokenizer_json(tok512: Path, monkeypatch) -> None:
    from langgraft.data.textenc import TextEncoder

    enc = _encoder(tok512)
    assert isinstance(enc.text, TextEncoder) and enc.text.name == "sentencepiece"
    assert enc.light_spec() is not None
    texts = ["hello world", "a cat sat", "once upon a time"]
    # a disagreement on the first batch falls back to tokenizer.json, with the right ids
    real = enc.text.sp.encode
    monkeypatch.setattr(enc.text.sp, "encode", lambda t, **kw: [np.array([7], np.int32) for _ in t])
    assert [x.tolist() for x in enc.text.encode(texts)] == enc.text.encode_hf(texts)
    assert enc.text.name == "tokenizer.json" and enc.light_spec() is None
    # once verified, a later disagreement is an error, not silent drift
    enc2 = _encoder(tok512)
    assert [x.tolist() for x in enc2.text.encode(texts)] == enc2.text.encode_hf(texts)
    monkeypatch.setattr(
        enc2.text.sp, "encode", lambda t, **kw: [np.array([7], np.int32) for _ in t]
    )
    with pytest.raises(UserError, match="--tokenizer-backend hf"):
        enc2.text.encode(texts)
    with pytest.raises(UserError, match="--tokenizer-backend hf"):
        enc2.text.check_samples([("hello world", [7])])
    assert real  # the unpatched encoder is used by every other test


def test_hf_backend_when_asked(tok512: Path) -> None:
    enc = Encoder(EncoderSpec(str(tok512), "pretrain", None, False, ("l",), None, "hf"))
    assert enc.text.name == "tokenizer.json" and enc.light_spec() is None


@functools.cache
def _cached_encoder(tok: str) -> Encoder:
    return Encoder(EncoderSpec(tok, "pretrain", None, False, ("lbl",), None))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=400))
def test_fuzz_files_through_reader_and_encoder(data: bytes, tmp_path: Path, tok512: Path) -> None:
    """Arbitrary bytes as a jsonl or txt file: rows are encoded or rejected with a known reason
    and a real line number; nothing else escapes."""
    from langgraft.data import rows
    from langgraft.data.sources import discover_inputs, read_items

    enc = _cached_encoder(str(tok512))
    for name in ("f.jsonl", "f.txt"):
        path = tmp_path / name
        path.write_bytes(data)
        files = discover_inputs([str(path)])
        out = enc.encode(list(read_items(files)))
        n_lines = data.count(b"\n") + 1
        reasons = rows.BAD_INPUT_REASONS + rows.FILTERED_REASONS + rows.FILE_REASONS
        for _, line, reason, message, _ in out.problems:
            assert reason in reasons and message and 0 <= line <= n_lines
        assert out.rows == files[0].rows
        assert len(out.categories) + sum(1 for p in out.problems if not p[4]) == out.rows
        assert (out.mask[np.cumsum([0] + out.lengths[:-1])] == 0).all() if out.lengths else True
