"""Resumable checkpoints (torch.distributed.checkpoint); Hugging Face exports are export.py.

Layout of a run directory's checkpoints/:

    step-00000120/   dcp/ (model + AdamW state: .metadata + one shard file per rank)
                     scheduler.pt  scaler.pt  rng.pt [rng-rank1.pt ...]
                     trainer_state.json  recipe.json
    latest           "step-00000120" (written last)

Model and optimizer go through DCP with `get_state_dict`/`set_state_dict`, which name every
tensor by its unwrapped parameter name: a checkpoint written by one plugin and world size (DDP
replicas, FSDP2 shards, TP x FSDP2 shards, one process) loads under any other, each rank reading
only the pieces of its own shards, straight into the rank's own device (or CPU with offload).
Everything else is small and read with `fsutil.load_tensors` (weights_only) or JSON; DCP's own
pickles go through `safe_dcp` (the threat model is there): no checkpoint can run code.

A checkpoint is written into a hidden temporary directory (rank 0 names it, every rank writes its
shards and RNG state into it), fsynced and renamed into place; only then is `latest` replaced
(atomically), and only then are old checkpoints pruned to the newest `keep_last`. A crash at any
point leaves `latest` naming a complete checkpoint. Saving and loading are collective: every
rank calls them, and every rank waits at a barrier until the checkpoint is complete.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from langgraft.distributed.parallel import barrier, broadcast_object, rank, world_size
from langgraft.errors import UserError
from langgraft.fsutil import human_size, load_tensors

log = logging.getLogger(__name__)

LATEST = "latest"
# One process without a process group is DCP's no-dist mode, a supported case, not a problem.
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable")
# Fault injection for the atomicity test: SIGKILL this process in the middle of saving the
# checkpoint of this global step (after the weights are written, before the rename).
_KILL_IN_SAVE = "LANGGRAFT_TEST_KILL_IN_SAVE"


def step_name(step: int) -> str:
    return f"step-{step:08d}"


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "python": random.getstate()[1],
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_gauss": (int(np_state[3]), float(np_state[4])),
        "torch": torch.get_rng_state(),
        # This rank's own device only: a list of every visible GPU's state (what older
        # checkpoints hold) cannot be restored on a node with fewer GPUs.
        "cuda": torch.cuda.get_rng_state(torch.cuda.current_device())
        if torch.cuda.is_available()
        else [],
    }


def rng_file(r: int) -> str:
    return "rng.pt" if r == 0 else f"rng-rank{r}.pt"


def load_rng_state(path: Path) -> None:
    """Restore this rank's RNG state from checkpoint `path`. A rank the checkpoint did not have
    (resumed on more processes) keeps its seeded state: only NEFTune noise draws from it."""
    f = path / rng_file(rank())
    if not f.is_file():
        log.warning("%s: no %s (written by fewer processes); rank %d keeps its seeded RNG",
                    path, f.name, rank())  # fmt: skip
        return
    set_rng_state(load_tensors(f, map_location="cpu"))


def set_rng_state(s: dict[str, Any]) -> None:
    random.setstate((s["python_version"], tuple(s["python"]), s["python_gauss"]))
    keys = s["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, s["numpy_pos"], *s["numpy_gauss"]))
    torch.set_rng_state(s["torch"])
    if torch.cuda.is_available():
        _set_local_cuda_rng_state(s["cuda"])


def _set_local_cuda_rng_state(saved: torch.Tensor | list[torch.Tensor]) -> None:
    """Restore the state of this rank's device. `saved` is that one state, or (checkpoints
    before issue 20) the list of every GPU the saving process saw, of which this rank's device
    index is taken; a list without it (resumed on a node with more GPUs) keeps the seeded state.
    A checkpoint without CUDA state (saved on CPU) keeps it too."""
    device = torch.cuda.current_device()
    if isinstance(saved, torch.Tensor):
        torch.cuda.set_rng_state(saved, device)
    elif device < len(saved):
        torch.cuda.set_rng_state(saved[device], device)
    elif saved:
        log.warning("the checkpoint's RNG state has %d CUDA devices, none for cuda:%d; rank %d "
                    "keeps its seeded CUDA RNG", len(saved), device, rank())  # fmt: skip


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _torch_save(obj: Any, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(
    root: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    scaler: Any,
    trainer_state: dict[str, Any],
    recipe: dict[str, Any],
    keep_last: int,
) -> Path:
    """Write checkpoint `step` atomically under `root`; returns its directory. Collective:
    every rank calls it (DCP writes each rank's shards; rank 0 the small shared files)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    name = step_name(step)
    final = root / name
    main = rank() == 0
    tmp = root / f".tmp-{name}-{os.getpid()}"
    if main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    tmp = Path(broadcast_object(str(tmp)))  # rank 0's directory exists from here on
    if optimizer is None:  # a stage end: the next stage starts with a fresh optimizer
        state = {"model": get_model_state_dict(model)}
    else:
        model_sd, optim_sd = get_state_dict(model, optimizer)
        state = {"model": model_sd, "optim": optim_sd}
    try:
        dcp.save(state, checkpoint_id=str(tmp / "dcp"))
        if main and os.environ.get(_KILL_IN_SAVE) == str(step):
            os.kill(os.getpid(), signal.SIGKILL)
        if main:
            _torch_save(scheduler.state_dict(), tmp / "scheduler.pt")
            _torch_save(scaler.state_dict() if scaler is not None else {}, tmp / "scaler.pt")
            (tmp / "recipe.json").write_text(json.dumps(recipe, indent=2, ensure_ascii=False))
            state = {**trainer_state, "world_size": world_size()}
            (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
        _torch_save(rng_state(), tmp / rng_file(rank()))
    except (Exception, CheckpointException) as e:  # DCP's is a BaseException
        if not _disk_full(e):
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # the partial checkpoint; `latest` is untouched
        last = root / LATEST
        good = root / last.read_text().strip() if last.is_file() else None
        # The last good checkpoint holds the same tensors: its size is what the new one needs.
        need = sum(f.stat().st_size for f in good.rglob("*") if f.is_file()) if good else 0
        free = shutil.disk_usage(root).free
        size = f"it needs about {human_size(need)} (the last one's size), " if need else ""
        raise UserError(
            f"{final}: No space left on device while writing the checkpoint of step {step} "
            f"({size}{human_size(free)} free); the last good checkpoint is "
            f"{good or 'none yet'} (free space, then --resume auto continues from it exactly)"
        ) from None
    barrier()  # every rank's RNG file is in before the rename
    if main:
        _publish(root, tmp, final, name, keep_last)
    barrier()  # nobody reads or resumes from a checkpoint that is not complete
    return final


def _disk_full(e: BaseException) -> bool:
    """Whether `e` (or a rank's failure inside DCP's CheckpointException, or torch.save's
    "unexpected pos" from a short write) is a full disk."""
    import errno

    causes = [exc for exc, _trace in (getattr(e, "failures", None) or {}).values()] or [e]
    for c in causes:
        while c is not None:
            if isinstance(c, OSError) and c.errno in (errno.ENOSPC, errno.EDQUOT):
                return True
            if "No space left on device" in str(c) or "unexpected pos" in str(c):
                return True
            c = c.__cause__ or c.__context__
    return False


def _publish(root: Path, tmp: Path, final: Path, name: str, keep_last: int) -> None:
    _fsync_dir(tmp)
    if final.exists():  # the same step saved again after a resume: replace it
        trash = root / f".old-{name}-{os.getpid()}"
        final.rename(trash)
        shutil.rmtree(trash)
    tmp.rename(final)
    latest_tmp = root / f".{LATEST}.tmp"
    latest_tmp.write_text(name + "\n")
    os.replace(latest_tmp, root / LATEST)
    _fsync_dir(root)
    _prune(root, keep_last, keep=final)


def _prune(root: Path, keep_last: int, keep: Path) -> None:
    for stale in root.glob(".tmp-step-*"):  # left by a crash mid-save
        shutil.rmtree(stale, ignore_errors=True)
    # Only checkpoints up to the one just written count: a later step-* belongs to a timeline
    # that a resume from an earlier checkpoint abandoned; it is left alone and never makes
    # the new run's checkpoints look old enough to prune.
    done = sorted(p for p in root.glob("step-*") if p.is_dir() and p.name <= keep.name)
    for old in done[:-keep_last]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(out: Path, resume: str) -> Path | None:
    """`--resume auto` -> the latest checkpoint of the run (None if there is none yet);
    `--resume PATH` -> that checkpoint directory."""
    if resume == "auto":
        latest = out / "checkpoints" / LATEST
        if not latest.is_file():
            return None
        path = out / "checkpoints" / latest.read_text().strip()
    else:
        path = Path(resume)
    if not (path / "trainer_state.json").is_file():
        raise UserError(f"{path}: not a complete langgraft checkpoint (no trainer_state.json)")
    check_metadata(path)
    return path


def check_metadata(path: Path) -> None:
    """Refuse a checkpoint directory whose DCP metadata is missing, damaged or would run code,
    before any model is loaded (safe_dcp). A HF model directory (no trainer_state.json) passes."""
    from langgraft.distributed import safe_dcp

    if not (path / "trainer_state.json").is_file():
        return
    if not (path / "dcp" / ".metadata").is_file():
        raise UserError(f"{path}: no dcp/.metadata; not a checkpoint of this langgraft version")
    safe_dcp.read_metadata(path / "dcp" / ".metadata")


def _dcp_load(path: Path, state: dict[str, Any]) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    from langgraft.distributed import safe_dcp

    # Refused here, on every rank, before DCP would swallow the error into its fallbacks.
    check_metadata(path)
    try:
        dcp.load(state, storage_reader=safe_dcp.reader(path / "dcp"), planner=safe_dcp.planner())
    except (Exception, CheckpointException) as e:  # a BaseException: per-rank failures
        failures = getattr(e, "failures", {}) or {}
        causes = [exc for exc, _trace in failures.values()] or [e]
        refused = [c for c in causes if isinstance(c, UserError)]
        if refused:  # safe_dcp refused a value: that message, not "does not fit"
            raise UserError(f"{path / 'dcp'}: {refused[0]}") from None
        first = str(causes[0]).strip().splitlines()[-1][:300] if str(causes[0]).strip() else ""
        raise UserError(
            f"{path}: the checkpoint does not fit this model/layout "
            f"({first or type(causes[0]).__name__}); a vocabulary "
            "padded for tp (plugin 3d) resumes only under the same tp"
        ) from None


def load_model_weights(model: torch.nn.Module, path: Path) -> None:
    """Weights only: a checkpoint directory (any layout, collective) or a HF model directory
    (`--init-from`, before `parallelize`)."""
    from safetensors.torch import load_file

    if (path / "trainer_state.json").is_file():
        from torch.distributed.checkpoint.state_dict import (
            get_model_state_dict,
            set_model_state_dict,
        )

        state = {"model": get_model_state_dict(model)}
        _dcp_load(path, state)
        set_model_state_dict(model, state["model"])
        return
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise UserError(f"{path}: no *.safetensors weights to initialise from")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    result = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    missing = set(result.missing_keys) - tied
    if missing or result.unexpected_keys:
        raise UserError(
            f"{path}: weights do not fit the model (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(result.unexpected_keys)[:3]}); same architecture and vocabulary?"
        )


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any, scaler: Any
) -> None:
    """Full state into an already laid-out model and a fresh optimizer (collective)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    _dcp_load(path, state)
    set_state_dict(model, optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optim"])  # fmt: skip
    # small host-side state: on CPU, never onto GPU 0 from every rank
    scheduler.load_state_dict(load_tensors(path / "scheduler.pt", map_location="cpu"))
    scaler_state = load_tensors(path / "scaler.pt", map_location="cpu")
    if scaler is not None and scaler_state:
        scaler.load_state_dict(scaler_state)
    load_rng_state(path)


def read_trainer_state(path: Path) -> dict[str, Any]:
    return json.loads((path / "trainer_state.json").read_text())


def read_recipe(path: Path) -> dict[str, Any]:
    """The resolved recipe the checkpoint was written with."""
    return json.loads((path / "recipe.json").read_text(encoding="utf-8"))
