"""Byte-level BPE sources (Llama-3 / GPT-4 family): reading and converting them.

A source is either a Hugging Face directory whose `tokenizer.json` has a BPE model with a
ByteLevel pre-tokenizer, or a tiktoken ranks file (`base64-token rank` per line). A ranks file is
converted with transformers' TikTokenConverter (every split of a token whose halves are tokens
becomes a merge, ranked by the token's rank, so the BPE model agrees with tiktoken id for id);
Meta's Llama-3 file is recognised by its sha256 and gets Llama-3's pre-tokenizer regex and its 256
special tokens (ids 128000-128255); any other ranks file needs --pattern.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langgraft.errors import UserError

log = logging.getLogger(__name__)

LLAMA3_SHA256 = "82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55"
# llama_models/llama3/tokenizer.py
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_NAMED = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
]
# The Llama-3.1 text models' list (Meta's HF release): 11 named, then reserved 2..246.
LLAMA3_SPECIALS = _LLAMA3_NAMED + [
    f"<|reserved_special_token_{i}|>" for i in range(2, 256 - len(_LLAMA3_NAMED) + 2)
]


@functools.cache
def byte_decoder() -> dict[str, int]:
    """GPT-2's printable-character alphabet for bytes, reversed (char -> byte)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}


def token_bytes(token: str) -> bytes:
    dec = byte_decoder()
    return bytes(dec[c] for c in token)


def looks_like_tiktoken(path: Path) -> bool:
    """A ranks file: its first line is `base64 integer`."""
    try:
        with open(path, "rb") as f:
            first = f.readline(4096).split()
    except OSError:
        return False
    if len(first) != 2 or not first[1].isdigit():
        return False
    try:
        base64.b64decode(first[0], validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """{token bytes: rank}; a malformed line is a UserError naming file:line."""
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            try:
                tok, rank = base64.b64decode(parts[0], validate=True), int(parts[1])
                if len(parts) != 2:
                    raise ValueError
            except (binascii.Error, ValueError, IndexError):
                raise UserError(
                    f"{path}:{n}: expected `base64-token rank`, got {line[:60]!r}"
                ) from None
            if tok in ranks:
                raise UserError(f"{path}:{n}: token {tok!r} listed twice")
            ranks[tok] = rank
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise UserError(f"{path}: ranks are not exactly 0..{len(ranks) - 1}")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise UserError(f"{path}: byte {missing[0]:#04x} has no token; not a byte-level BPE")
    return ranks


@dataclass
class ByteLevelSource:
    """A byte-level BPE tokenizer as tokenizer.json data plus the HF side files."""

    path: Path
    kind: str  # "tiktoken" or "tokenizer.json"
    data: dict[str, Any]  # the tokenizer.json content
    side_files: dict[str, Any] = field(default_factory=dict)  # tokenizer_config.json and the like
    pattern: str | None = None

    @property
    def vocab(self) -> dict[str, int]:
        return self.data["model"]["vocab"]

    def added_ids(self) -> dict[str, int]:
        return {t["content"]: t["id"] for t in self.data.get("added_tokens", [])}

    def size(self) -> int:
        """Number of ids (vocabulary plus added tokens)."""
        return max([*self.vocab.values(), *self.added_ids().values()]) + 1

    def tokenizer(self) -> Any:
        from tokenizers import Tokenizer

        return Tokenizer.from_str(json.dumps(self.data))


def is_bytelevel_source(path: Path) -> bool:
    p = Path(path)
    if p.is_dir():
        return (p / "tokenizer.json").is_file() and not (p / "tokenizer.model").is_file()
    return p.is_file() and looks_like_tiktoken(p)


def _has_bytelevel(node: Any) -> bool:
    if not isinstance(node, dict):
        return False
    if node.get("type") == "ByteLevel":
        return True
    return any(_has_bytelevel(x) for x in node.get("pretokenizers", []))


def from_tiktoken(path: Path, pattern: str | None) -> ByteLevelSource:
    from langgraft.fsutil import sha256_file

    sha = sha256_file(path)
    data, side, pattern = _convert_tiktoken(str(path), sha, pattern)
    return ByteLevelSource(Path(path), "tiktoken", json.loads(data), json.loads(side), pattern)


@functools.lru_cache(maxsize=2)
def _convert_tiktoken(path_str: str, sha: str, pattern: str | None) -> tuple[str, str, str]:
    """(tokenizer.json text, side files as JSON text, pattern); cached by content hash because
    converting 128k ranks takes seconds and callers mutate what they get."""
    from tokenizers import AddedToken, processors
    from transformers.convert_slow_tokenizer import TikTokenConverter

    path = Path(path_str)
    is_llama3 = sha == LLAMA3_SHA256
    if pattern is None and not is_llama3:
        raise UserError(
            f"{path}: a tiktoken ranks file that is not Meta's Llama-3 file; pass its "
            "pre-tokenizer regex with --pattern (a ranks file does not store it)"
        )
    pattern = pattern or LLAMA3_PATTERN
    ranks = read_tiktoken_ranks(path)

    class _Converter(TikTokenConverter):
        @staticmethod
        def load_tiktoken_bpe(_url: str) -> dict[bytes, int]:
            return ranks  # already parsed with file:line errors

    log.info("converting %s (%d ranks) to tokenizer.json", path, len(ranks))
    tok = _Converter(vocab_file=str(path), pattern=pattern).converted()
    specials = LLAMA3_SPECIALS if is_llama3 else []
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    side: dict[str, Any] = {}
    if is_llama3:
        bos, eos = LLAMA3_SPECIALS[0], LLAMA3_SPECIALS[1]
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.Sequence(
            [
                processors.ByteLevel(trim_offsets=False),
                processors.TemplateProcessing(
                    single=f"{bos}:0 $A:0",
                    pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                    special_tokens=[(bos, bos_id)],
                ),
            ]
        )
        specials_map = {"bos_token": bos, "eos_token": eos}
        side["special_tokens_map.json"] = specials_map
        side["tokenizer_config.json"] = {
            "tokenizer_class": "TokenizersBackend",
            **specials_map,
            "pad_token": None,
            "clean_up_tokenization_spaces": False,
            "model_max_length": 131072,
            "model_input_names": ["input_ids", "attention_mask"],
        }
    else:
        side["tokenizer_config.json"] = {
            "tokenizer_class": "TokenizersBackend",
            "clean_up_tokenization_spaces": False,
        }
    return tok.to_str(), json.dumps(side), pattern


def from_hf_dir(path: Path, pattern: str | None) -> ByteLevelSource:
    if pattern is not None:
        raise UserError("--pattern is for tiktoken ranks files; a tokenizer.json has its own")
    tj = Path(path) / "tokenizer.json"
    try:
        data = json.loads(tj.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{tj}: not a readable tokenizer.json ({e})") from None
    model = data.get("model") or {}
    if model.get("type") != "BPE" or not _has_bytelevel(data.get("pre_tokenizer")):
        raise UserError(
            f"{tj}: langgraft expands byte-level BPE tokenizer.json files (model BPE with a "
            f"ByteLevel pre-tokenizer); this one has model {model.get('type')!r}"
        )
    if model.get("dropout") or model.get("continuing_subword_prefix"):
        raise UserError(f"{tj}: BPE with dropout or a subword prefix is not supported")
    side = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        f = Path(path) / name
        if f.is_file():
            side[name] = json.loads(f.read_text(encoding="utf-8"))
    # transformers >= 5 saves the chat template beside tokenizer_config.json (SmolLM2, Qwen...)
    template = Path(path) / "chat_template.jinja"
    if template.is_file():
        side[template.name] = template.read_text(encoding="utf-8")
    return ByteLevelSource(Path(path), "tokenizer.json", data, side)


def load_bytelevel_source(path: Path, pattern: str | None = None) -> ByteLevelSource:
    p = Path(path)
    if p.is_dir():
        return from_hf_dir(p, pattern)
    if looks_like_tiktoken(p):
        return from_tiktoken(p, pattern)
    raise UserError(f"{p}: neither a tokenizer.json directory nor a tiktoken ranks file")


# --- which old tokens may take part in new merges ------------------------------------------
