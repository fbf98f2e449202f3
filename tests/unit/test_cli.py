"""The CLI surface: one registry, every sub-command reachable, every option explained."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from langgraft.__main__ import COMMANDS, build_parser


def _subparsers(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _subparsers(sub, (*prefix, name))


def test_registry_names_match_parser():
    names = {path[0] for path, _ in _subparsers(build_parser())}
    assert names == set(COMMANDS)
    assert {"tokenizer"} <= names


def test_every_option_has_help():
    missing = []
    for path, sub in _subparsers(build_parser()):
        for action in sub._actions:
            if action.option_strings and action.help in (None, "") and action.dest != "help":
                missing.append(f"{' '.join(path)} {action.option_strings[0]}")
    assert not missing, f"options without help: {missing}"


@pytest.mark.parametrize(
    "argv", [["--help"], ["tokenizer", "expand", "--help"], ["tokenizer", "report", "--help"]]
)
def test_help_runs(argv, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 0
    assert "usage: langgraft" in capsys.readouterr().out


def test_module_entry_point():
    r = subprocess.run(
        [sys.executable, "-m", "langgraft", "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert r.stdout.startswith("langgraft ")


def test_usage_error_exit_code(capsys):
    from langgraft.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["tokenizer", "expand", "--out", "x"])  # --source missing
    assert e.value.code == 2
