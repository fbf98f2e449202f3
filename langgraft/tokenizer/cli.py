"""`langgraft tokenizer expand|report`: see `langgraft.tokenizer.expand` and `.report`."""

from __future__ import annotations

import argparse
import logging

from langgraft.config import add_dataclass_args, from_namespace
from langgraft.tokenizer.expand import ExpandConfig
from langgraft.tokenizer.report import ReportConfig

log = logging.getLogger(__name__)


def run_expand(args: argparse.Namespace) -> int:
    from langgraft.tokenizer.expand import expand

    summary = expand(from_namespace(ExpandConfig, args))
    print(
        f"{summary['source_size']:,} -> {summary['final_size']:,} pieces "
        f"(+{summary['added']:,}, of which {summary['added_intermediate']:,} merge intermediates)"
    )
    for reason, n in summary["skipped_by_reason"].items():
        print(f"  skipped {n:,}: {reason}")
    if summary["unreachable"]:
        print(f"  {summary['unreachable']:,} added pieces can never form (no merge path)")
    if summary["never_used_on_corpus"] is not None:
        print(
            f"  {summary['never_used_on_corpus']:,} added pieces never occur on "
            f"{summary['check_corpus_samples']:,} samples of the check corpus"
        )
    print(f"wrote {args.out} (details in {args.out}/expansion.json)")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from langgraft.tokenizer.report import report

    print(report(from_namespace(ReportConfig, args)))
    return 0


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="expand a SentencePiece tokenizer; compression report",
        description="Tokenizer expansion (stage 1) and compression reports.",
    )
    tsub = p.add_subparsers(dest="tokenizer_command", required=True, metavar="SUBCOMMAND")
    e = tsub.add_parser(
        "expand",
        help="add pieces from piece lists, other SentencePiece models or a corpus",
        description=(
            "Add pieces to a LLaMA-style SentencePiece BPE tokenizer. Sources combine in one run, "
            "in this priority order: --merge-sp, --pieces, --learn-from. New pieces get distinct "
            "scores below the source's lowest, are made reachable (missing characters and merge "
            "intermediates are added), and, with --keep-segmentation, never change how text "
            "without new characters is tokenized. Writes tokenizer.model, tokenizer.json, "
            "tokenizer_config.json, special_tokens_map.json and expansion.json."
        ),
    )
    add_dataclass_args(e, ExpandConfig)
    e.set_defaults(func=run_expand)
    r = tsub.add_parser(
        "report",
        help="tokens per character and more, for tokenizers over corpora",
        description=(
            "For each tokenizer over each corpus: vocabulary size, tokens per character (the "
            "'compression rate' of the Colossal-LLaMA-2 README), average tokens per sample, share "
            "of byte-fallback tokens, and length relative to the first tokenizer. Markdown on "
            "stdout; with --out also CSV, JSON and a PNG chart."
        ),
    )
    add_dataclass_args(r, ReportConfig)
    r.set_defaults(func=run_report)
