"""`langgraft tokenizer expand|report`: see `langgraft.tokenizer.expand` and `.report`."""

from __future__ import annotations

import argparse
import logging

from langgraft.config import config_command, from_namespace
from langgraft.tokenizer.config import ExpandConfig
from langgraft.tokenizer.report import ReportConfig
from langgraft.tokenizer.sweep import SweepConfig

log = logging.getLogger(__name__)


def run_expand(args: argparse.Namespace) -> int:
    from langgraft.tokenizer.expand import expand

    summary = expand(from_namespace(ExpandConfig, args))
    kinds = summary.get("added_by_kind") or {"learned merges": summary.get("merges_added", 0)}
    parts = ", ".join(f"{n:,} {kind}" for kind, n in kinds.items() if n)
    print(
        f"{summary['source_size']:,} -> {summary['final_size']:,} pieces (+{summary['added']:,}"
        + (f": {parts})" if parts else ")")
    )
    for reason, n in summary.get("skipped_by_reason", {}).items():
        print(f"  skipped {n:,}: {reason}")
    if summary.get("unreachable"):
        print(f"  {summary['unreachable']:,} added pieces can never form (no merge path)")
    if summary["never_used_on_corpus"] is not None:
        print(f"  {summary['never_used_on_corpus']:,} added pieces never occur on the check corpus")
    held = summary.get("held_out")
    if held:
        print(
            f"  held-out ({held['samples']:,} samples): {held['tokens_per_char_source']:.3f} -> "
            f"{held['tokens_per_char']:.3f} tokens/char; {held['never_used']:,} added pieces unused"
        )
        cost = held.get("keep_segmentation_cost")
        if cost and cost["relative_cost"] is not None:
            print(
                f"  --keep-segmentation costs {100 * cost['relative_cost']:+.1f}% tokens on it "
                f"({cost['tokens_per_char_keep_segmentation']:.3f} vs "
                f"{cost['tokens_per_char_no_keep_segmentation']:.3f})"
            )
    print(f"wrote {args.out} (details in {args.out}/expansion.json)")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from langgraft.tokenizer.report import report

    print(report(from_namespace(ReportConfig, args)))
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from langgraft.tokenizer.sweep import sweep, to_markdown

    rows = sweep(from_namespace(SweepConfig, args))
    sets = [k[len("tokens_per_char[") : -1] for k in rows[0] if k.startswith("tokens_per_char[")]
    print(to_markdown(rows, sets))
    print(f"wrote {args.out}/sweep.csv, sweep.json, sweep.md and sweep.png")
    return 0


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="expand a tokenizer (SentencePiece or byte-level BPE); size sweep; compression report",
        description="Tokenizer expansion (stage 1) and compression reports.",
    )
    tsub = p.add_subparsers(dest="tokenizer_command", required=True, metavar="SUBCOMMAND")
    config_command(
        tsub, "expand", ExpandConfig, run_expand,
        help="add pieces from piece lists, other SentencePiece models or a corpus",
        description=(
            "Add pieces to a LLaMA-style SentencePiece BPE tokenizer, or learned merges to a "
            "byte-level BPE tokenizer (a tokenizer.json directory or a tiktoken ranks file such "
            "as Llama-3's; new tokens are merges ranked after every existing one, with ids after "
            "every existing id). Sources combine in one run, "
            "in this priority order: --merge-sp, --pieces, --learn-from. New pieces get distinct "
            "scores below the source's lowest, are made reachable (missing characters and merge "
            "intermediates are added), and, with --keep-segmentation, never change how text "
            "without new characters is tokenized. Writes tokenizer.model, tokenizer.json, "
            "tokenizer_config.json, special_tokens_map.json and expansion.json."
        ),
    )  # fmt: skip
    config_command(
        tsub, "sweep", SweepConfig, run_sweep,
        help="held-out compression per vocabulary size, and the knee of the curve",
        description=(
            "Learn once (as `tokenizer expand --learn-from` would) to the largest of --sizes, "
            "truncate in merge order for the others, and measure held-out tokens per character "
            "per size, with the embedding parameters each size adds and the knee of the curve. "
            "Writes a table (markdown, CSV, JSON) and a PNG."
        ),
    )  # fmt: skip
    config_command(
        tsub, "report", ReportConfig, run_report,
        help="tokens per character and more, for tokenizers over corpora",
        description=(
            "For each tokenizer over each corpus: vocabulary size, tokens per character (the "
            "'compression rate' of the Colossal-LLaMA-2 README), average tokens per sample, share "
            "of byte-fallback tokens, and length relative to the first tokenizer. Markdown on "
            "stdout; with --out also CSV, JSON and a PNG chart."
        ),
    )  # fmt: skip
