"""Hugging Face views of a SentencePiece BPE model: `tokenizer.json` built from the proto, the
tokenizer directory that `AutoTokenizer.from_pretrained` loads, and one loader for every stage.

Why not let transformers convert `tokenizer.model` itself: transformers 5.x orders BPE merges by
piece id, not by score, and so disagrees with sentencepiece on many lines even for unmodified
LLaMA-2. Here merges are ranked by the score of the piece they produce, which is exactly
sentencepiece's rule (highest-scoring adjacent pair first, leftmost on ties); with distinct scores
the two implementations agree id for id (tested on the real corpora).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from langgraft.errors import UserError
from langgraft.tokenizer.spmodel import (
    BYTE,
    CONTROL,
    NORMAL,
    UNKNOWN,
    USER_DEFINED,
    WS,
    ModelProto,
    load_proto,
    save_proto,
)


def bpe_vocab_and_merges(proto: ModelProto) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary {piece: id} and merges ranked as sentencepiece applies them."""
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    ranked: list[tuple[float, int, int, str, str]] = []
    for i, p in enumerate(proto.pieces):
        if p.type != NORMAL or len(p.piece) < 2:
            continue
        for cut in range(1, len(p.piece)):
            left, right = p.piece[:cut], p.piece[cut:]
            if left in vocab and right in vocab:
                ranked.append((-p.score, i, cut, left, right))
    ranked.sort()
    return vocab, [(left, right) for *_, left, right in ranked]


def build_fast_tokenizer(proto: ModelProto) -> Any:
    """A `tokenizers.Tokenizer` equivalent to the sentencepiece model (LLaMA conventions)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, processors

    vocab, merges = bpe_vocab_and_merges(proto)
    ts = proto.trainer_spec
    unk = proto.pieces[ts.unk_id].piece
    tok = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            unk_token=unk,
            fuse_unk=True,
            byte_fallback=True,
            dropout=None,
        )
    )
    steps = []
    if proto.normalizer_spec.remove_extra_whitespaces:
        # sentencepiece (identity normalizer) folds runs of U+0020 and drops them at both ends;
        # tabs and newlines are not whitespace to it.
        steps += [
            normalizers.Replace(Regex(" {2,}"), " "),
            normalizers.Replace(Regex(r"\A | \z"), ""),
        ]
    if proto.normalizer_spec.add_dummy_prefix:
        steps.append(normalizers.Prepend(WS))
    steps.append(normalizers.Replace(" ", WS))
    tok.normalizer = normalizers.Sequence(steps)
    decode = [decoders.Replace(WS, " "), decoders.ByteFallback(), decoders.Fuse()]
    if proto.normalizer_spec.add_dummy_prefix:
        decode.append(decoders.Strip(content=" ", left=1, right=0))
    tok.decoder = decoders.Sequence(decode)
    specials = [
        AddedToken(p.piece, special=True, normalized=False)
        for p in proto.pieces
        if p.type in (CONTROL, UNKNOWN)
    ]
    tok.add_special_tokens(specials)
    user = [
        AddedToken(p.piece, special=False, normalized=False)
        for p in proto.pieces
        if p.type == USER_DEFINED
    ]
    if user:
        tok.add_tokens(user)
    if ts.bos_id >= 0:
        bos = proto.pieces[ts.bos_id].piece
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0",
            pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
            special_tokens=[(bos, ts.bos_id)],
        )
    # Raw text such as WikiText's literal "<unk>" stays text, as in sentencepiece.
    tok.encode_special_tokens = True
    return tok


def _special(proto: ModelProto, idx: int) -> str | None:
    return proto.pieces[idx].piece if 0 <= idx < len(proto.pieces) else None


def write_hf_tokenizer(
    proto: ModelProto, out_dir: str | Path, model_max_length: int | None = None
) -> None:
    """Write tokenizer.model, tokenizer.json, tokenizer_config.json, special_tokens_map.json.

    `model_max_length` is the limit of the model the tokenizer serves; None (a bare
    tokenizer.model, no model known) writes none, so transformers assumes no limit instead of
    a made-up one that warns on every longer text (issue 22)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_proto(proto, out / "tokenizer.model")
    build_fast_tokenizer(proto).save(str(out / "tokenizer.json"))
    ts = proto.trainer_spec
    specials = {
        "bos_token": _special(proto, ts.bos_id),
        "eos_token": _special(proto, ts.eos_id),
        "unk_token": _special(proto, ts.unk_id),
    }
    specials = {k: v for k, v in specials.items() if v is not None}
    added = {
        str(i): {
            "content": p.piece,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, p in enumerate(proto.pieces)
        if p.type in (CONTROL, UNKNOWN)
    }
    config = {
        # The generic class loads tokenizer.json verbatim. LlamaTokenizer in transformers 5.x
        # rebuilds the pre-tokenizer in code, which we do not want to depend on.
        "tokenizer_class": "TokenizersBackend",
        **specials,
        "pad_token": None,
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        # Raw text such as WikiText's literal "<unk>" must stay text, as in sentencepiece.
        "split_special_tokens": True,
        "added_tokens_decoder": added,
    }
    if model_max_length is not None:
        config["model_max_length"] = model_max_length
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    (out / "special_tokens_map.json").write_text(json.dumps(specials, indent=2, ensure_ascii=False))


def model_max_length_of(model_dir: str | Path) -> int | None:
    """The length limit of the model (or tokenizer) in `model_dir`: its tokenizer_config.json's
    model_max_length when that is a real limit, else config.json's max_position_embeddings,
    else None. transformers writes 1e30 for "no limit"; that is not one."""
    d = Path(model_dir)
    for name, key in (("tokenizer_config.json", "model_max_length"),
                      ("config.json", "max_position_embeddings")):  # fmt: skip
        try:
            value = json.loads((d / name).read_text("utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            continue  # absent or unreadable: the next source, or no limit
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 10**8:
            return value
    return None


def load_tokenizer(src: str | Path, pattern: str | None = None) -> Any:
    """The one way every stage loads a tokenizer: a HF directory, a bare SentencePiece
    `tokenizer.model`, or a tiktoken ranks file (Meta's Llama-3 file; see `bytelevel`).

    A directory with `tokenizer.json` is loaded with `AutoTokenizer` (local files only). A bare
    SentencePiece file gets a fast tokenizer built from its proto (never transformers' own
    conversion, which disagrees with sentencepiece; see the module docstring).
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    p = Path(src)
    if p.is_dir() and (p / "tokenizer.json").is_file():
        try:
            return _quiet_about_length(AutoTokenizer.from_pretrained(str(p), local_files_only=True))
        except Exception as e:  # tokenizers raises a bare Exception for a corrupt tokenizer.json
            from langgraft.model.checks import tokenizer_load_error

            raise tokenizer_load_error(p, e) from None
    from langgraft.tokenizer.bytelevel_source import load_bytelevel_source, looks_like_tiktoken

    if p.is_file() and looks_like_tiktoken(p):
        bl = load_bytelevel_source(p, pattern)
        specials = bl.side_files.get("special_tokens_map.json", {})
        return _quiet_about_length(
            PreTrainedTokenizerFast(
                tokenizer_object=bl.tokenizer(), clean_up_tokenization_spaces=False, **specials
            )
        )
    proto = load_proto(p)
    ts = proto.trainer_spec
    tok = PreTrainedTokenizerFast(
        tokenizer_object=build_fast_tokenizer(proto),
        bos_token=_special(proto, ts.bos_id),
        eos_token=_special(proto, ts.eos_id),
        unk_token=_special(proto, ts.unk_id),
        split_special_tokens=True,
        clean_up_tokenization_spaces=False,
    )
    if not len(tok):
        raise UserError(f"{p}: tokenizer has an empty vocabulary")
    return _quiet_about_length(tok)


def _quiet_about_length(tok: Any) -> Any:
    """Silence transformers' "sequence length is longer than the specified maximum" warning.

    langgraft tokenizes whole documents and then cuts them into windows that fit the model
    (eval text, prepare, self-replay) or checks the limit itself (generate, chat, eval mc), so
    the warning fired on every long document and never on a real overflow. The saved
    tokenizer_config.json keeps the model's limit for other readers."""
    tok.deprecation_warnings["sequence-length-is-longer-than-the-specified-maximum"] = True
    return tok


def byte_piece_ids(proto: ModelProto) -> list[int]:
    return [i for i, p in enumerate(proto.pieces) if p.type == BYTE]
