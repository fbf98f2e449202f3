"""Process-level helpers: rank and world from torchrun's environment, joining the process
group, and the few collectives the trainer needs (optionally over one mesh dimension's group,
e.g. the data-parallel ranks). The layout itself is `dims.ParallelDims` + `parallelize.py`.

    torchrun --nproc_per_node 2 -m langgraft train --config R.yaml --plugin=gemini
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

import torch

log = logging.getLogger(__name__)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def init_distributed(
    device: torch.device, single_process_group: bool = False, timeout_s: float | None = None
) -> torch.device:
    """Join the torchrun process group (gloo on CPU, nccl on CUDA); returns this rank's device.
    With one process nothing happens, unless `single_process_group` (FSDP2 on one device, e.g.
    CPU offload on one GPU, needs a group of one). `timeout_s` bounds every collective of the
    group (the recipe's dist_timeout_s); None keeps torch's default."""
    if world_size() == 1 and not single_process_group:
        return device
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kw: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
        if world_size() == 1:
            kw.update(store=dist.HashStore(), rank=0, world_size=1)
        if timeout_s is not None:
            kw["timeout"] = timedelta(seconds=timeout_s)
        dist.init_process_group(backend=backend, **kw)
    log.info("rank %d/%d on %s (%s)", rank(), world_size(), device, dist.get_backend())
    return device


def close_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


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


def gather_objects(obj: Any, group: Any = None) -> list[Any]:
    """[obj of each rank of `group` (default: all ranks)], on every rank of it."""
    if not _distributed():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, obj, group=group)
    return out


def sum_int(value: int, device: torch.device, group: Any = None) -> int:
    """Sum of an integer over the ranks of `group` (default: all ranks); exact (int64)."""
    if not _distributed():
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, group=group)
    return int(t.item())


def sum_tensor(t: torch.Tensor, group: Any = None) -> torch.Tensor:
    """`t` summed over the ranks of `group` in place, on its device: a collective, no host read
    (none at all over a group of one rank: tp-only layouts)."""
    if _distributed():
        import torch.distributed as dist

        if dist.get_world_size(group) > 1:
            dist.all_reduce(t, group=group)
    return t


def sum_float(value: float, device: torch.device, group: Any = None) -> float:
    """Sum of a float over the ranks of `group` (float64 all-reduce, no pickling)."""
    if not _distributed():
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, group=group)
    return float(t.item())


def data_parallel(model: Any, device: torch.device, plugin: str) -> Any:
    """plugin ddp: wrap for one stage's forward/backward, DDP over the parameters that train
    in it. Any other plugin: the model itself (FSDP2/TP were applied once by `parallelize`).

    Applied per stage, after freezing/LoRA, because DDP fixes its set of gradient buckets at
    construction; the trainer keeps the unwrapped model for saving, eval and export. DDP
    broadcasts rank 0's parameters here, so a LoRA initialisation is the same on every rank."""
    if world_size() == 1 or plugin != "ddp":
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)
