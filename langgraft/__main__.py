"""The single CLI registry: `langgraft <command> ...` or `python -m langgraft <command> ...`.

Each entry names a module with `register(subparsers)`, which adds its sub-commands and sets
`func(args) -> int` on them. Those modules import heavy libraries (torch, transformers) inside the
command functions, so `langgraft --help` stays fast.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib
import logging
import os
import signal
import sys
import threading
import time
from typing import NoReturn

from langgraft import __version__
from langgraft.errors import UserError

log = logging.getLogger("langgraft")

COMMANDS: dict[str, str] = {
    "tokenizer": "langgraft.tokenizer.cli",
    "prepare": "langgraft.data.cli",
    "data": "langgraft.data.commands",
    "eval": "langgraft.eval.cli",
    "model": "langgraft.model.cli",
    "train": "langgraft.train.cli",
    "launch": "langgraft.distributed.launch",
    "generate": "langgraft.generate",
    "chat": "langgraft.chat",
    "report": "langgraft.report.cli",
    "demo": "langgraft.demo.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="langgraft",
        description="Teach a pretrained LLaMA-family model a new language: expand the "
        "tokenizer, initialise the new embeddings, prepare data, continue pretraining, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"langgraft {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads for torch (intra-op), MKL and the tokenizers in this command; under "
        "`launch`, per rank; torch uses at most the machine's cores. Default: $OMP_NUM_THREADS if set, else the cores this process may "
        "use (divided among a node's ranks) less those other processes are running on now (the "
        "kernel's runnable count; under torchrun, the 1-minute load average), at least 1: "
        "threads that wait for a busy core spin, and a 2-core machine shared with one other "
        "job ran 3-10x slower with 2 threads than with 1",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        importlib.import_module(module).register(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command and return its exit code (callers in-process use this)."""
    return _run(argv)[0]


def cli() -> NoReturn:
    """The `langgraft` console script and `python -m langgraft`: run, then leave."""
    code, command = _run(None)
    if command not in KEEP_TEARDOWN and "torch" in sys.modules and not _watched():
        leave_now(code)
    sys.exit(code)


# Commands that end with the interpreter's full teardown: the trainer may hold a process group
# (NCCL's communicators are torn down there; no GPU has checked an abrupt exit) and `launch`
# waits on torchrun.
KEEP_TEARDOWN = {"train", "launch"}


def _watched() -> bool:
    """A normal exit is needed: another thread would be waited for, or a profiler or tracer
    (cProfile, a debugger, coverage) writes its results after the program returns."""
    return bool(_other_threads()) or sys.getprofile() is not None or sys.gettrace() is not None


def _other_threads() -> list[threading.Thread]:
    """Threads a normal exit would wait for (non-daemon ones other than this)."""
    return [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]


def leave_now(code: int) -> NoReturn:
    """End the process without tearing down its modules. With torch and transformers loaded
    that teardown alone takes ~1 s (measured: `import torch; from transformers import
    LlamaForCausalLM` 4.2 s wall with a normal exit, 3.2 s with os._exit), a seventh of a small
    `eval mc`. Everything a normal exit does for the outputs still happens first: a garbage
    collection (an unclosed writer caught in a reference cycle is flushed by its finaliser, as
    the interpreter's final collection would; ~0.15 s), the atexit handlers (temporary
    directories, multiprocessing's children, logging) and the flush of stdout and stderr."""
    log.debug(
        "exit %d without the interpreter's teardown (atexit handlers run, output flushed)", code
    )
    gc.collect()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: what a normal exit would also lose
            pass
    os._exit(code)


def _run(argv: list[str] | None) -> tuple[int, str]:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    try:
        configure_threads(args)
    except UserError as e:
        return _fail(args, str(e), e.exit_code), args.command
    previous = None
    if args.command != "train" and threading.current_thread() is threading.main_thread():
        # `kill`/a scheduler's SIGTERM unwinds like Ctrl-C, so scratch outputs are removed
        # (the trainer and torchrun have their own shutdown).
        previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return run_command(args), args.command
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if "torch" in sys.modules:
            log.debug("torch ran with %d intra-op threads", sys.modules["torch"].get_num_threads())


def default_threads(cores: int, ranks: int, load: float, host_cores: int | None = None) -> int:
    """Threads per process when nobody chose: this process's share of the cores (a node's
    `ranks` share them) that the current load leaves free, at least 1. OpenMP threads that wait
    for a core held by another process spin and stall each other at every parallel region:
    measured on 2 shared cores, one busy loop beside, a 4-layer training step took 3-4x longer
    with 2 threads than with 1, and an eval 4x (figures in BENCHMARKS.md).

    `load` counts the whole machine (`host_cores`; the kernel's figures are not per container),
    so in a container pinned to some of a big host's cores only what the host's other cores
    cannot hold is counted against ours: 100 busy on a 128-core host leave a 16-core container
    its 16."""
    outside = max(0, (host_cores or cores) - cores)
    free = max(1, cores - max(0, round(load) - outside))
    return max(1, min(cores, free) // max(1, ranks))


def chosen_threads(args: argparse.Namespace, env: dict[str, str] | os._Environ) -> tuple[int, str]:
    """(threads, where the number came from): --threads, then $OMP_NUM_THREADS, then the
    default. A value that is not a positive whole number is refused, never guessed at."""
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise UserError(f"--threads {args.threads}: must be >= 1")
        return args.threads, "--threads"
    raw = env.get("OMP_NUM_THREADS", "").strip()
    if raw:
        first = raw.split(",")[0].strip()  # OpenMP's nested form "4,2": the outer level
        if not first.isdigit() or int(first) < 1:
            raise UserError(
                f"OMP_NUM_THREADS={raw!r}: expected a whole number >= 1 (or unset it, or "
                "pass --threads N)"
            )
        return int(first), "OMP_NUM_THREADS"
    ranks = getattr(args, "nproc_per_node", None) if args.command == "launch" else None
    ranks = ranks or int(env.get("LOCAL_WORLD_SIZE", "1") or 1)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load, what = other_load(ranks)
    n = default_threads(cores or 1, ranks, load, os.cpu_count())
    return n, f"default: {cores} cores, {ranks} rank(s) per node, {what} {load:.1f}"


def _read_loadavg() -> str:
    with open("/proc/loadavg") as f:
        return f.read()


def runnable_now(read=_read_loadavg, samples: int = 10) -> float | None:
    """Cores other threads are using now: the mean over `samples` snapshots, 5 ms apart, of the
    kernel's runnable count (/proc/loadavg's 4th field), less this process's reading thread;
    None where the kernel does not say (not Linux)."""
    counts = []
    try:
        for i in range(samples):
            counts.append(int(read().split()[3].split("/")[0]) - 1)
            if i + 1 < samples:
                time.sleep(0.005)
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, sum(counts) / len(counts))


def other_load(ranks: int) -> tuple[float, str]:
    """(cores busy with other work, what measured it). One process reads the runnable count now:
    the 1-minute load average lags, so right after a job ends it still counts that job's threads
    (measured: an eval started just after lm-eval saw load 1.1 on an idle 2-core machine and took
    1 thread). A node's ranks start together and would count each other, so they read the
    1-minute average, which their siblings have not reached yet."""
    now = runnable_now() if ranks == 1 else None
    if now is not None:
        return now, "runnable now"
    return (os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0), "load"


def configure_threads(args: argparse.Namespace) -> int:
    """Fix every compute thread pool of this process (and of the processes it starts: the demo's
    trainings, torchrun's ranks under `launch`) before torch is imported. The variables are read
    once, when torch, MKL and the tokenizers' Rust pool start; heavy modules are imported inside
    the command functions, after this runs. Inter-op threads (torch.jit.fork) stay torch's: no
    command uses them, and an idle pool costs nothing."""
    n, source = chosen_threads(args, os.environ)
    # Commands that start several processes at once (the demo's two trainings) keep their own
    # measured split unless the user chose a count.
    args.user_threads = None if source.startswith("default") else n
    os.environ["OMP_NUM_THREADS"] = str(n)
    os.environ["MKL_NUM_THREADS"] = str(n)
    os.environ.setdefault("RAYON_NUM_THREADS", str(n))
    # A thread that finished its share sleeps instead of spinning (GNU and Intel OpenMP): with
    # another job on the cores, spinning threads take turns with the ones still working.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if "torch" in sys.modules:  # imported already (an in-process caller): set it directly
        sys.modules["torch"].set_num_threads(n)
    log.debug("threads: %d (%s)", n, source)
    return n


def run_command(args: argparse.Namespace) -> int:
    """Run the sub-command; user errors and environment failures become one line, exit 2."""
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        return _fail(args, str(e), e.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        message = environment_error(e)
        if message is None:
            raise
        if message.startswith("?: "):  # an OSError that names no file: name the output
            out = getattr(args, "out", None)
            message = f"writing {out}: {message[3:]}" if out else message[3:]
        if args.verbose:
            logging.exception("details")
        return _fail(args, message, UserError.exit_code)


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    # One line, whatever the message holds (a path with a newline, a multi-line library error).
    line = " ".join(message.split("\n"))
    print(f"langgraft {args.command}: error: {line}", file=sys.stderr)
    return code


def environment_error(e: BaseException) -> str | None:
    """A one-line message for failures caused by the machine or the input rather than by
    langgraft (a full or read-only disk, an unreadable file); None for anything else, which stays
    a traceback because it is a bug to report."""
    import errno
    import pickle

    if isinstance(e, OSError) and e.errno is not None:
        where = e.filename if e.filename is not None else "?"
        hint = {
            errno.ENOSPC: "; free some space or write elsewhere",
            errno.EROFS: "; the filesystem is read-only, write elsewhere",
            errno.EACCES: "; check the permissions",
            errno.EDQUOT: "; the disk quota is exhausted",
        }.get(e.errno, "")
        return f"{where}: {e.strerror or e}{hint}"
    if isinstance(e, OSError):  # transformers' "can't load ..." errors carry no errno
        return str(e).strip().split("\n")[0] or type(e).__name__
    if isinstance(e, UnicodeDecodeError):
        return (
            f"an input is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
            "convert it to UTF-8"
        )
    if isinstance(e, UnicodeEncodeError):
        return f"an input holds text that is not valid Unicode ({e.reason}: {e.object[e.start]!r})"
    if isinstance(e, RecursionError):
        return "an input is nested too deeply (JSON arrays or objects inside each other)"
    if isinstance(e, pickle.UnpicklingError):
        return f"refusing to unpickle a file that holds more than tensors ({str(e)[:200]})"
    if isinstance(e, RuntimeError) and _collective_timeout(str(e)):
        import os

        first = str(e).strip().split("\n")[0][:300]
        return (
            f"rank {os.environ.get('RANK', '0')}: a collective waited longer than the process-group "
            "timeout (recipe key dist_timeout_s) for the other ranks: one of them froze, is stuck "
            "on I/O or died (torchrun's summary lists each rank's exit); if the wait was "
            f"legitimate (a slow export or checkpoint), raise dist_timeout_s ({first})"
        )
    return None


def _collective_timeout(message: str) -> bool:
    # gloo: "Timed out waiting 20000ms for recv operation to complete"; NCCL's watchdog:
    # "Watchdog caught collective operation timeout" (when it raises instead of aborting).
    return "Timed out waiting" in message or "collective operation timeout" in message


if __name__ == "__main__":
    cli()
