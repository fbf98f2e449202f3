"""Resumable checkpoints and Hugging Face exports.

Layout of a run directory's checkpoints/:

    step-00000120/   model.safetensors  optimizer.pt  scheduler.pt  scaler.pt  rng.pt
                     [rng-rank1.pt ...]  trainer_state.json  recipe.json
    latest           "step-00000120" (written last)

A checkpoint is written into a hidden temporary directory, fsynced and renamed into place; only
then is `latest` replaced (atomically), and only then are old checkpoints pruned to the newest
`keep_last`. A crash at any point leaves `latest` naming a complete checkpoint. Everything is
read back with safetensors or `torch.load(weights_only=True)`.

Under DDP the weights and optimizer state are identical on every rank, so rank 0 writes them;
each rank writes its own RNG state (rng.pt for rank 0, rng-rankR.pt for the others) into rank
0's temporary directory before it is renamed, and every rank waits at a barrier until the
checkpoint is complete, so no rank can read a half-written one.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch

from langgraft.distributed.parallel import barrier, broadcast_object, rank
from langgraft.errors import UserError

log = logging.getLogger(__name__)

LATEST = "latest"
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
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def rng_file(r: int) -> str:
    return "rng.pt" if r == 0 else f"rng-rank{r}.pt"


def load_rng_state(path: Path) -> None:
    """Restore this rank's RNG state from checkpoint `path`."""
    f = path / rng_file(rank())
    if not f.is_file():
        raise UserError(
            f"{path}: no {f.name}; the checkpoint was written by fewer processes than this "
            "run has (resume with the same number of processes)"
        )
    set_rng_state(torch.load(f, weights_only=True))


def set_rng_state(s: dict[str, Any]) -> None:
    random.setstate((s["python_version"], tuple(s["python"]), s["python_gauss"]))
    keys = s["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, s["numpy_pos"], *s["numpy_gauss"]))
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


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
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    trainer_state: dict[str, Any],
    recipe: dict[str, Any],
    keep_last: int,
) -> Path:
    """Write checkpoint `step` atomically under `root`; returns its directory. Collective
    under DDP: every rank calls it (rank 0 writes the shared state, each rank its RNG)."""
    from safetensors.torch import save_model

    name = step_name(step)
    final = root / name
    main = rank() == 0
    tmp = root / f".tmp-{name}-{os.getpid()}"
    if main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_model(model, str(tmp / "model.safetensors"))  # handles tied embeddings
        if os.environ.get(_KILL_IN_SAVE) == str(step):
            os.kill(os.getpid(), signal.SIGKILL)
        _torch_save(optimizer.state_dict(), tmp / "optimizer.pt")
        _torch_save(scheduler.state_dict(), tmp / "scheduler.pt")
        _torch_save(scaler.state_dict() if scaler is not None else {}, tmp / "scaler.pt")
        (tmp / "recipe.json").write_text(json.dumps(recipe, indent=2, ensure_ascii=False))
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2))
    tmp = Path(broadcast_object(str(tmp)))  # rank 0's directory exists from here on
    _torch_save(rng_state(), tmp / rng_file(rank()))
    barrier()  # every rank's RNG file is in before the rename
    if main:
        _publish(root, tmp, final, name, keep_last)
    barrier()  # nobody reads or resumes from a checkpoint that is not complete
    return final


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
    done = sorted(p for p in root.glob("step-*") if p.is_dir())
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
    return path


def load_model_weights(model: torch.nn.Module, path: Path) -> None:
    """Weights only: a checkpoint directory or a HF model directory (`--init-from`)."""
    from safetensors.torch import load_file, load_model

    if (path / "trainer_state.json").is_file():
        missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=True)
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
    load_model_weights(model, path)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    scaler_state = torch.load(path / "scaler.pt", weights_only=True)
    if scaler is not None and scaler_state:
        scaler.load_state_dict(scaler_state)
    load_rng_state(path)


def read_trainer_state(path: Path) -> dict[str, Any]:
    return json.loads((path / "trainer_state.json").read_text())


def export_hf(model: Any, tokenizer: Any, out: Path, recipe: dict[str, Any]) -> Path:
    """A directory `from_pretrained` loads: config, safetensors weights, tokenizer, recipe."""
    from langgraft.fsutil import atomic_output_dir

    with atomic_output_dir(out, overwrite=True) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        (tmp / "langgraft_recipe.json").write_text(json.dumps(recipe, indent=2, ensure_ascii=False))
    return out
