"""Layout validation happens before any model is loaded, and every refusal says what to change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langgraft.distributed.dims import parallel_dims
from langgraft.errors import UserError
from langgraft.train.recipe import recipe_from_dict


def recipe(tmp_path: Path, **top):
    model = tmp_path / "m"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(
        json.dumps({"num_attention_heads": 8, "num_key_value_heads": 4, "intermediate_size": 172})
    )
    r = {"model": str(model), "out": str(tmp_path / "o"),
         "stages": [{"name": "a", "data": [{"path": "d"}], "steps": 1}], **top}  # fmt: skip
    return recipe_from_dict(r)


@pytest.mark.parametrize(
    "plugin, fsdp, reshard, offload",
    [("ddp", False, True, False), ("zero2", True, False, False), ("gemini", True, True, False),
     ("zero3", True, True, False), ("zero2_cpu", True, False, True),
     ("gemini_auto", True, True, True)],
)  # fmt: skip
def test_plugin_names_map_to_fsdp2_settings(tmp_path, plugin, fsdp, reshard, offload) -> None:
    d = parallel_dims(recipe(tmp_path, plugin=plugin), world=4)
    assert (d.fsdp, d.reshard_after_forward, d.offload, d.dp, d.tp) == (fsdp, reshard, offload,
                                                                          4, 1)  # fmt: skip


def test_3d_splits_the_world_into_dp_x_tp(tmp_path) -> None:
    d = parallel_dims(recipe(tmp_path, plugin="3d", tp=2, zero=3), world=8)
    assert (d.dp, d.tp, d.fsdp, d.reshard_after_forward) == (4, 2, True, True)
    d = parallel_dims(recipe(tmp_path, plugin="3d", tp=2), world=2)
    assert (d.dp, d.fsdp) == (1, False)  # tensor parallel only


@pytest.mark.parametrize(
    "top, world, match",
    [
        ({}, 2, "WORLD_SIZE=2.*set plugin: ddp"),
        ({"plugin": "ddp", "tp": 2}, 2, "tp: 2 needs plugin: 3d"),
        ({"plugin": "3d", "tp": 3}, 4, r"tp: 3 must divide the world size 4.*\[1, 2, 4\]"),
        ({"plugin": "3d", "tp": 8}, 8, "does not divide the model's num_key_value_heads"),
        ({"plugin": "gemini", "zero": 2}, 2, "zero: 2 applies to plugin 3d only"),
        ({"plugin": "3d", "zero": 1}, 2, "zero: 1: use 2"),
        ({"plugin": "gemini", "precision": "fp16"}, 2, "fp16 with plugin gemini.*use precision: bf16"),
        ({"plugin": "zero2", "pp": 2}, 2, "pipeline parallelism is not implemented"),
        ({"plugin": "zero2", "train": {"lora_rank": 4}}, 2, "stages\\[0\\].lora_rank: LoRA with"),
    ],
)  # fmt: skip
def test_bad_layouts_are_refused_before_loading(tmp_path, top, world, match) -> None:
    with pytest.raises(UserError, match=match):
        parallel_dims(recipe(tmp_path, **top), world=world)


def test_parallelize_applies_checkpointing_and_compile_in_place() -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from langgraft.distributed.dims import ParallelDims
    from langgraft.distributed.parallelize import parallelize

    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    model = LlamaForCausalLM(cfg)
    names = [n for n, _ in model.named_parameters()]
    parallelize(model, ParallelDims("none", 1), torch.device("cpu"), True, True)
    # torchtitan's order: the checkpoint wrapper around each layer, then compile of the wrapped
    # block (FSDP2 last, when sharded)
    assert all(isinstance(layer, CheckpointWrapper) for layer in model.model.layers)
    assert all(layer._compiled_call_impl is not None for layer in model.model.layers)
    # checkpoints and exports keep the HF keys (get_model_state_dict drops the wrapper prefix)
    assert list(get_model_state_dict(model)) == names
