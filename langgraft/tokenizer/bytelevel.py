"""Byte-level BPE tokenizers (Llama-3 / GPT-4 family): expanding and writing them.

    langgraft tokenizer expand --source ../shared/data/tokenizers/llama3/tokenizer.model \
        --learn-from ../shared/data/corpus/zh-modern --target-size 160000 --out out/tok-l3-zh

Sources are read by `langgraft.tokenizer.bytelevel_source`. New tokens are appended as merges
after all existing ones (see `langgraft.tokenizer.learn`), with ids after every existing id,
special tokens included, so no existing id moves.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

from langgraft.errors import UserError
from langgraft.tokenizer.bytelevel_source import ByteLevelSource, token_bytes

log = logging.getLogger(__name__)


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
        if not isinstance(content, str):  # chat_template.jinja is text
            content = json.dumps(content, indent=2, ensure_ascii=False)
        (out / name).write_text(content, encoding="utf-8")


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
