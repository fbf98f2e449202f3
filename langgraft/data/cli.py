"""`langgraft prepare pretrain|chat`: see `langgraft.data.prepare` and docs/prepare.md."""

from __future__ import annotations

import argparse
import logging

from langgraft.config import config_command, from_namespace
from langgraft.data.config import ChatPrepareConfig, PrepareConfig

log = logging.getLogger(__name__)


def _run(cls: type[PrepareConfig], args: argparse.Namespace) -> int:
    from langgraft.data.prepare import prepare

    result = prepare(from_namespace(cls, args))
    m = result.manifest
    c = m["counts"]
    rejected = sum(c["rows"]["rejected"].values())
    print(
        f"{c['rows']['in']:,} rows ({rejected:,} rejected) -> {c['sequences']:,} sequences of "
        f"<= {m['settings']['max_length']} tokens in {len(m['buckets'])} bucket(s); "
        f"{c['tokens']['out']:,} tokens, {c['tokens']['supervised_out']:,} trained; packing "
        f"efficiency {c['packing_efficiency']:.2%}; {result.rows_per_s:,.0f} rows/s, "
        f"{result.tokens_per_s:,.0f} tokens/s -> {args.out} (content {m['content_sha256'][:16]})"
    )
    return 0


def run_pretrain(args: argparse.Namespace) -> int:
    return _run(PrepareConfig, args)


def run_chat(args: argparse.Namespace) -> int:
    return _run(ChatPrepareConfig, args)


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="tokenize, mask, pack and bin pretraining or chat data",
        description="Data preparation (stage 3): jsonl/txt in, Arrow datasets (one per bucket) "
        "+ manifest.json out; no token is lost, and the output is byte-for-byte reproducible.",
    )
    psub = p.add_subparsers(dest="prepare_command", required=True, metavar="SUBCOMMAND")
    config_command(
        psub, "pretrain", PrepareConfig, run_pretrain,
        help='{"source", "target", "category"} jsonl, or raw text (.txt, --text-field)',
        description="Rows are BOS + source + target + EOS with loss on target + EOS only; "
        "documents are packed per category (long ones split, not truncated), shuffled into "
        "--num-bins bins per category, and bucket k = bin k of every category.",
    )  # fmt: skip
    config_command(
        psub, "chat", ChatPrepareConfig, run_chat,
        help='{"messages": [{"role"|"from", "content"}]} jsonl; loss on assistant turns only',
        description="Conversations laid out with a chat template (saved in the manifest); loss "
        "on assistant content and its end-of-turn token only; packed and binned as pretrain.",
    )  # fmt: skip
