"""`langgraft eval mc` (multiple-choice benchmarks) and `langgraft eval text` (loss per token /
character / byte on corpora).

    # CPU, tiny: 2 questions per CMMLU subject, 5-shot, both scoring modes
    langgraft eval mc --task cmmlu --data ../shared/data/eval/cmmlu --model runs/tiny/hf \\
        --out runs/tiny/eval-cmmlu --mode both --limit 2
    # GPU, a real model: the full Colossal-LLaMA-2 table, then side by side
    for t in mmlu cmmlu agieval gaokao ceval; do
      langgraft eval mc --task $t --data data/$t --model MODEL --out eval/MODEL/$t --dtype bfloat16
    done
    langgraft eval mc --compare eval/*/mmlu eval/*/cmmlu eval/*/agieval eval/*/gaokao eval/*/ceval
    langgraft eval text --model MODEL --data ../shared/data/corpus/zh/hongloumeng.txt \\
        ../shared/data/corpus/en/tinyshakespeare.txt --out eval/MODEL/text --max-chars 100000
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from langgraft.config import config_command, from_namespace, save_resolved
from langgraft.errors import UserError
from langgraft.eval.mc import McOptions

log = logging.getLogger(__name__)

Dtype = Literal["auto", "float32", "bfloat16", "float16"]


@dataclass
class ModelArgs:
    model: Path | None = None
    """HF model directory (config.json + weights; the tokenizer is loaded from it too)."""
    tokenizer: Path | None = None
    """Tokenizer directory or tokenizer.model, if not the model directory."""
    out: Path | None = None
    """Output directory (results.json, results.md, results.csv, ...)."""
    dtype: Dtype = "auto"
    """Weights dtype (auto: as saved)."""
    device: str = "auto"
    """cpu, cuda, cuda:1, ... (auto: cuda when available)."""
    trust_remote_code: bool = False
    """Allow model code shipped inside the model directory (runs arbitrary Python)."""
    overwrite: bool = False
    """Replace an existing --out directory."""


@dataclass
class McConfig(ModelArgs, McOptions):
    task: Literal["mmlu", "cmmlu", "ceval", "agieval", "gaokao"] | None = None
    """Benchmark whose release layout --data holds."""
    data: Path | None = None
    """The benchmark's release directory (local; nothing is downloaded)."""
    split: str | None = None
    """Split to score (default: test; val for C-Eval, whose test has no answers)."""
    show_counts: bool = False
    """Print the scored and skipped questions of every subset before the run (by default only
    the totals; results.json has the counts per subject either way)."""
    compare: list[Path] = field(default_factory=list)
    """Instead of evaluating: print these results (files or directories) side by side; with two
    or more models, also each one against the first (the base): delta and whether it exceeds 2x
    its standard error (paired over the questions when predictions.jsonl is beside both)."""


@dataclass
class TextConfig(ModelArgs):
    data: list[Path] = field(default_factory=list)
    """Corpus files: .txt (one document) or .jsonl (one document per line)."""
    text_key: str = "text"
    """Field holding the text in .jsonl corpora."""
    max_chars: int | None = 200_000
    """Score at most this many characters of each corpus (0 or none: all)."""
    max_length: int = 1024
    """Most tokens in a window (BOS included; at most the model's own limit)."""
    context_chars: int | None = None
    """Characters of context before the characters a window scores, the same for every
    tokenizer so that bits/char compares models with different vocabularies (none: derived
    from --max-length so that context and stride fit at 3 tokens per character: 43 for 256).
    Windows overlap by this much; every character is scored exactly once."""
    stride_chars: int | None = None
    """Characters scored per window (none: derived from --max-length, 42 for 256); a character
    at offset k of the stride sees --context-chars + k characters, whatever the tokenizer."""
    batch_size: int = 2
    """Windows per forward pass."""
    compare: list[Path] = field(default_factory=list)
    """Instead of evaluating: bits/char per corpus of these text results (files or directories),
    the first as the base, with each difference and whether it exceeds 2x its standard error."""


def load_model(args: ModelArgs) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    from langgraft.model.checks import check_model_dir
    from langgraft.tokenizer import load_tokenizer

    if args.model is None:
        raise UserError("--model is required")
    if not (args.model / "config.json").is_file():
        raise UserError(f"{args.model}: no config.json; --model must be a HF model directory")
    check_model_dir(args.model, args.trust_remote_code)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
    model = AutoModelForCausalLM.from_pretrained(
        str(args.model),
        dtype=dtype,
        local_files_only=True,
        trust_remote_code=args.trust_remote_code,
    ).to(device)
    tokenizer = load_tokenizer(args.tokenizer or args.model)
    if len(tokenizer) > model.config.vocab_size:
        raise UserError(
            f"{args.model}: tokenizer has {len(tokenizer)} tokens but the model only "
            f"{model.config.vocab_size}; resize the model's embeddings first"
        )
    return model, tokenizer


def run_mc(args: argparse.Namespace) -> int:
    from langgraft.eval.mc import check_options
    from langgraft.eval.report import (
        by_model,
        collect_results,
        compare,
        counts_summary,
        counts_table,
        forgetting,
        write_results,
    )
    from langgraft.eval.tasks import load_task
    from langgraft.fsutil import atomic_output_dir

    cfg = from_namespace(McConfig, args)
    if cfg.compare:
        found, skipped = collect_results(cfg.compare)
        if skipped:
            log.info("not eval mc results, skipped: %s", " ".join(map(str, skipped)))
        runs = by_model(found)  # each results.json read once
        print(compare(runs), end="")
        delta = forgetting(runs)
        if delta:
            print("\n" + delta, end="")
        return 0
    for name in ("task", "data", "model", "out"):
        if getattr(cfg, name) is None:
            raise UserError(f"--{name} is required (or give --compare RESULTS...)")
    opts = McOptions(**{k: getattr(cfg, k) for k in McOptions.__dataclass_fields__})
    check_options(opts)
    task = load_task(cfg.task, cfg.data, cfg.split)
    if cfg.show_counts:
        print(counts_table(task), flush=True)
    else:
        print(counts_summary(task, cfg.limit, cfg.subjects), flush=True)
    model, tokenizer = load_model(cfg)
    with atomic_output_dir(cfg.out, cfg.overwrite, [cfg.model, cfg.tokenizer, cfg.data]) as tmp:
        from langgraft.eval.mc import evaluate_mc

        result = evaluate_mc(model, tokenizer, task, opts)
        result = {"model": cfg.model.name, "model_path": str(cfg.model.resolve()), **result}
        write_results(tmp, result)
        save_resolved(cfg, tmp / "config.json")
    print(_headline(result))
    return 0


def _headline(result: dict) -> str:
    from langgraft.eval.report import pct

    ov = result["overall"]
    parts = [f"{m} {pct(ov[m])}" for m in result["metrics"]]
    return f"{result['task']} ({ov['n']} questions): " + ", ".join(parts)


def run_text(args: argparse.Namespace) -> int:
    from langgraft.eval.text import evaluate_text, markdown, read_corpus
    from langgraft.fsutil import atomic_output_dir

    cfg = from_namespace(TextConfig, args)
    if cfg.compare:
        from langgraft.eval.text import compare_text

        if len(cfg.compare) < 2:
            raise UserError("--compare needs a base and at least one other text result")
        print(compare_text(cfg.compare[0], cfg.compare[1:]), end="")
        return 0
    if cfg.max_length < 2:
        raise UserError(f"--max-length {cfg.max_length}: a window needs BOS and a token (>= 2)")
    if cfg.batch_size < 1:
        raise UserError(f"--batch-size {cfg.batch_size}: must be >= 1")
    if not cfg.data:
        raise UserError("--data needs at least one corpus file")
    if cfg.out is None:
        raise UserError("--out is required")
    corpora = {p: read_corpus(p, cfg.text_key, cfg.max_chars or None) for p in cfg.data}
    model, tokenizer = load_model(cfg)
    results = [
        evaluate_text(
            model, tokenizer, docs, p.name, cfg.max_length, cfg.batch_size,
            cfg.context_chars, cfg.stride_chars,
        )  # fmt: skip
        for p, docs in corpora.items()
    ]
    table = markdown(results, str(cfg.model))
    with atomic_output_dir(cfg.out, cfg.overwrite, [cfg.model, cfg.tokenizer, *cfg.data]) as tmp:
        payload = {"model": cfg.model.name, "corpora": [r.to_dict() for r in results]}
        (tmp / "text_results.json").write_text(
            json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
        )
        (tmp / "text_results.md").write_text(table, encoding="utf-8")
        save_resolved(cfg, tmp / "config.json")
    print(table, end="")
    return 0


def register(subparsers: Any, name: str = "eval") -> None:
    parser = subparsers.add_parser(
        name, help="evaluate a model: multiple-choice benchmarks, text loss"
    )
    sub = parser.add_subparsers(dest="eval_command", required=True, metavar="EVAL_COMMAND")
    config_command(
        sub, "mc", McConfig, run_mc,
        help="MMLU / CMMLU / C-Eval / AGIEval / GAOKAO accuracy",
        description="Multiple-choice accuracy per subject, category and overall.",
    )  # fmt: skip
    config_command(
        sub, "text", TextConfig, run_text,
        help="loss per token, per character and bits per byte on corpora",
        description="Loss on text corpora, comparable across tokenizers (bits per byte).",
    )  # fmt: skip
