"""Issue 22: a malformed recipe override value (`--stages.0.steps=[1,2`) is one line naming the
override, exit 2 (it was a YAML traceback); well-formed values still parse as before."""

from __future__ import annotations

from pathlib import Path

import pytest

from langgraft.__main__ import main
from langgraft.config import parse_override_value
from langgraft.errors import UserError

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "demo-stories260k.yaml"


@pytest.mark.parametrize(
    ("option", "shown"),
    [("--stages.0.steps=[1,2", "--stages.0.steps: '[1,2'"),
     ("--train.lr={a: 1", "--train.lr: '{a: 1'"),
     ("--stages.0.name=a: b: c", "--stages.0.name: 'a: b: c'"),
     ("--seed=\"x", "--seed: '\"x'")],
)  # fmt: skip
def test_a_malformed_override_value_is_one_line(option: str, shown: str, capsys) -> None:
    assert main(["train", "--config", str(RECIPE), option]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"langgraft train: error: {shown} is not a valid value ("), err


def test_well_formed_values_keep_their_meaning() -> None:
    assert parse_override_value("1e-3", "--x") == 1e-3  # a float, not YAML 1.1's string
    assert parse_override_value("7", "--x") == 7
    assert parse_override_value("[1, 2]", "--x") == [1, 2]
    assert parse_override_value("true", "--x") is True
    assert parse_override_value("null", "--x") is None
    assert parse_override_value("text", "--x") == "text"
    with pytest.raises(UserError, match=r"^--x: '\[1,2' is not a valid value"):
        parse_override_value("[1,2", "--x")
