"""JSON and JSON-lines files read with one-line errors that name the file and the line.

Every reader of a user's or a run's JSON goes through here, so a bad byte, a bad line or a value
of the wrong kind reads the same whatever the command: `PATH:LINE: invalid JSON (...)`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from langgraft.errors import UserError


def parse_json(text: str, path: str | Path, line: int | None = None, hint: str = "") -> Any:
    """The JSON value of `text`, read from `path` (at `line` for a JSON-lines row; for a whole
    file an error names the line of the fault)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(
            f"{path}:{line or e.lineno}: invalid JSON ({e.msg}, column {e.colno}){hint}"
        ) from None
    except RecursionError:
        where = f"{path}:{line}" if line else str(path)
        raise UserError(f"{where}: JSON nested too deeply{hint}") from None


def read_json(path: str | Path, what: str = "file", hint: str = "") -> Any:
    """Any JSON value from a UTF-8 file (a missing or non-UTF-8 file is named as such)."""
    from langgraft.fsutil import read_utf8

    return parse_json(read_utf8(path, what), path, hint=hint)


def read_json_object(path: str | Path, what: str = "file", hint: str = "") -> dict[str, Any]:
    """A JSON object from a file; any other content is one line naming the file (and line).
    `hint` is appended to every error (e.g. what rebuilds the file)."""
    data = read_json(path, what, hint)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, got a JSON {_kind(data)}{hint}")
    return data


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of every non-blank line of a JSON-lines file."""
    path = Path(path)
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    with f:
        # Bytes, decoded line by line: a text-mode file decodes ahead in blocks, so a bad byte
        # on line 2 would surface while line 1 is read, and be named as line 1.
        for line_no, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(
                    f"{path}:{line_no}: not UTF-8 text (byte {raw[e.start]:#04x} at column "
                    f"{e.start + 1})"
                ) from None
            if not line.strip():
                continue
            obj = parse_json(line, path, line_no)
            if not isinstance(obj, dict):
                raise UserError(f"{path}:{line_no}: expected a JSON object, got {_kind(obj)}")
            yield line_no, obj


def _kind(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )
