"""Figures the docs state about the demo's recipe are the ones the code runs (issue 22: docs/demo.md
said injection lr 1e-3 and replay 5e-4 while the recipe trains at 3e-4 and 2.5e-4)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from langgraft.demo import recipe as demo_recipe_module
from langgraft.demo.recipe import FULL, INJECTION_REPLAY, QUICK, REPLAY_ZH, demo_recipe

ROOT = Path(__file__).resolve().parents[2]


def step_row(number: int) -> str:
    for line in (ROOT / "docs/demo.md").read_text("utf-8").splitlines():
        if line.startswith(f"| {number} "):
            return line
    raise AssertionError(f"docs/demo.md: no step {number} row")


@pytest.fixture
def recipe(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict:
    monkeypatch.setattr(demo_recipe_module, "rows", lambda data: 100)  # no prepared data needed
    data = {k: tmp_path / k for k in ("zh-train", "en-train", "zh-heldout", "en-heldout")}
    return demo_recipe(tmp_path / "model", data, tmp_path / "run", FULL, progress=False)


def stage_lr(recipe: dict, name: str) -> float:
    stage = next(s for s in recipe["stages"] if s["name"] == name)
    return float(stage.get("lr", recipe["train"]["lr"]))


def test_demo_md_learning_rates_and_mixtures_are_the_recipes(recipe: dict) -> None:
    row = step_row(7)
    warm = re.search(r"warm-up \([^)]*lr ([0-9.e-]+)\)", row)
    inj = re.search(r"injection \((\d+)% Chinese \+ (\d+)% self-replay rows, lr ([0-9.e-]+)\)", row)
    rep = re.search(r"replay \((\d+)% Chinese \+ (\d+)% self-replay rows, lr ([0-9.e-]+)\)", row)
    assert warm and inj and rep, row
    assert float(warm.group(1)) == stage_lr(recipe, "embeddings")
    assert float(inj.group(3)) == stage_lr(recipe, "injection")
    assert float(rep.group(3)) == stage_lr(recipe, "replay")
    assert int(inj.group(2)) == round(100 * INJECTION_REPLAY)
    assert int(rep.group(1)) == round(100 * REPLAY_ZH)


def test_demo_md_vocabulary_sizes_are_the_recipes() -> None:
    sizes = [
        int(n.replace(",", ""))
        for n in re.findall(r"(\d[\d,]*)(?: pieces| with `--quick`)", step_row(4))
    ]
    assert sizes == [FULL.vocab, QUICK.vocab]
