"""Every shipped recipe parses and validates strictly, and every LLaMA-2-7B variant's memory plan
(`train --plan`, the 69,104-piece expanded vocabulary) fits the hardware its header names."""

from __future__ import annotations

from pathlib import Path

import pytest

from langgraft.distributed.dims import parallel_dims
from langgraft.distributed.plan import plan_memory, read_config
from langgraft.train.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
SHAPE = ROOT / "recipes" / "shapes" / "llama2-7b-69104"
GIB = 2**30


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_parses(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.stages


# (recipe, ranks, GiB per GPU): the layouts the README recommends
FITS = [
    ("llama2-7b.yaml", 8, 80), ("llama2-7b-zero2.yaml", 8, 80), ("llama2-7b-3d.yaml", 8, 80),
    ("llama2-7b-3d.yaml", 16, 80), ("llama2-7b-offload.yaml", 1, 24),
    ("llama2-7b-offload.yaml", 4, 24),
]  # fmt: skip


@pytest.mark.parametrize("name, world, gpu_gib", FITS)
def test_llama2_7b_plans_fit(name: str, world: int, gpu_gib: int) -> None:
    recipe = load_recipe(ROOT / "recipes" / name, [f"--model={SHAPE}"])
    plan = plan_memory(recipe, parallel_dims(recipe, world), read_config(SHAPE))
    assert plan.peak * 1.1 < gpu_gib * GIB, plan.table(gpu_gib)


def test_ddp_does_not_fit_7b() -> None:
    """The reason for the sharded plugins: one fp32 replica + AdamW is ~105 GiB before activations."""
    recipe = load_recipe(ROOT / "recipes" / "llama2-7b.yaml", [f"--model={SHAPE}", "--plugin=ddp"])
    plan = plan_memory(recipe, parallel_dims(recipe, 8), read_config(SHAPE))
    assert plan.peak > 80 * GIB
