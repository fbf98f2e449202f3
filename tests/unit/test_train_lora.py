"""LoRA stages (Colossal v3 --lora_rank via peft): only adapters train, and the stage end merges
them so the export is a plain HF model and the next stage trains full weights from it."""

from __future__ import annotations

import torch
from safetensors.torch import load_file
from train_helpers import prepared, tiny_model, write_recipe
from transformers import AutoModelForCausalLM

from langgraft.__main__ import main


def weights(d):
    return load_file(str(d / "model.safetensors"))


def test_lora_stage_then_full_stage(tmp_path):
    torch.set_num_threads(1)
    model = tiny_model(tmp_path / "model")
    data = prepared(tmp_path / "data", model, {"en": 60})
    cfg = write_recipe(tmp_path / "r.yaml", {
        "model": str(model), "out": str(tmp_path / "run"), "seed": 1, "progress": False,
        "train": {"micro_batch_size": 4, "lr": 1e-2, "warmup_steps": 0},
        "stages": [
            {"name": "lora", "data": [{"path": str(data)}], "steps": 4, "lora_rank": 4},
            {"name": "full", "data": [{"path": str(data)}], "steps": 2},
        ],
    })  # fmt: skip
    assert main(["train", "--config", str(cfg)]) == 0
    base = weights(model)
    lora = weights(tmp_path / "run" / "export" / "stage-0-lora")
    full = weights(tmp_path / "run" / "export" / "stage-1-full")
    assert set(lora) == set(base), "export must hold merged plain weights, no adapter keys"
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(lora[q], base[q])  # adapters were trained and merged
    delta = (lora[q] - base[q]).double()
    # a rank-4 update, up to float32 rounding of the merge
    assert torch.linalg.matrix_rank(delta, rtol=1e-4).item() <= 4
    for k in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
        assert torch.equal(lora[k], base[k])  # not LoRA targets: untouched
    assert not torch.equal(full["model.embed_tokens.weight"], lora["model.embed_tokens.weight"])
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "export" / "stage-0-lora")
    assert torch.equal(loaded.state_dict()[q], lora[q])
