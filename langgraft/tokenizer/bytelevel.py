"""Byte-level BPE tokenizers (Llama-3 / GPT-4 family): reading, converting, expanding, writing.

    langgraft tokenizer expand --source ../shared/data/tokenizers/llama3/tokenizer.model \
        --learn-from ../shared/data/corpus/zh-modern --target-size 160000 --out out/tok-l3-zh

A source is either a Hugging Face directory whose `tokenizer.json` has a BPE model with a
ByteLevel pre-tokenizer, or a tiktoken ranks file (`base64-token rank` per line). A ranks file is
converted with transformers' TikTokenConverter (every split of a token whose halves are tokens
becomes a merge, ranked by the token's rank, so the BPE model agrees with tiktoken id for id);
Meta's Llama-3 file is recognised by its sha256 and gets Llama-3's pre-tokenizer regex and its 256
special tokens (ids 128000-128255); any other ranks file needs --pattern.

New tokens are appended as merges after all existing ones (see `langgraft.tokenizer.learn`), with
ids after every existing id, special tokens included, so no existing id moves.
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
    return ByteLevelSource(Path(path), "tokenizer.json", data, side)


def load_bytelevel_source(path: Path, pattern: str | None = None) -> ByteLevelSource:
    p = Path(path)
    if p.is_dir():
        return from_hf_dir(p, pattern)
    if looks_like_tiktoken(p):
        return from_tiktoken(p, pattern)
    raise UserError(f"{p}: neither a tokenizer.json directory nor a tiktoken ranks file")


# --- which old tokens may take part in new merges ------------------------------------------


@functools.cache
def _protected_re() -> Any:
    import regex

    # East Asian punctuation blocks are Common script but never occur in English text.
    return regex.compile(
        r"[\p{Latin}\p{Common}\p{Inherited}--[\u3000-\u303f\uff00-\uffef]]", regex.V1
    )


def char_is_protected(ch: str) -> bool:
    """Latin, Common or Inherited script (English text, code, digits, ASCII punctuation)."""
    return _protected_re().fullmatch(ch) is not None


def _partial_is_anchor(prefix: bytes) -> bool:
    """A token ending inside a character: an anchor only if every completion is unprotected."""
    lead = prefix[0]
    need = 3 if 0xE0 <= lead < 0xF0 else 4 if lead >= 0xF0 else 2
    missing = need - len(prefix)
    if need == 4 and missing > 2:
        return False  # too many completions to check; treat as plain
    from itertools import product

    for tail in product(range(0x80, 0xC0), repeat=missing):
        try:
            ch = (prefix + bytes(tail)).decode("utf-8")
        except UnicodeDecodeError:
            continue
        if char_is_protected(ch):
            return False
    return True


def token_kind(b: bytes) -> int:
    """ANCHOR if the token's bytes contain a character outside the protected scripts."""
    from langgraft.tokenizer.learn import ANCHOR, PLAIN

    i = 0
    while i < len(b) and 0x80 <= b[i] < 0xC0:
        i += 1  # continuation bytes of a character that started in an earlier token
    body = b[i:]
    text = body.decode("utf-8", errors="ignore")
    if any(not char_is_protected(c) for c in text):
        return ANCHOR
    # A trailing incomplete character (its lead byte and some continuation bytes).
    for k in range(1, min(4, len(body)) + 1):
        tail = body[-k:]
        if tail[0] >= 0xC0:
            try:
                tail.decode("utf-8")
            except UnicodeDecodeError:
                return ANCHOR if _partial_is_anchor(tail) else PLAIN
            break
    return PLAIN


def token_kinds(src: ByteLevelSource, keep_segmentation: bool) -> bytearray:
    """Per id: ANCHOR / PLAIN / BLOCKED (special tokens never merge)."""
    from langgraft.tokenizer.learn import ANCHOR, BLOCKED

    kinds = bytearray([BLOCKED]) * src.size()
    for tok, i in src.vocab.items():
        kinds[i] = token_kind(token_bytes(tok)) if keep_segmentation else ANCHOR
    for i in src.added_ids().values():
        kinds[i] = BLOCKED
    return kinds


def old_segmentation(tok: Any, samples: list[tuple[str, int]], batch: int = 512) -> Any:
    """{token ids of one pre-tokenized word: weighted count} over the samples, as the source
    tokenizer segments them."""
    from collections import Counter

    words: Counter[tuple[int, ...]] = Counter()
    for i in range(0, len(samples), batch):
        chunk = samples[i : i + batch]
        encs = tok.encode_batch([t for t, _ in chunk], add_special_tokens=False)
        for enc, (_, weight) in zip(encs, chunk, strict=True):
            cur: list[int] = []
            last = None
            for t, w in zip(enc.ids, enc.word_ids, strict=True):
                if w != last and cur:
                    words[tuple(cur)] += weight
                    cur = []
                cur.append(t)
                last = w
            if cur:
                words[tuple(cur)] += weight
    return words.items()


def append_merges(
    src: ByteLevelSource, merges: list[tuple[tuple[int, ...], tuple[int, ...]]]
) -> list[dict]:
    """Add the learned merges (and their tokens) to the tokenizer.json data, in order."""
    model = src.data["model"]
    vocab = model["vocab"]
    next_id = src.size()
    # Added (special) tokens must also be in the model vocabulary at their ids, as in Meta's own
    # tokenizer.json: `tokenizers` gives an added token missing from it the id after the model's
    # last one, which the new tokens would then collide with.
    for content, i in src.added_ids().items():
        if vocab.setdefault(content, i) != i:
            raise UserError(f"{src.path}: added token {content!r} has two ids")
    inv = {i: t for t, i in vocab.items()}
    added: list[dict] = []
    for left, right in merges:
        a = "".join(inv[i] for i in left)
        b = "".join(inv[i] for i in right)
        if a not in vocab or b not in vocab:
            raise AssertionError(f"learned merge over unknown tokens {a!r} {b!r}")
        model["merges"].append([a, b])
        piece = a + b
        if piece in vocab:
            continue  # another split of an existing token: only a merge
        vocab[piece] = next_id
        added.append(
            {"id": next_id, "token": piece, "text": token_bytes(piece).decode("utf-8", "replace")}
        )
        next_id += 1
    return added


def write_bytelevel_dir(src: ByteLevelSource, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(json.dumps(src.data, ensure_ascii=False), encoding="utf-8")
    for name, content in src.side_files.items():
        if name == "generation_config.json":
            continue  # belongs to a model, not to a tokenizer
        (out / name).write_text(json.dumps(content, indent=2, ensure_ascii=False), encoding="utf-8")


# --- helpers for `model expand` ----------------------------------------------------------------


def read_vocab(tokenizer_json: Path) -> dict[int, str]:
    """{id: token} over the vocabulary and added tokens of a tokenizer.json."""
    data = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    ids = {i: t for t, i in data["model"]["vocab"].items()}
    ids.update({t["id"]: t["content"] for t in data.get("added_tokens", [])})
    return ids


def subtoken_ids_bytelevel(
    src_json: Path, tgt_vocab: dict[int, str], new_ids: range
) -> list[list[int]]:
    """For each new token, the source tokenizer's ids for its bytes (its old segmentation)."""
    from tokenizers import Tokenizer

    src = Tokenizer.from_file(str(src_json))
    model = src.model
    out = []
    for j in new_ids:
        tok = tgt_vocab.get(j)
        out.append([t.id for t in model.tokenize(tok)] if tok else [])
    return out


def check_extends(src_json: Path, tgt_json: Path) -> tuple[dict[int, str], dict[int, str]]:
    """Both vocabularies ({id: token}); the target must keep every source token at its id."""
    src, tgt = read_vocab(src_json), read_vocab(tgt_json)
    n_src, n_tgt = max(src) + 1, max(tgt) + 1
    if n_tgt < n_src:
        raise UserError(f"{tgt_json}: has {n_tgt} ids, fewer than the source's {n_src}")
    for i in range(n_src):
        if src.get(i) != tgt.get(i):
            raise UserError(
                f"{tgt_json}: id {i} is {tgt.get(i)!r} but the source tokenizer has "
                f"{src.get(i)!r} there; the target must extend the source (same tokens at the "
                "same ids, new tokens appended)"
            )
    return src, tgt
