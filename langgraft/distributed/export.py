"""Hugging Face exports of the training model: a directory `from_pretrained` loads (config,
safetensors weights, tokenizer, the resolved recipe, langgraft.json).

Sharded layouts (FSDP2, tensor parallel) write from every rank: each rank writes its own shards
through DCP's `HuggingFaceStorageWriter`, which then consolidates them into full tensors in one
safetensors file (`model.safetensors`, the layout `save_pretrained` writes for one file); no
rank gathers the model into memory. Rank 0 writes the small files and publishes the directory
atomically. One process, DDP and tensor parallel with a padded vocabulary (whose padded rows
must be cut) gather the full state on rank 0 and use `save_pretrained`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from langgraft.distributed.parallel import barrier, broadcast_object, rank
from langgraft.errors import UserError


def full_hf_model(model: Any) -> Any:
    """Collective: every rank calls it; rank 0 gets a plain HF model with the full fp32 weights
    (gathered from FSDP2/TP shards onto CPU, vocabulary padding dropped), the others None."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from transformers import AutoModelForCausalLM

    from langgraft.distributed.parallelize import real_vocab_size

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model, options=opts)
    if rank() != 0:
        return None
    real = real_vocab_size(model)
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        if key in state:
            state[key] = state[key][:real]
    cfg = copy.deepcopy(model.config)
    cfg.vocab_size = real
    if hasattr(cfg, "langgraft_real_vocab_size"):
        del cfg.langgraft_real_vocab_size
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    plain.load_state_dict(state, strict=False, assign=True)
    if getattr(cfg, "tie_word_embeddings", False):
        plain.tie_weights()
    # Non-persistent buffers (rotary inv_freq) stay on meta: save_pretrained does not write them.
    left = [n for n, p in plain.named_parameters() if p.is_meta]
    if left:
        raise UserError(f"export: weights missing from the training state: {left[:3]}")
    return plain


def export_hf(
    model: Any, tokenizer: Any, out: Path, recipe: dict[str, Any], meta: dict | None = None
) -> Path:
    """Write the export directory `out` (replaced if it exists). Collective under every plugin:
    sharded layouts write from every rank, the others gather on rank 0 (module docstring)."""
    from langgraft.fsutil import atomic_output_dir

    if _writes_shards(model):
        return _export_sharded(model, tokenizer, out, recipe, meta)
    plain = full_hf_model(model)
    if plain is None:
        barrier()
        return out
    with atomic_output_dir(out, overwrite=True) as tmp:
        plain.save_pretrained(str(tmp), safe_serialization=True)
        _write_small_files(tmp, tokenizer, recipe, meta)
    barrier()  # the other ranks wait here, not in the next step's collective (NCCL timeout)
    return out


def _writes_shards(model: Any) -> bool:
    from torch.distributed.tensor import DTensor

    from langgraft.distributed.parallelize import real_vocab_size

    sharded = any(isinstance(p, DTensor) for p in model.parameters())
    padded = real_vocab_size(model) != model.get_input_embeddings().weight.shape[0]
    return sharded and not padded


def _write_small_files(tmp: Path, tokenizer: Any, recipe: dict[str, Any], meta: dict | None) -> None:
    tokenizer.save_pretrained(str(tmp))
    (tmp / "langgraft_recipe.json").write_text(json.dumps(recipe, indent=2, ensure_ascii=False))
    if meta is not None:  # langgraft.json + the chat template (train/exportmeta.py)
        from langgraft.train.exportmeta import write_export_meta

        write_export_meta(tmp, meta)


def _export_sharded(
    model: Any, tokenizer: Any, out: Path, recipe: dict[str, Any], meta: dict | None
) -> Path:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    from langgraft.fsutil import atomic_output_dir

    state = get_model_state_dict(model)  # this rank's shards, named as in the HF model
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # stored once, as save_pretrained does
    main = rank() == 0
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_output_dir(out, overwrite=True)) if main else None
        tmp = Path(broadcast_object(str(tmp) if main else None))
        writer = HuggingFaceStorageWriter(str(tmp), save_distributed=True,
                                          enable_consolidation=True)  # fmt: skip
        dcp.save(state, storage_writer=writer)  # collective; rank 0 consolidates
        if main:
            _single_file(tmp)
            cfg = copy.deepcopy(model.config)
            cfg.save_pretrained(str(tmp))
            if getattr(model, "generation_config", None) is not None:
                model.generation_config.save_pretrained(str(tmp))
            _write_small_files(tmp, tokenizer, recipe, meta)
    barrier()
    return out


def _single_file(tmp: Path) -> None:
    """The consolidated `model-00001-of-00001.safetensors` + index -> `model.safetensors`."""
    shutil.rmtree(tmp / "sharded")
    files = sorted(tmp.glob("model-*.safetensors"))
    if len(files) == 1:
        files[0].rename(tmp / "model.safetensors")
        (tmp / "model.safetensors.index.json").unlink(missing_ok=True)
