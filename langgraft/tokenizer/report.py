"""`langgraft tokenizer report`: compression of tokenizers over corpora.

    langgraft tokenizer report \
        --tokenizer ../shared/data/tokenizers/llama2/tokenizer.model out/tok-zh \
        --corpus ../shared/data/corpus/zh/hongloumeng.txt ../shared/data/corpus/en --out out/report

Tokens per character is the "compression rate" column of the Colossal-LLaMA-2 README (its rows
satisfy avg length / rate = 111.8 characters per sample). Special tokens (BOS/EOS) are not counted.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from langgraft.errors import UserError
from langgraft.tokenizer.sources import expand_paths, iter_texts, looks_like_freq_list

log = logging.getLogger(__name__)


@dataclass
class ReportConfig:
    """Options of `langgraft tokenizer report`."""

    tokenizer: list[Path]
    """Tokenizers: SentencePiece tokenizer.model files, HF directories (tokenizer.json) or
    tiktoken ranks files (Llama-3's tokenizer.model); the first is the baseline."""
    corpus: list[Path]
    """Corpora: files or directories of text, jsonl, json or word-frequency lists."""
    names: list[str] = field(default_factory=list)
    """Display names for the tokenizers (default: file or directory names)."""
    out: Path | None = None
    """Also write report.csv, report.json and report.png into this directory (atomically)."""
    overwrite: bool = False
    """Replace an existing --out directory (only one that langgraft wrote)."""
    max_samples: int | None = None
    """Read at most this many samples per corpus (default: all)."""
    tail: float | None = None
    """Measure only the last FRACTION of each corpus file's samples: the part that
    `tokenizer expand --hold-out FRACTION` held out of learning."""
    batch_size: int = 1024
    """Samples tokenized per batch."""
    pattern: str | None = None
    """Pre-tokenizer regex for tiktoken ranks files other than Meta's Llama-3 file."""


def _label(path: Path) -> str:
    p = Path(path)
    return p.parent.name + "/" + p.name if p.name in ("tokenizer.model", "") else p.name


def load_corpus(path: Path, max_samples: int | None, tail: float | None = None) -> list[str]:
    texts: list[str] = []
    for f in expand_paths([path]):
        rows = list(iter_texts(f))
        if tail and not looks_like_freq_list(f):  # as `expand --hold-out`: word lists stay whole
            rows = rows[len(rows) - int(len(rows) * tail) :]
        for text, _ in rows:
            texts.append(text)
            if max_samples and len(texts) >= max_samples:
                return texts
    if not texts:
        raise UserError(f"{path}: corpus has no text")
    return texts


# A tokenizer call's output costs ~100x its input in memory (one 54 MB document peaked at 8.5 GB),
# so long samples are encoded in pieces cut after a newline, and batches are capped in characters.
# Each cut can change at most the token at its start: a few tokens in a 54 MB document.
MAX_PIECE_CHARS = 100_000
MAX_BATCH_CHARS = 2_000_000


def _pieces(text: str) -> Iterator[str]:
    start = 0
    while len(text) - start > MAX_PIECE_CHARS:
        end = start + MAX_PIECE_CHARS
        cut = text.rfind("\n", start, end)
        end = cut + 1 if cut > start else end
        yield text[start:end]
        start = end
    yield text[start:]


def _batches(texts: list[str], batch_size: int) -> Iterator[tuple[list[str], int]]:
    """(pieces to encode together, samples completed by them)."""
    batch: list[str] = []
    chars = done = 0
    for text in texts:
        for piece in _pieces(text):
            if batch and (len(batch) >= batch_size or chars + len(piece) > MAX_BATCH_CHARS):
                yield batch, done
                batch, chars, done = [], 0, 0
            batch.append(piece)
            chars += len(piece)
        done += 1
    if batch or done:
        yield batch, done


def measure(tok, texts: list[str], batch_size: int, desc: str) -> dict:
    from tqdm import tqdm

    vocab = tok.get_vocab()
    byte_ids = {i for piece, i in vocab.items() if piece.startswith("<0x") and len(piece) == 6}
    n_tok = n_byte = 0
    with tqdm(
        total=len(texts), desc=desc, unit="sample", leave=False, mininterval=1, disable=None
    ) as bar:
        for batch, done in _batches(texts, batch_size):
            for ids in tok(batch, add_special_tokens=False)["input_ids"] if batch else []:
                n_tok += len(ids)
                n_byte += sum(1 for t in ids if t in byte_ids)
            bar.update(done)
    chars = sum(len(t) for t in texts)
    return {
        "vocab_size": len(tok),
        "samples": len(texts),
        "characters": chars,
        "tokens": n_tok,
        "tokens_per_char": n_tok / chars if chars else 0.0,
        "avg_tokens_per_sample": n_tok / len(texts) if texts else 0.0,
        "byte_fallback_share": n_byte / n_tok if n_tok else 0.0,
    }


def compute(cfg: ReportConfig) -> list[dict]:
    from langgraft.tokenizer.hf import load_tokenizer

    if cfg.max_samples is not None and cfg.max_samples < 1:
        raise UserError(f"--max-samples {cfg.max_samples}: must be >= 1 (omit it for all)")
    if cfg.batch_size < 1:
        raise UserError(f"--batch-size {cfg.batch_size}: must be >= 1")
    if cfg.tail is not None and not 0 < cfg.tail < 1:
        raise UserError(f"--tail must be in (0, 1), got {cfg.tail}")
    if cfg.names and len(cfg.names) != len(cfg.tokenizer):
        raise UserError(f"--names: got {len(cfg.names)} names for {len(cfg.tokenizer)} tokenizers")
    names = cfg.names or [_label(t) for t in cfg.tokenizer]
    toks = [load_tokenizer(t, cfg.pattern) for t in cfg.tokenizer]
    rows: list[dict] = []
    for corpus in cfg.corpus:
        texts = load_corpus(corpus, cfg.max_samples, cfg.tail)
        base = None
        for name, tok in zip(names, toks, strict=True):
            m = measure(tok, texts, cfg.batch_size, f"{name} on {Path(corpus).name}")
            base = base or m["tokens"]
            rows.append(
                {
                    "tokenizer": name,
                    "corpus": str(corpus),
                    **m,
                    "relative_length": m["tokens"] / base if base else 0.0,
                }
            )
    return rows


def to_markdown(rows: list[dict]) -> str:
    head = (
        "| corpus | tokenizer | vocab | tokens/char | tokens/sample | byte-fallback | "
        "vs first |\n|---|---|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"| {Path(r['corpus']).name} | {r['tokenizer']} | {r['vocab_size']:,} | "
            f"{r['tokens_per_char']:.3f} | {r['avg_tokens_per_sample']:.1f} | "
            f"{100 * r['byte_fallback_share']:.2f}% | {r['relative_length']:.3f} |"
        )
    return "\n".join(lines)


def write_outputs(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    with open(out / "report.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    corpora = list(dict.fromkeys(r["corpus"] for r in rows))
    toks = list(dict.fromkeys(r["tokenizer"] for r in rows))
    width = 0.8 / len(toks)
    fig, ax = plt.subplots(figsize=(max(6, 2 + 1.6 * len(corpora)), 4))
    for k, t in enumerate(toks):
        vals = [
            next(r["tokens_per_char"] for r in rows if r["corpus"] == c and r["tokenizer"] == t)
            for c in corpora
        ]
        bars = ax.bar([i + k * width for i in range(len(corpora))], vals, width, label=t)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks([i + width * (len(toks) - 1) / 2 for i in range(len(corpora))])
    ax.set_xticklabels([Path(c).name for c in corpora], fontsize=8)
    ax.set_ylabel("tokens per character (lower is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "report.png", dpi=120)
    plt.close(fig)


def report(cfg: ReportConfig) -> str:
    from langgraft.fsutil import atomic_output_dir, check_output

    if cfg.out is not None:
        check_output(cfg.out, cfg.overwrite, [*cfg.tokenizer, *cfg.corpus])
    rows = compute(cfg)
    if cfg.out is not None:
        with atomic_output_dir(cfg.out, cfg.overwrite, [*cfg.tokenizer, *cfg.corpus]) as tmp:
            write_outputs(rows, tmp)
    return to_markdown(rows)
