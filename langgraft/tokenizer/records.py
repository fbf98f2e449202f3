"""What `tokenizer expand` measures and records: compression on held-out text, pieces never used,
the cost of --keep-segmentation, and the `expansion.json` writer."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from langgraft.tokenizer.sources import expand_paths, iter_texts
from langgraft.tokenizer.spmodel import ModelProto


def tokens_per_char(tok: Any, texts: list[str]) -> float:
    """Tokens per character of a `tokenizers.Tokenizer` over texts (no special tokens)."""
    chars = sum(map(len, texts))
    n = sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))
    return n / chars if chars else 0.0


def keep_cost(with_keep: float, without_keep: float, keep: bool) -> dict:
    """What --keep-segmentation costs in held-out compression (relative token count)."""
    return {
        "tokens_per_char_keep_segmentation": with_keep,
        "tokens_per_char_no_keep_segmentation": without_keep,
        "relative_cost": with_keep / without_keep - 1.0 if without_keep else None,
        "this_run": "keep" if keep else "no-keep",
    }


def count_unused(proto: ModelProto, added: list[str], corpora: list[Path]) -> tuple[int, int]:
    """How many added pieces never occur when tokenizing the corpora (and the samples read)."""
    from langgraft.tokenizer.hf import build_fast_tokenizer

    tok = build_fast_tokenizer(proto)
    ids = {proto.pieces[i].piece: i for i in range(len(proto.pieces))}
    seen: Counter[int] = Counter()
    n = 0
    batch: list[str] = []
    for f in expand_paths(corpora):
        for text, _ in iter_texts(f):
            batch.append(text)
            if len(batch) >= 4096:
                for enc in tok.encode_batch(batch, add_special_tokens=False):
                    seen.update(enc.ids)
                n += len(batch)
                batch = []
    for enc in tok.encode_batch(batch, add_special_tokens=False):
        seen.update(enc.ids)
    n += len(batch)
    return sum(1 for p in added if seen[ids[p]] == 0), n


def write_record(path: Path, summary: dict, result: Any) -> None:
    """expansion.json: the summary, then one line per added and per skipped piece."""

    def rows(items: list[dict]) -> str:
        return ",\n".join("  " + json.dumps(x, ensure_ascii=False) for x in items)

    head = json.dumps(summary, indent=1, ensure_ascii=False)[:-2]
    path.write_text(
        f'{head},\n "added_pieces": [\n{rows(result.added)}\n ],\n'
        f' "skipped_pieces": [\n{rows(result.skipped)}\n ]\n}}\n',
        encoding="utf-8",
    )
