"""The run directory's contract: one run per `out/`, one writer at a time, nothing of the user's
deleted.

- A fresh run into a directory that holds another run's files (checkpoints/, metrics.jsonl,
  export/, ...) is refused: mixing them would let `_prune` and `--resume auto` pick the wrong
  run's checkpoints. `--resume auto|PATH` continues the run; `--overwrite` deletes exactly those
  run files (never anything else in the directory, and never when an input of the recipe lives
  inside them).
- `--resume auto` that finds no checkpoint starts fresh only over leftovers of the same recipe
  (a first attempt that died before its first checkpoint), not over another run's files.
- Two `train` processes on one `out/` cannot both write it: the first holds an exclusive
  `fcntl.flock` on `out/.langgraft-train.lock` (holding its pid) until it exits; the second is
  refused, naming that pid. The kernel drops the lock when the process dies, so a SIGKILLed run
  leaves nothing stale behind; a run that ends removes the lock file (and an `out/` it created
  and wrote nothing into).
- A `--resume` that the checkpoint refuses (train/resume.py) is refused before `out/` is
  touched: no recipe.json rewritten, no lock file, no new directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from langgraft.errors import UserError

LOCK_FILE = ".langgraft-train.lock"
# Everything a run writes into its directory (recipe.json last: it says which recipe ran).
RUN_ENTRIES = (
    "checkpoints",
    "export",
    "tensorboard",
    "metrics.jsonl",
    "summary.json",
    "recipe.json",
)


def run_entries(out: Path) -> list[str]:
    """The names of a previous run's files present in `out`."""
    return [n for n in RUN_ENTRIES if (out / n).exists()]


class RunLock:
    """An exclusive, non-blocking lock on a run directory, held until `release()` (or exit).

    `release()` removes the lock file, and `out/` itself when this lock created it and the run
    wrote nothing (a refused run leaves no trace)."""

    def __init__(self, out: Path) -> None:
        import fcntl

        self._created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        self.out, self.path = out, out / LOCK_FILE
        while True:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(self._fd, 64, 0).decode("ascii", "replace").strip() or "?"
                os.close(self._fd)
                raise UserError(
                    f"{out}: another `langgraft train` (pid {holder}) is writing this run "
                    "directory; wait for it to finish or choose another out"
                ) from None
            # The holder before us may have unlinked the file between our open and our lock:
            # lock the file that is there now, or two runs would hold different inodes.
            try:
                if os.fstat(self._fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(self._fd)
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                self.path.unlink()  # while still holding it: no one can lock it meanwhile
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = -1
            if self._created:
                with contextlib.suppress(OSError):
                    self.out.rmdir()  # only if empty


def _inside(path: Path, root: Path) -> bool:
    path, root = path.resolve(), root.resolve()
    return path == root or root in path.parents


def check_run_dir(
    out: Path, recipe: dict[str, Any], resume: str | None, found: Path | None, overwrite: bool
) -> list[str]:
    """Raise UserError unless this run may write `out`; returns the entries to delete first."""
    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other (continue vs replace)")
    present = run_entries(out)
    if not present:
        return []
    if resume and found is not None:
        return []
    if resume and not overwrite:  # --resume auto without a checkpoint yet
        previous = _read_json(out / "recipe.json")
        if previous == json.loads(json.dumps(recipe)):
            # This recipe's own first attempt died before its first checkpoint. checkpoints/
            # holds at most half-written saves, which the next save's pruning removes.
            return [n for n in present if n not in ("recipe.json", "checkpoints")]
        raise UserError(
            f"{out}: --resume auto found no checkpoint, but the directory holds another run's "
            f"files ({', '.join(present)}); pass --overwrite to replace them or choose another out"
        )
    if not overwrite:
        raise UserError(
            f"{out}: holds a previous run ({', '.join(present)}); pass --resume auto to continue "
            "it, --overwrite to replace it, or choose another out"
        )
    return present


def clear_run(out: Path, entries: list[str], inputs: list[str]) -> None:
    """Delete `entries` of `out`, refusing if an input of this run lives inside one of them."""
    for name in entries:
        for inp in inputs:
            if _inside(Path(inp), out / name):
                raise UserError(
                    f"--overwrite would delete {out / name}, which holds this run's input {inp}; "
                    "copy it elsewhere or choose another out"
                )
    for name in entries:
        target = out / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()


def recipe_inputs(recipe: Any, init_from: str | None) -> list[str]:
    """Every path the run reads (model, tokenizer, datasets, eval data, --init-from)."""
    paths = [recipe.model, recipe.tokenizer, init_from, recipe.eval.mc_data, *recipe.eval.data]
    paths += [d.path for s in recipe.stages for d in s.data]
    return [str(p) for p in paths if p]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
