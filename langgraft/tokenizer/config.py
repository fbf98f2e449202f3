"""What `langgraft tokenizer expand` is asked to do (shared by the SentencePiece and the
byte-level paths, and by `tokenizer sweep`), and the text it learns from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from langgraft.errors import UserError
from langgraft.tokenizer.sources import read_samples


@dataclass
class ExpandConfig:
    """Options of `langgraft tokenizer expand`."""

    source: Path
    """Source tokenizer: a LLaMA-style SentencePiece `tokenizer.model` (or a HF directory holding
    one), a HF directory whose tokenizer.json is a byte-level BPE, or a tiktoken ranks file
    (Meta's Llama-3 tokenizer.model)."""
    out: Path
    """Output directory (written aside and renamed into place; must not exist unless --overwrite)."""
    pieces: list[Path] = field(default_factory=list)
    """Piece lists: Colossal jsonl ({"piece": ...} per line) or a word list `word [freq [tag]]`."""
    top: int | None = None
    """With --pieces: keep only the N most frequent words of each list."""
    merge_sp: list[Path] = field(default_factory=list)
    """Other SentencePiece models whose pieces are appended (Chinese-LLaMA's method)."""
    merge_top: int | None = None
    """With --merge-sp: keep only the N best-scoring pieces of each model (the rest of the budget
    goes to --pieces and --learn-from)."""
    learn_from: list[Path] = field(default_factory=list)
    """Corpora (files or directories: text, jsonl, json, word-frequency list) to learn a BPE model on."""
    target_size: int | None = None
    """Final vocabulary size: candidates are added in priority order (--merge-sp, --pieces,
    --learn-from) until it is reached. Required with --learn-from."""
    keep_segmentation: bool = True
    """Skip pieces that could change how text without new characters is tokenized."""
    intermediates: bool | None = None
    """Add missing characters and merge intermediates so that every new piece can form (default:
    on; off with --no-keep-segmentation, which appends candidates verbatim as Chinese-LLaMA did and
    reports the unreachable ones)."""
    learn_coverage: float = 0.9995
    """Character coverage of the learned model (rarer characters are left to byte fallback)."""
    learner: Literal["merges", "sentencepiece"] = "merges"
    """How --learn-from learns: merges (continue BPE from the source's segmentation of the corpus,
    so every learned piece is reachable and ranked after the old ones) or sentencepiece (train a
    separate SentencePiece BPE model; SentencePiece sources only)."""
    min_count: int = 2
    """Frequency floor: a learned merge must join a pair seen at least this many times in the
    --learn-from corpora (EEVE keeps tokens seen >= 6,000 times in 100 GB)."""
    max_token_length: int | None = None
    """Longest learned token, in source tokens (default: no limit)."""
    hold_out: float = 0.0
    """Hold the last FRACTION of each --learn-from corpus's samples out of learning and report
    compression, never-used pieces and the cost of --keep-segmentation on them."""
    held_out: list[Path] = field(default_factory=list)
    """More held-out corpora for those figures (text that the learning never sees)."""
    measure_keep_cost: bool = True
    """With held-out text: also build the other --keep-segmentation variant (a second learning
    run) and record in expansion.json what keeping the old segmentation costs in compression."""
    pattern: str | None = None
    """Pre-tokenizer regex of a tiktoken ranks file (default: Llama-3's, for Meta's file)."""
    check_corpus: list[Path] = field(default_factory=list)
    """Corpora on which to count added pieces that never occur (default: the --learn-from corpora)."""
    overwrite: bool = False
    """Replace an existing output directory."""

    def validate(self) -> None:
        if not (self.pieces or self.merge_sp or self.learn_from):
            raise UserError("nothing to add: give --pieces, --merge-sp and/or --learn-from")
        if self.learn_from and self.target_size is None:
            raise UserError("--learn-from needs --target-size N (the final vocabulary size)")
        if self.merge_top is not None and self.merge_top <= 0:
            raise UserError(f"--merge-top must be positive, got {self.merge_top}")
        if self.top is not None and self.top <= 0:
            raise UserError(f"--top must be positive, got {self.top}")
        if not 0.9 <= self.learn_coverage <= 1.0:
            raise UserError(f"--learn-coverage must be in [0.9, 1], got {self.learn_coverage}")
        if self.min_count < 1:
            raise UserError(f"--min-count must be >= 1, got {self.min_count}")
        if not 0.0 <= self.hold_out < 1.0:
            raise UserError(f"--hold-out must be in [0, 1), got {self.hold_out}")
        if self.hold_out and not self.learn_from:
            raise UserError("--hold-out holds out part of --learn-from; give --learn-from")


def sources_record(cfg: ExpandConfig) -> dict:
    return {
        "pieces": [str(p) for p in cfg.pieces],
        "top": cfg.top,
        "merge_sp": [str(p) for p in cfg.merge_sp],
        "merge_top": cfg.merge_top,
        "learn_from": [str(p) for p in cfg.learn_from],
        "learner": cfg.learner if cfg.learn_from else None,
        "min_count": cfg.min_count,
        "hold_out": cfg.hold_out,
        "held_out": [str(p) for p in cfg.held_out],
        "target_size": cfg.target_size,
    }


def read_learning_text(cfg: ExpandConfig) -> tuple[list[tuple[str, int]], list[str]]:
    """Samples to learn from and held-out texts (the --hold-out tails plus --held-out)."""
    samples, held = read_samples(cfg.learn_from, cfg.hold_out) if cfg.learn_from else ([], [])
    if cfg.held_out:
        held += [t for t, _ in read_samples(cfg.held_out)[0]]
    return samples, held
