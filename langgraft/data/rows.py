"""Decode and validate one input row (pure Python; runs in the tokenizer workers).

Every problem raises `RowError(reason, message)`. The reason is a stable key counted in the
manifest under `rows.rejected`; the message says what is wrong in that row (the caller prefixes
`file:line:`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# Bad input: `--on-error fail` stops on these, `--on-error skip` counts them.
BAD_INPUT_REASONS = (
    "invalid_utf8",
    "malformed_json",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "invalid_unicode",
    "bad_message",
)
# Well-formed rows with nothing to train on: always skipped and counted, never an error, and
# never turned into an all-masked sequence (which gives a NaN loss).
FILTERED_REASONS = ("empty_target", "no_assistant_turn", "turn_too_long")
# File-level problems (not rows).
FILE_REASONS = ("empty_file", "corrupt_file")

ROLE_ALIASES = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "system": "system",
}


class RowError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(slots=True)
class PretrainRow:
    source: str
    target: str
    category: str


@dataclass(slots=True)
class ChatRow:
    messages: list[dict[str, str]]
    """[{"role": "system"|"user"|"assistant", "content": str}], ending with an assistant turn."""
    category: str


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", list: "array", dict: "object"}.get(
        type(v), type(v).__name__
    )


def decode_json_line(line: bytes) -> dict[str, Any]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RowError("invalid_utf8", f"invalid UTF-8 at byte {e.start} ({e.reason})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise RowError("malformed_json", f"malformed JSON: {e.msg} at column {e.colno}") from None
    except RecursionError:
        raise RowError("malformed_json", "malformed JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise RowError("not_an_object", f"expected a JSON object, got {_type_name(obj)}")
    return obj


def _string(obj: dict[str, Any], key: str, where: str = "") -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise RowError(
            "wrong_type", f"{where}field {key!r}: expected a string, got {_type_name(value)}"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        # JSON allows "\ud800"; a lone surrogate cannot be tokenized (or written back as UTF-8).
        raise RowError(
            "invalid_unicode",
            f"{where}field {key!r}: lone surrogate {value[e.start]!r} is not valid Unicode text",
        ) from None
    return value


def _category(obj: dict[str, Any], allow_missing: bool, default: str | None) -> str:
    if "category" not in obj:
        if default is not None:
            return default
        if allow_missing:
            return "unknown"
        raise RowError(
            "missing_field",
            "missing field 'category' (pass --allow-missing-category to use \"unknown\")",
        )
    cat = _string(obj, "category")
    if not cat:
        raise RowError("wrong_type", "field 'category': must not be empty")
    return cat


def pretrain_row(
    obj: dict[str, Any], text_field: str | None, allow_missing_category: bool, label: str
) -> PretrainRow:
    """{"source", "target", "category"} (or {text_field, ["category"]} in raw-text mode)."""
    if text_field is not None:
        if text_field not in obj:
            raise RowError("missing_field", f"missing field {text_field!r} (--text-field)")
        return PretrainRow("", _string(obj, text_field), _category(obj, True, label))
    if "target" not in obj:
        raise RowError(
            "missing_field",
            'missing field \'target\' (rows are {"source", "target", "category"}; '
            "for plain text use --text-field)",
        )
    target = _string(obj, "target")
    source = _string(obj, "source") if "source" in obj and obj["source"] is not None else ""
    return PretrainRow(source, target, _category(obj, allow_missing_category, None))


def chat_row(obj: dict[str, Any], label: str) -> ChatRow:
    """{"messages": [{"role"|"from": ..., "content"|"value": ...}, ...], ["category"]}.

    A row without a category (the usual chat format) takes `label`, the input's name (NAME in
    NAME=PATH, else the file or directory name), as raw text does. Trailing turns after the last
    assistant turn are dropped (nothing would be trained on them).
    """
    if "messages" not in obj:
        raise RowError("missing_field", "missing field 'messages'")
    msgs = obj["messages"]
    if not isinstance(msgs, list):
        raise RowError("wrong_type", f"field 'messages': expected an array, got {_type_name(msgs)}")
    out: list[dict[str, str]] = []
    for i, m in enumerate(msgs):
        where = f"messages[{i}]: "
        if not isinstance(m, dict):
            raise RowError("wrong_type", f"{where}expected an object, got {_type_name(m)}")
        role_key = "role" if "role" in m else "from" if "from" in m else None
        if role_key is None:
            raise RowError("missing_field", f"{where}missing field 'role' (or 'from')")
        role_raw = _string(m, role_key, where)
        role = ROLE_ALIASES.get(role_raw.lower())
        if role is None:
            raise RowError(
                "bad_message",
                f"{where}unknown role {role_raw!r}; expected one of {', '.join(ROLE_ALIASES)}",
            )
        if role == "system" and i != 0:
            raise RowError("bad_message", f"{where}a system message must come first")
        content_key = "content" if "content" in m else "value" if "value" in m else None
        if content_key is None:
            raise RowError("missing_field", f"{where}missing field 'content'")
        out.append({"role": role, "content": _string(m, content_key, where)})
    last = max((i for i, m in enumerate(out) if m["role"] == "assistant"), default=-1)
    if last < 0:
        raise RowError("no_assistant_turn", "no assistant turn: nothing to train on")
    return ChatRow(out[: last + 1], _category(obj, False, label))
