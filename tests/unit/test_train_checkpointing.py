"""Activation checkpointing as torchtitan orders it (issue 20, item 4): torch's non-reentrant
checkpoint wrapper around each decoder layer, compile applied to the wrapped block, FSDP2 last.
Training with it equals training without it (the recomputation is exact), and checkpoints and
exports keep the Hugging Face parameter names."""

from __future__ import annotations

import json

import torch
from train_helpers import prepared, tiny_model, write_recipe

from langgraft.__main__ import main


def run(t, name: str, model, data, **top):
    cfg = write_recipe(t / f"{name}.yaml", {
        "model": str(model), "out": str(t / name), "progress": False, "tensorboard": False,
        "checkpoint": {"save_interval": 2}, **top,
        "train": {"micro_batch_size": 2, "warmup_steps": 0, "lr": 3e-3},
        "stages": [{"name": "warm", "data": [{"path": str(data)}], "steps": 2,
                    "freeze_non_embeds_params": True},
                   {"name": "s", "data": [{"path": str(data)}], "steps": 2}],
    })  # fmt: skip
    assert main(["train", "--config", str(cfg)]) == 0
    lines = (t / name / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "loss" in r]


def test_checkpointed_layers_train_like_plain_ones_and_keep_hf_names(tmp_path) -> None:
    from safetensors.torch import load_file

    torch.set_num_threads(1)
    model = tiny_model(tmp_path / "model")
    data = prepared(tmp_path / "data", model, {"en": 24})
    plain = run(tmp_path, "plain", model, data)
    ac = run(tmp_path, "ac", model, data, grad_checkpoint=True)
    assert ac == plain  # the frozen-input warm-up stage included (non-reentrant)
    a = load_file(str(tmp_path / "plain" / "export" / "stage-1-s" / "model.safetensors"))
    b = load_file(str(tmp_path / "ac" / "export" / "stage-1-s" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not any("_checkpoint_wrapped_module" in k for k in b)
