"""`parallelize(model, recipe)`: the one function that prepares a model for its parallel layout,
plus the few collectives the trainer needs (rank, barrier, sums across ranks).

Order follows torchtitan's `parallelize_llama`: tensor parallel, activation checkpointing,
compile, then data-parallel wrapping. `plugin: ddp` under torchrun is PyTorch
DistributedDataParallel (gloo on CPU, nccl on CUDA); the sharded Colossal plugin names are
accepted by the recipe and refused here with a clear message until FSDP2/TP exists, so a run
never silently trains unsharded.

    torchrun --nproc_per_node 2 -m langgraft train --config R.yaml --plugin=ddp
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import torch

from langgraft.errors import UserError

log = logging.getLogger(__name__)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def check_layout(plugin: str) -> None:
    """Refuse layouts this build cannot run, before any model is loaded."""
    n = world_size()
    if plugin not in ("none", "ddp"):
        raise UserError(
            f"plugin: {plugin!r} (Colossal's sharded plugin) is reserved for the FSDP2/tensor-"
            "parallel trainer and not implemented yet; use plugin: ddp (torchrun) or none"
        )
    if n > 1 and plugin != "ddp":
        raise UserError(
            f"WORLD_SIZE={n} (torchrun) but plugin is {plugin!r}: every process would train its "
            "own copy; set plugin: ddp in the recipe or pass --plugin=ddp"
        )


def init_distributed(device: torch.device) -> torch.device:
    """Join the torchrun process group (gloo on CPU, nccl on CUDA); returns this rank's device.
    A no-op with one process."""
    if world_size() == 1:
        return device
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kw = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, **kw)
    log.info("rank %d/%d on %s (%s)", rank(), world_size(), device, dist.get_backend())
    return device


def close_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _distributed() -> bool:
    import torch.distributed as dist

    return world_size() > 1 and dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if _distributed():
        import torch.distributed as dist

        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """rank 0's `obj` on every rank."""
    if not _distributed():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if not _distributed():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def sum_int(value: int, device: torch.device) -> int:
    """Sum of an integer over ranks (exact: int64)."""
    if not _distributed():
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t)
    return int(t.item())


def no_sync(model: Any, last: bool) -> Any:
    """DDP's `no_sync()` on every accumulation micro-step but the last (one all-reduce per
    optimizer step); a plain model needs nothing."""
    if last or not hasattr(model, "no_sync"):
        return contextlib.nullcontext()
    return model.no_sync()


def parallelize(model: Any, grad_checkpoint: bool) -> Any:
    """Apply the single-model part of the layout in place and return the model."""
    if grad_checkpoint:
        # Non-reentrant checkpointing works with frozen inputs (embeddings-only stages); the
        # reentrant variant silently drops gradients when no input requires grad.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        log.info("activation checkpointing on")
    return model


def data_parallel(model: Any, device: torch.device) -> Any:
    """Wrap for one stage's forward/backward: DDP over the parameters that train in it.

    Applied per stage, after freezing/LoRA, because DDP fixes its set of gradient buckets at
    construction; the trainer keeps the unwrapped model for saving, eval and export. DDP
    broadcasts rank 0's parameters here, so a LoRA initialisation is the same on every rank."""
    if world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)
