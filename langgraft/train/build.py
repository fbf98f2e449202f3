"""The model a run trains, built and laid out the way its layout needs.

One process (and DDP, whose ranks each hold a full replica anyway): `from_pretrained` on the
host, then `parallelize` moves it to the device.

Sharded layouts (FSDP2 plugins, tensor parallel) follow torchtitan: the model is built on the
meta device (no memory), laid out by `parallelize` (TP, activation checkpointing, compile,
FSDP2), materialised shard by shard with `to_empty`, then every rank reads only its own slices
of the safetensors files through DCP's Hugging Face storage reader (`get_slice`: no rank ever
holds the whole model; a 7B run on 8 ranks reads ~3.5 GB per rank instead of 28 GB). The
non-persistent rotary buffers, which no file holds, are recomputed from the config.
`--init-from` a checkpoint directory loads through DCP the same way (distributed/checkpoint.py);
from a HF directory, through the same reader.

One case keeps the host path: tensor parallel with an untied lm_head whose vocabulary does not
divide by tp. The padded rows exist only in the model (parallelize.py `pad_vocab`), so the
file's shapes do not match the shards; the full model is loaded on the host and padded first.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from langgraft.distributed import checkpoint as ckpt
from langgraft.distributed.dims import ParallelDims
from langgraft.distributed.parallelize import parallelize
from langgraft.errors import UserError
from langgraft.model.checks import check_model_dir, read_model_config
from langgraft.train.recipe import Recipe
from langgraft.train.setup import check_attention, load_model

log = logging.getLogger(__name__)


def build_model(
    recipe: Recipe, dims: ParallelDims, device: torch.device, init_from: Path | None = None
) -> Any:
    """The recipe's model (fp32 master weights) laid out for `dims` on `device`, weights from
    `init_from` when given, else from the recipe's model directory."""
    if not dims.sharded or _needs_vocab_padding(recipe, dims):
        model = load_model(recipe, device, on_cpu=dims.sharded)
        if init_from is not None:
            ckpt.load_model_weights(model, init_from)
        return _parallelize(model, recipe, dims, device)
    model = meta_model(recipe, device)
    model = _parallelize(model, recipe, dims, device)
    model.to_empty(device="cpu" if dims.offload else device)  # each rank's shards only
    source = init_from if init_from is not None else Path(recipe.model)
    if (source / "trainer_state.json").is_file():
        ckpt.load_model_weights(model, source)  # DCP, any layout
    else:
        load_hf_shards(model, source)
    init_non_persistent_buffers(model, device)
    log.info("model built on the meta device; each rank read its own shards of %s", source)
    return model


def _parallelize(model: Any, recipe: Recipe, dims: ParallelDims, device: torch.device) -> Any:
    return parallelize(model, dims, device, recipe.grad_checkpoint, recipe.compile,
                       recipe.precision)  # fmt: skip


def _needs_vocab_padding(recipe: Recipe, dims: ParallelDims) -> bool:
    cfg = read_model_config(recipe.model, remote_code_flag=False)
    tied = bool(cfg.get("tie_word_embeddings", False))
    return dims.tp > 1 and not tied and int(cfg.get("vocab_size", 0)) % dims.tp != 0


def meta_model(recipe: Recipe, device: torch.device) -> Any:
    """The recipe's architecture on the meta device (checked like `load_model`)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(recipe.model)
    check_attention(recipe.attn_implementation, device)
    check_model_dir(path, remote_code_flag=False)
    config = AutoConfig.from_pretrained(str(path))
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(
                config, dtype=torch.float32, attn_implementation=recipe.attn_implementation
            )
    except (ImportError, ValueError) as e:
        raise UserError(f"model: {path}: cannot load with {recipe.attn_implementation}: {e}") from e
    model.config.use_cache = False
    return model


def load_hf_shards(model: Any, source: Path) -> None:
    """Fill a laid-out, materialised model from a HF safetensors directory: each rank reads
    its own slices (collective)."""
    import torch.distributed.checkpoint as dcp
    from safetensors import safe_open
    from torch.distributed.checkpoint import DefaultLoadPlanner, HuggingFaceStorageReader
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        set_model_state_dict,
    )

    files = sorted(source.glob("*.safetensors"))
    if not files:
        raise UserError(f"{source}: no *.safetensors weights to load")
    names: set[str] = set()
    for f in files:
        with safe_open(str(f), framework="pt") as sf:
            names.update(sf.keys())
    state = get_model_state_dict(model)
    tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    missing = sorted(set(state) - names - tied)
    if missing:
        raise UserError(
            f"{source}: weights do not fit the model (missing {missing[:3]}); same "
            "architecture and vocabulary?"
        )
    # Partial: a tied lm_head has no tensor of its own in the files (it is the embedding).
    dcp.load(state, storage_reader=HuggingFaceStorageReader(str(source)),
             planner=DefaultLoadPlanner(allow_partial_load=True))  # fmt: skip
    set_model_state_dict(model, state)


def init_non_persistent_buffers(model: Any, device: torch.device) -> None:
    """Recompute the buffers no checkpoint holds (rotary `inv_freq`), left uninitialised by
    `to_empty`, by building each such module again from its config (a few KB)."""
    for name, module in model.named_modules():
        if not module._non_persistent_buffers_set:
            continue
        config = getattr(module, "config", None)
        if config is None:
            raise UserError(f"model: cannot recompute the buffers of {name or 'the model'} "
                            f"({type(module).__name__}) after building on the meta device")  # fmt: skip
        fresh = type(module)(config)
        for key in module._non_persistent_buffers_set:
            buf = getattr(module, key)
            buf.copy_(getattr(fresh, key).to(buf.device, buf.dtype))
        if hasattr(fresh, "attention_scaling"):
            module.attention_scaling = fresh.attention_scaling
