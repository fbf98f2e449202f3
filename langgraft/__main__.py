"""The single CLI registry: `langgraft <command> ...` or `python -m langgraft <command> ...`.

Each entry names a module with `register(subparsers)`, which adds its sub-commands and sets
`func(args) -> int` on them. Those modules import heavy libraries (torch, transformers) inside the
command functions, so `langgraft --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from langgraft import __version__
from langgraft.errors import UserError

COMMANDS: dict[str, str] = {
    "tokenizer": "langgraft.tokenizer.cli",
    "prepare": "langgraft.data.cli",
    "data": "langgraft.data.commands",
    "eval": "langgraft.eval.cli",
    "model": "langgraft.model.cli",
    "train": "langgraft.train.cli",
    "generate": "langgraft.generate",
    "chat": "langgraft.chat",
    "report": "langgraft.report.cli",
    "demo": "langgraft.demo",
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
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"langgraft {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
