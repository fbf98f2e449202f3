"""Recipe loading: strict keys, stage inheritance, dotted overrides, budget validation, and
every recipe shipped in recipes/ parses."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from langgraft.errors import UserError
from langgraft.train.recipe import apply_overrides, load_recipe, recipe_from_dict

ROOT = Path(__file__).resolve().parents[2]


def base(**extra) -> dict:
    r = {
        "model": "m",
        "out": "o",
        "train": {"lr": 1e-4, "micro_batch_size": 2},
        "stages": [
            {"name": "warm", "data": [{"path": "d"}], "steps": 5, "lr": 1e-3},
            {"name": "inject", "data": [{"path": "d"}], "tokens": 1000},
        ],
    }
    r.update(extra)
    return r


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_parses(path: Path) -> None:
    r = load_recipe(path)
    assert r.stages and all(s.data for s in r.stages)


def test_shipped_recipes_exist() -> None:
    names = {p.name for p in (ROOT / "recipes").glob("*.yaml")}
    assert {"demo-stories260k.yaml", "llama2-7b.yaml"} <= names


def test_stages_inherit_train_defaults_and_override_them() -> None:
    r = recipe_from_dict(base())
    assert r.stages[0].lr == 1e-3 and r.stages[1].lr == 1e-4
    assert r.stages[0].micro_batch_size == r.stages[1].micro_batch_size == 2
    assert r.stages[1].weight_decay == 0.1  # the Hyper default


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda r: r.update(bogus=1), "'bogus'"),
        (lambda r: r["train"].update(lrr=1), "'lrr'"),
        (lambda r: r["stages"][1].update(step=3), "'step'"),
        (lambda r: r["stages"][0]["data"][0].update(wieght=2), "'wieght'"),
        (lambda r: r.update(checkpoint={"every": 3}), "'every'"),
    ],
)
def test_unknown_keys_are_errors_naming_the_key(mutate, key: str) -> None:
    r = base()
    mutate(r)
    with pytest.raises(UserError, match=key):
        recipe_from_dict(r)


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda r: r["stages"][0].update(tokens=10), r"stages\[0\].*one budget"),
        (lambda r: r["stages"][1].update(tokens=0), r"stages\[1\]\.tokens"),
        (lambda r: r["stages"][1].update(epochs=-1.0, tokens=None), r"stages\[1\]\.epochs"),
        (lambda r: r["stages"][0].update(data=[]), r"stages\[0\]\.data"),
        (lambda r: r["stages"][0]["data"][0].update(weight=0), r"data\[0\]\.weight"),
        (lambda r: r["train"].update(micro_batch_size=0), r"micro_batch_size"),
        (lambda r: r["train"].update(min_lr_ratio=2.0), r"min_lr_ratio"),
        (lambda r: r.update(stages=[]), r"stages"),
        (lambda r: r.update(precision="fp8"), r"precision"),
        (lambda r: r.update(eval={"interval": 5}), r"eval\.interval"),
    ],
)
def test_invalid_values_name_the_key(mutate, where: str) -> None:
    r = base()
    mutate(r)
    with pytest.raises(UserError, match=where):
        recipe_from_dict(r)


def test_dotted_overrides(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text(yaml.safe_dump(base()))
    r = load_recipe(
        f, ["--stages.1.lr=2e-5", "--train.micro_batch_size", "4", "--checkpoint.keep_last=1"]
    )
    assert r.stages[1].lr == 2e-5 and r.stages[0].lr == 1e-3
    assert r.stages[0].micro_batch_size == 4 and r.checkpoint.keep_last == 1
    r = load_recipe(
        f, ["--train.lr=5e-4", "--precision=bf16", "--stages.0.freeze_non_embeds_params=true"]
    )
    assert r.stages[1].lr == 5e-4 and r.precision == "bf16"
    assert r.stages[0].freeze_non_embeds_params is True


@pytest.mark.parametrize(
    "args, match",
    [
        (["--stages.5.lr=1"], "no such list index"),
        (["--stages.0.lrr=1"], "'lrr'"),
        (["--train.lr"], "needs a value"),
        (["lr=1"], "overrides look like"),
        (["--model.x=1"], "inside a scalar"),
    ],
)
def test_bad_overrides(args: list[str], match: str) -> None:
    with pytest.raises(UserError, match=match):
        recipe_from_dict(apply_overrides(base(), args))


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda r: r["train"].update(lr=float("inf")), r"stages\[1\]\.lr: inf must be finite"),
        (lambda r: r["train"].update(lr=float("nan")), r"stages\[1\]\.lr: nan"),
        (lambda r: r["train"].update(lr=1e38), r"stages\[1\]\.lr: 1e\+38 must be finite and in"),
        (lambda r: r["train"].update(adam_beta1=1.5), r"adam_beta1: 1\.5 must be in \[0, 1\)"),
        (lambda r: r["train"].update(adam_beta2=1.0), r"adam_beta2: 1\.0 must be in"),
        (lambda r: r["train"].update(adam_beta1=-0.1), r"adam_beta1"),
        (lambda r: r["train"].update(adam_eps=-1.0), r"adam_eps: -1\.0 must be finite and > 0"),
        (lambda r: r["train"].update(adam_eps=0.0), r"adam_eps"),
        (lambda r: r["train"].update(grad_clip=float("inf")), r"grad_clip: must be finite"),
        (lambda r: r["stages"][0]["data"][0].update(weight=float("inf")), r"weight: inf"),
        (lambda r: r.update(seed=-1), r"seed: -1 must be in \[0, 2\^32\)"),
        (lambda r: r.update(seed=2**40), r"seed: 1099511627776"),
        (lambda r: r.update(dist_timeout_s=0), r"dist_timeout_s: 0 must be >= 1"),
        (
            lambda r: r.update(attn_implementation="flash_attention_2"),
            r"precision: fp32 with attn_implementation flash_attention_2.*bf16",
        ),
    ],
)
def test_impossible_numbers_are_refused_before_anything_runs(mutate, where: str) -> None:
    r = base()
    mutate(r)
    with pytest.raises(UserError, match=where):
        recipe_from_dict(r)


def test_flash_with_bf16_passes_validation() -> None:
    r = recipe_from_dict(base(attn_implementation="flash_attention_2", precision="bf16"))
    assert r.attn_implementation == "flash_attention_2"


def test_config_that_is_a_directory_or_not_utf8_is_a_clean_error(tmp_path: Path) -> None:
    from langgraft.__main__ import main

    with pytest.raises(UserError, match=f"{tmp_path}: is a directory"):
        load_recipe(tmp_path)
    bad = tmp_path / "r.yaml"
    bad.write_bytes(b"model: m\nout: \xff\xfe\n")
    with pytest.raises(UserError, match=rf"{bad}: not UTF-8 text \(byte 0x[0-9a-f]{{2}} at 14\)"):
        load_recipe(bad)
    assert main(["train", "--config", str(tmp_path), "--dry-run"]) == 2
    assert main(["train", "--config", str(bad), "--dry-run"]) == 2
