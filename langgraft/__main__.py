"""The single CLI registry: `langgraft <command> ...` or `python -m langgraft <command> ...`.

Each entry names a module with `register(subparsers)`, which adds its sub-commands and sets
`func(args) -> int` on them. Those modules import heavy libraries (torch, transformers) inside the
command functions, so `langgraft --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading

from langgraft import __version__
from langgraft.errors import UserError

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
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        importlib.import_module(module).register(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    previous = None
    if args.command != "train" and threading.current_thread() is threading.main_thread():
        # `kill`/a scheduler's SIGTERM unwinds like Ctrl-C, so scratch outputs are removed
        # (the trainer and torchrun have their own shutdown).
        previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return run_command(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


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
    sys.exit(main())
