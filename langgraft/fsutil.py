"""Filesystem helpers: the one output contract every command uses, and hashing.

The contract (`atomic_output_dir`, `atomic_output_file`; `output_dir_in_place` for the demo):
nothing a user owns is destroyed.
- An output that is, contains or lies inside an input is refused (even with --overwrite).
- Without --overwrite an existing output is refused (an empty directory is reused).
- With --overwrite only a directory that langgraft wrote (it holds `.langgraft-output`) is
  replaced; a plain file, a symlink or any other directory is refused.
- The work happens in a scratch directory beside the output, which appears by rename only when
  the work succeeded; any failure removes the scratch directory.
- A lock file beside the output (`.NAME.lock`, holding the pid) is held for the whole run, and
  the final rename re-checks what is there, so two runs into one output cannot both "succeed".
- Directories are created with the permissions the umask allows (not mkdtemp's 0700), and
  files are given them at publish (safetensors writes 0600).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from langgraft.errors import UserError

MARKER = ".langgraft-output"
"""Written into every output directory; --overwrite replaces only directories that hold it."""

PathLike = str | os.PathLike


def _absolute(path: PathLike) -> Path:
    # abspath, not resolve: `--out .` must become the directory's own name in its parent, and a
    # symlink at --out must stay visible as one.
    return Path(os.path.abspath(path))


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_not_an_input(out: PathLike, inputs: Iterable[PathLike | None]) -> None:
    """Refuse an output that is, contains or lies inside one of the inputs."""
    target = Path(os.path.realpath(out))
    for given in inputs:
        if given is None or str(given) == "":
            continue
        src = Path(os.path.realpath(given))
        if _within(target, src) or _within(src, target):
            how = "is" if target == src else ("contains" if _within(src, target) else "is inside")
            raise UserError(
                f"{out}: the output {how} the input {given}; writing there could destroy the "
                "input, choose another --out"
            )


def check_output(
    out: PathLike, overwrite: bool, inputs: Iterable[PathLike | None] = (), kind: str = "dir"
) -> None:
    """The checks `atomic_output_dir`/`_file` make first, for a command to run before slow work."""
    check_not_an_input(_absolute(out), inputs)
    _check_replaceable(_absolute(out), overwrite, kind)


def _check_replaceable(out: Path, overwrite: bool, kind: str) -> None:
    """Raise unless `out` may be (re)placed: absent, an empty directory, or with --overwrite a
    langgraft output of this kind (a directory holding MARKER, or for files a regular file)."""
    if out.is_symlink():
        raise UserError(f"{out}: the output path is a symbolic link; give the real path")
    if not out.exists():
        return
    if kind == "dir":
        if out.is_dir() and not any(out.iterdir()):
            return
        if not overwrite:
            raise UserError(f"{out}: output path already exists (pass --overwrite to replace it)")
        if not out.is_dir():
            raise UserError(
                f"{out}: is a file, not a langgraft output directory; --overwrite replaces only "
                "directories that langgraft wrote, remove it yourself or choose another --out"
            )
        if not (out / MARKER).is_file():
            raise UserError(
                f"{out}: this directory was not written by langgraft (no {MARKER} in it); "
                "--overwrite replaces only langgraft outputs, remove it yourself or choose "
                "another --out"
            )
    else:
        if out.is_dir():
            raise UserError(f"{out}: is a directory; the output must be a file path")
        if not overwrite:
            raise UserError(f"{out}: output file already exists (pass --overwrite to replace it)")
        if not out.is_file():
            raise UserError(f"{out}: not a regular file; refusing to replace it")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[Path]:
    """Hold `.NAME.lock` beside `out` (fcntl, non-blocking) for the duration; the file holds the
    holder's pid, so a refused run can say who is writing."""
    lock = out.with_name(f".{out.name}.lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with contextlib.suppress(OSError):
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise UserError(
                f"{out}: another langgraft run (pid {holder or '?'}) is writing this output; "
                f"wait for it to finish (lock file {lock})"
            ) from None
        # The previous holder may have removed the file between our open and our lock: retry on
        # the file that is there now, or two runs would hold locks on different inodes.
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield lock
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)


def _follow_umask(directory: Path) -> None:
    """Give every file written into an output the mode the umask allows. Some writers create
    files 0600 whatever the umask (safetensors' `save_file`, behind every `save_pretrained`),
    which left model.safetensors unreadable to the group while its config.json was not."""
    want = 0o666 & ~_umask()
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_mode & 0o666 != want:
                os.chmod(path, want | (st.st_mode & 0o111 & ~_umask()))


def _remove_stale_scratch(out: Path) -> None:
    """Scratch entries of runs that died without cleaning up (SIGKILL, power loss). Only called
    while holding the lock, so no live run owns them."""
    name = glob.escape(out.name)
    for p in out.parent.glob(f".{name}.tmp-*"):
        with contextlib.suppress(OSError):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    for p in out.parent.glob(f".{name}.old-*"):
        if not (p.is_dir() and (p / MARKER).is_file()):
            continue
        if out.is_dir() and not out.is_symlink() and _is_partial(out):
            shutil.rmtree(out)  # an in-place run died over it: the old output comes back
        if out.exists() or out.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:  # died between moving the old output aside and publishing the new one
            p.rename(out)


def _write_marker(directory: Path, partial: bool = False) -> None:
    record = {"written_by": "langgraft", "pid": os.getpid(), "argv": sys.argv[1:]}
    if partial:
        record["partial"] = True
    (directory / MARKER).write_text(json.dumps(record, ensure_ascii=False) + "\n")


def _is_partial(directory: Path) -> bool:
    """A directory `output_dir_in_place` was still writing when its process died."""
    try:
        return bool(json.loads((directory / MARKER).read_text()).get("partial"))
    except (OSError, ValueError, AttributeError):
        return False


@contextlib.contextmanager
def _claimed(
    out: PathLike, overwrite: bool, inputs: Iterable[PathLike | None], kind: str
) -> Iterator[Path]:
    """The refusals every output shares, then its lock: `out` (absolute) is not an input, may
    be replaced, and is ours for the block (checked again under the lock: a run that held it
    may just have finished; its stale scratch is removed)."""
    out = _absolute(out)
    check_not_an_input(out, inputs)
    _check_replaceable(out, overwrite, kind)
    out.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(out):
        _remove_stale_scratch(out)
        _check_replaceable(out, overwrite, kind)
        yield out


@contextlib.contextmanager
def atomic_output_dir(
    out: PathLike, overwrite: bool = False, inputs: Iterable[PathLike | None] = ()
) -> Iterator[Path]:
    """Yield a scratch directory beside `out`; rename it to `out` only if the block succeeds.

    A failure (or Ctrl-C) leaves nothing at `out`: no half-written tokenizer or model that a later
    stage could load by mistake. See the module docstring for what is refused.
    """
    given = out
    with _claimed(out, overwrite, inputs, "dir") as out:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
        try:
            os.chmod(tmp, 0o777 & ~_umask())
            _write_marker(tmp)
            yield tmp
            _follow_umask(tmp)
            _publish_dir(tmp, out, overwrite, given)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def output_dir_in_place(
    out: PathLike, overwrite: bool = False, inputs: Iterable[PathLike | None] = ()
) -> Iterator[Path]:
    """The contract for an output whose files name their own absolute paths (the demo's recipe
    and run directory, which later commands read), so it cannot be written elsewhere and
    renamed: the same refusals as `atomic_output_dir`, the lock held for the whole run, and the
    work done at `out` itself. An old output is moved aside (`.NAME.old-PID`) and comes back if
    the run fails; the marker says `partial` until the block succeeds, so the next run into
    `out` also puts the old output back after a SIGKILL."""
    with _claimed(out, overwrite, inputs, "dir") as out:
        old = None
        if out.is_dir() and any(out.iterdir()):
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
        elif out.is_dir():
            out.rmdir()  # an empty directory is reused: made again below with the umask's mode
        try:
            out.mkdir(mode=0o777)
            _write_marker(out, partial=True)
            yield out
            _follow_umask(out)
            _write_marker(out)
        except BaseException:
            shutil.rmtree(out, ignore_errors=True)
            if old is not None:
                old.rename(out)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _publish_dir(tmp: Path, out: Path, overwrite: bool, given: PathLike) -> None:
    # Re-check: something may have appeared at `out` while we worked (a run that did not take
    # the lock, a user). rename() then refuses a non-empty directory and a file by itself.
    _check_replaceable(out, overwrite, "dir")
    if out.is_dir() and any(out.iterdir()):
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        try:
            tmp.rename(out)
        except BaseException:
            old.rename(out)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        tmp.rename(out)
    except OSError as e:
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise UserError(
                f"{given}: something was written there while this run worked; nothing replaced"
            ) from None
        raise


@contextlib.contextmanager
def atomic_output_file(
    out: PathLike, overwrite: bool = False, inputs: Iterable[PathLike | None] = ()
) -> Iterator[Path]:
    """Yield a scratch file path beside `out`; it replaces `out` only if the block succeeds.

    Killed mid-run, the old `out` is intact. Refuses to replace without --overwrite, refuses a
    directory, and refuses an output that is or lies inside an input.
    """
    with _claimed(out, overwrite, inputs, "file") as out:
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            os.chmod(tmp, 0o666 & ~_umask())
            yield tmp
            _check_replaceable(out, overwrite, "file")  # re-check: written meanwhile?
            os.replace(tmp, out)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def read_utf8(path: str | Path, what: str = "file") -> str:
    """The text of a UTF-8 file; a missing, unreadable or non-UTF-8 file is a UserError that
    names it (and the first bad byte)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a directory, not a {what}")
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}") from None
    except UnicodeDecodeError as e:
        raise UserError(
            f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at {e.start}); a {what} is "
            "UTF-8 text"
        ) from None
    except OSError as e:
        raise UserError(f"{path}: cannot read the {what} ({e.strerror})") from None


def state_bytes(model: Any) -> int:
    """Bytes of a model's distinct tensors (tied ones once): what saving its weights writes."""
    seen = {t.data_ptr(): t.numel() * t.element_size() for t in model.state_dict().values()}
    return sum(seen.values())


def human_size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 2**10:.1f} KiB"


@contextlib.contextmanager
def safetensors_write_errors(path: PathLike, need_bytes: int = 0) -> Iterator[None]:
    """Turn safetensors' SafetensorError from a failed write (a full disk:
    `IoError(Os { code: 28, ... })`) into the OSError it wraps, naming `path`, so the CLI says
    `PATH: No space left on device; free some space ...` instead of a traceback; with
    `need_bytes` (what the write holds) a full disk also says what it needs and what is free."""
    try:
        yield
    except Exception as e:
        if type(e).__name__ != "SafetensorError":
            raise
        found = re.search(r"\bcode: (\d+)", str(e))
        if found:
            code = int(found.group(1))
            if code == errno.ENOSPC and need_bytes:
                free = shutil.disk_usage(Path(path).parent).free
                raise UserError(
                    f"{path}: No space left on device; free some space or write elsewhere (it "
                    f"needs about {human_size(need_bytes)}, {human_size(free)} free)"
                ) from None
            raise OSError(code, os.strerror(code), str(path)) from None
        raise UserError(f"{path}: cannot write the safetensors file ({e})") from None


def not_utf8(path: str | Path, what: str = "file") -> UserError:
    """The error for a file that is not UTF-8, naming the line and column of its first bad byte
    (a text-mode reader decodes in blocks and knows neither)."""
    data = Path(path).read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        return UserError(
            f"{path}:{line}: not UTF-8 text (byte {data[e.start]:#04x} at column {column}); a "
            f"{what} is UTF-8 text"
        )
    return UserError(f"{path}: not UTF-8 text; a {what} is UTF-8 text")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_tensors(path: str | Path, **kwargs) -> object:
    """torch.load that unpickles nothing but tensors and plain containers, and says so clearly
    when a file holds more (a pickle that could run code)."""
    import pickle

    import torch

    try:
        return torch.load(path, weights_only=True, **kwargs)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{path}: refusing to unpickle {path}: it holds more than tensors (only "
            f"weights_only loading is allowed; {first[:200]})"
        ) from None
