"""`langgraft data self-replay`: data built from a model rather than read from files (see
`langgraft.data.self_replay`). `langgraft prepare` stays the command that tokenizes and packs."""

from __future__ import annotations

import argparse

from langgraft.config import config_command, from_namespace
from langgraft.data.self_replay import SelfReplayConfig


def run_self_replay(args: argparse.Namespace) -> int:
    from langgraft.data.self_replay import self_replay

    s = self_replay(from_namespace(SelfReplayConfig, args))
    f = s["files"]
    print(
        f"{s['samples']:,} samples, {s['tokens']:,} tokens -> {args.out}: train.jsonl "
        f"{f['train.jsonl']['samples']:,} samples ({f['train.jsonl']['tokens']:,} tokens), "
        f"heldout.jsonl {f['heldout.jsonl']['samples']:,} ({f['heldout.jsonl']['tokens']:,} tokens)"
    )
    return 0


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="build data from a model: self-replay samples for replay and forgetting probes",
        description="Data that comes from a model instead of files.",
    )
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    config_command(
        dsub, "self-replay", SelfReplayConfig, run_self_replay,
        help="sample replay data and a held-out original-domain probe from the base model",
        description=(
            "Sample text from the base model (from BOS, or --prompt) with the given temperature, "
            "top-p and seed, and write it in the pretrain jsonl schema: train.jsonl (replay data "
            "for the last stage when the original pretraining corpus is not available) and "
            "heldout.jsonl (the 'original domain' probe: bits per character on it show how much "
            "the base model's own distribution was forgotten). self_replay.json records the "
            "settings, the model and the token counts."
        ),
    )  # fmt: skip
