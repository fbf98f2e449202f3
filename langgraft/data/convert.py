"""Turn JSON corpora (e.g. chinese-poetry's `*.json`) into jsonl rows that `prepare` reads.

`prepare` streams jsonl and text; a corpus shipped as one JSON document per file needs this
small step first. Each element of a top-level array (or a top-level object as a whole) becomes one
document: its string values, depth first in file order, joined by newlines. Non-string scalars
(ids, numbers) are left out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from langgraft.errors import UserError


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        if value.strip():
            yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)


def json_documents(path: str | Path) -> Iterator[str]:
    """The documents of one JSON file (see the module docstring)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a UTF-8 JSON file ({e})") from None
    except RecursionError:
        raise UserError(f"{path}: JSON nested too deeply") from None
    records = data if isinstance(data, list) else [data]
    for i, record in enumerate(records):
        try:
            text = "\n".join(_strings(record))
            text.encode("utf-8")
        except RecursionError:
            raise UserError(f"{path}: record {i + 1}: JSON nested too deeply") from None
        except UnicodeEncodeError as e:
            raise UserError(
                f"{path}: record {i + 1}: lone surrogate {text[e.start]!r} is not valid Unicode text"
            ) from None
        if text:
            yield text


def json_to_jsonl(
    paths: Iterable[str | Path], out: str | Path, field: str = "text", category: str | None = None
) -> int:
    """Write one `{field: text[, "category": category]}` row per document; returns the count."""
    n = 0
    with open(out, "w", encoding="utf-8") as f:
        for path in paths:
            for text in json_documents(path):
                row: dict[str, str] = {field: text}
                if category is not None:
                    row["category"] = category
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
    return n
