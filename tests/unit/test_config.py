"""Strict dataclass configs: unknown keys and wrong types are errors that name the key."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from langgraft.config import add_dataclass_args, field_docs, from_dict, load_yaml
from langgraft.errors import UserError


@dataclass
class Inner:
    lr: float = 1e-4
    """Peak learning rate."""


@dataclass
class Outer:
    name: str
    """Run name."""
    steps: int = 10
    """Optimizer steps."""
    files: list[Path] = field(default_factory=list)
    """Input files."""
    inner: Inner = field(default_factory=Inner)
    """Nested settings."""
    flag: bool = False
    """A switch."""


def test_unknown_key_named(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: x\nstepz: 3\n")
    with pytest.raises(UserError, match="unknown key 'stepz'"):
        load_yaml(Outer, f)


def test_nested_unknown_key_named():
    with pytest.raises(UserError, match=r"config\.inner: unknown key 'lrr'"):
        from_dict(Outer, {"name": "x", "inner": {"lrr": 1}})


def test_types_checked_and_coerced():
    cfg = from_dict(Outer, {"name": "x", "files": ["a", "b"], "inner": {"lr": 1}})
    assert cfg.files == [Path("a"), Path("b")] and cfg.inner.lr == 1.0
    with pytest.raises(UserError, match=r"config\.steps: expected an integer"):
        from_dict(Outer, {"name": "x", "steps": "ten"})
    with pytest.raises(UserError, match=r"config\.flag: expected true/false"):
        from_dict(Outer, {"name": "x", "flag": "yes"})


def test_yaml_syntax_error_names_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("name: x\nsteps: [1, 2\n")
    with pytest.raises(UserError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_yaml(Outer, f)


def test_docstrings_become_help():
    assert field_docs(Outer)["steps"] == "Optimizer steps."
    p = argparse.ArgumentParser()
    add_dataclass_args(p, Outer)
    text = p.format_help()
    assert "Optimizer steps. (default: 10)" in text and "--no-flag" in text
    ns = p.parse_args(["--name", "r", "--files", "a", "b", "--flag"])
    assert ns.files == [Path("a"), Path("b")] and ns.flag is True
