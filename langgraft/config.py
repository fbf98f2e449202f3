"""Strict dataclass configs shared by every stage.

Each stage describes its options as a dataclass with a docstring under every field (litgpt
style). This module turns such a dataclass into argparse options whose help text is that
docstring, loads YAML files strictly (an unknown key is an error naming the key and file), and
writes the resolved config next to an output.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import json
import textwrap
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from langgraft.errors import UserError

T = TypeVar("T")


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Return {field name: docstring} for the string literal written under each field."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _resolved_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a YAML value to the annotated type; raise UserError naming `where`."""
    inner, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise UserError(f"{where}: must not be null")
    if dataclasses.is_dataclass(inner):
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(inner, value, where=where)  # type: ignore[arg-type]
    origin = typing.get_origin(inner)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise UserError(f"{where}: expected a list, got {type(value).__name__}")
        (item_tp, *_) = typing.get_args(inner) or (Any,)
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if origin is typing.Literal:
        choices = typing.get_args(inner)
        if value not in choices:
            raise UserError(f"{where}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if inner is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true/false, got {value!r}")
        return value
    if inner is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        return value
    if inner is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if inner in (str, Path):
        if not isinstance(value, str | Path):
            raise UserError(f"{where}: expected a string, got {value!r}")
        return inner(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types are errors."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(
            f"{where}: unknown key {unknown[0]!r}"
            + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
            + f"; valid keys: {', '.join(sorted(fields))}"
        )
    hints = _resolved_types(cls)
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # missing required fields
        raise UserError(f"{where}: {e}") from None


def read_yaml_mapping(path: str | Path, what: str = "config") -> dict[str, Any]:
    """Parse a YAML file whose top level is a mapping; errors name the file (and line)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what} file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{line}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: top level must be a mapping")
    return data


def parse_override_value(text: str, where: str) -> Any:
    """A command-line override's value: an int or a float first (YAML 1.1 reads "1e-3" as a
    string), else YAML (booleans, null, lists). Malformed YAML is one line naming `where`."""
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at character {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).split("\n")[0]
        raise UserError(f"{where}: {text!r} is not a valid value ({problem}{at}); quote "
                        "strings, close brackets: --key=[1,2] or --key=text") from None  # fmt: skip


def load_yaml(cls: type[T], path: str | Path) -> T:
    """Load a YAML file into dataclass `cls`, strictly."""
    return from_dict(cls, read_yaml_mapping(path), where=str(path))


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON/YAML-safe dict of a (nested) dataclass."""

    def conv(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, list | tuple):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return {k: conv(v) for k, v in dataclasses.asdict(cfg).items()}


def save_resolved(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as JSON next to an output."""
    Path(path).write_text(json.dumps(to_dict(cfg), indent=2, ensure_ascii=False) + "\n")


def add_dataclass_args(
    parser: argparse.ArgumentParser,
    cls: type,
    positional: tuple[str, ...] = (),
    aliases: dict[str, list[str]] | None = None,
) -> None:
    """Add one option per dataclass field; the field docstring is the help text.

    Booleans get `--x/--no-x`; list fields take several values; Literal fields become choices.
    """
    docs = field_docs(cls)
    hints = _resolved_types(cls)
    aliases = aliases or {}
    for f in dataclasses.fields(cls):
        tp, _ = _unwrap_optional(hints[f.name])
        help_text = docs.get(f.name, "")
        kw: dict[str, Any] = {"dest": f.name}
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if not required:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            kw["default"] = default
            if default not in (None, [], ()) and tp is not bool:
                help_text += f" (default: {default})"
        flag = "--" + f.name.replace("_", "-")
        names = [flag, *aliases.get(f.name, [])]
        origin = typing.get_origin(tp)
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
            help_text += f" (default: {'on' if kw.get('default') else 'off'})"
        elif origin in (list, tuple):
            (item_tp, *_) = typing.get_args(tp) or (str,)
            kw["nargs"] = "+"
            kw["type"] = item_tp if item_tp in (int, float, str) else Path
            kw["metavar"] = f.name.upper().rstrip("S") if item_tp is not Path else "PATH"
        elif origin is typing.Literal:
            kw["choices"] = list(typing.get_args(tp))
        elif tp in (int, float, str, Path):
            kw["type"] = tp
        if f.name in positional:
            kw.pop("dest")
            parser.add_argument(f.name, help=help_text, **kw)
            continue
        if required:
            kw["required"] = True
        parser.add_argument(*names, help=help_text, **kw)


def from_namespace(cls: type[T], ns: argparse.Namespace) -> T:
    """Build `cls` from parsed CLI options (the fields only; other attributes are ignored)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in vars(ns).items() if k in names})


def config_command(
    sub: Any, name: str, cls: type, run: Callable[[argparse.Namespace], int], *, help: str,
    description: str, positional: tuple[str, ...] = (),
) -> argparse.ArgumentParser:  # fmt: skip
    """A subcommand whose options are the fields of `cls` and which calls `run(args)`."""
    p = sub.add_parser(name, help=help, description=description)
    add_dataclass_args(p, cls, positional=positional)
    p.set_defaults(func=run)
    return p
