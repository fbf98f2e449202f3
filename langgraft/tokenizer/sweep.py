"""`langgraft tokenizer sweep`: held-out compression per vocabulary size, to choose the size.

    langgraft tokenizer sweep --source ../shared/data/tokenizers/llama2/tokenizer.model \
        --learn-from ../shared/data/corpus/zh-modern ../shared/data/corpus/zh/hongloumeng.txt \
        --hold-out 0.1 --held-out ../shared/data/eval/cmmlu/test \
        --sizes 40000,50000,60000,69104,80000 --out out/sweep

Learns once, to the largest size, and truncates in merge order for the others (a BPE vocabulary
truncated after its k-th piece is exactly what learning k pieces would give, since learning is
greedy). Per size: tokens per character on each held-out corpus, embedding parameters added
(rows x hidden size, twice for untied input and output embeddings), and the knee of the mean
curve (the size farthest below the chord from the smallest to the largest size, as in Kneedle).
Writes sweep.csv, sweep.json, sweep.md and sweep.png into --out (written atomically; see
docs/outputs.md).
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from langgraft.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class SweepConfig:
    """Options of `langgraft tokenizer sweep`."""

    source: Path
    """Source tokenizer (as for `tokenizer expand`: SentencePiece, tokenizer.json directory or
    tiktoken ranks file)."""
    learn_from: list[Path]
    """Corpora to learn from."""
    sizes: str
    """Vocabulary sizes: a comma list (40000,50000,69104) or a range START:STOP:STEP (inclusive)."""
    out: Path
    """Directory for sweep.csv, sweep.json, sweep.md and sweep.png."""
    hold_out: float = 0.0
    """Hold the last FRACTION of each --learn-from corpus out of learning and measure on it."""
    held_out: list[Path] = field(default_factory=list)
    """Held-out corpora (measured one by one; never learned from)."""
    merge_sp: list[Path] = field(default_factory=list)
    """SentencePiece sources only: models whose pieces come before the learned ones."""
    merge_top: int | None = None
    """With --merge-sp: keep only the N best-scoring pieces of each model."""
    pieces: list[Path] = field(default_factory=list)
    """SentencePiece sources only: piece lists that come before the learned ones."""
    keep_segmentation: bool = True
    """Keep the source's segmentation of text without new characters (see `tokenizer expand`)."""
    min_count: int = 2
    """Frequency floor for a learned merge."""
    learner: Literal["merges", "sentencepiece"] = "merges"
    """How to learn (see `tokenizer expand --learner`)."""
    pattern: str | None = None
    """Pre-tokenizer regex of a tiktoken ranks file (default: Llama-3's, for Meta's file)."""
    hidden_size: int = 4096
    """Model hidden size for the embedding-parameter column (4096: LLaMA-2-7B, Llama-3-8B)."""
    tied_embeddings: bool = False
    """The model shares input and output embeddings (counts the new rows once)."""
    overwrite: bool = False
    """Replace an existing --out that a previous langgraft run wrote (any other directory is
    refused)."""


def parse_sizes(spec: str) -> list[int]:
    try:
        if ":" in spec:
            start, stop, step = (int(x) for x in spec.split(":"))
            if step <= 0:
                raise ValueError
            sizes = list(range(start, stop + 1, step))
        else:
            sizes = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise UserError(
            f"--sizes {spec!r}: expected a comma list (40000,50000) or START:STOP:STEP"
        ) from None
    if not sizes:
        raise UserError(f"--sizes {spec!r}: no sizes")
    return sorted(set(sizes))


def knee(xs: list[float], ys: list[float]) -> int:
    """Index of the point farthest below the chord from the first to the last point."""
    if len(xs) < 3 or xs[-1] == xs[0]:  # no chord to fall below
        return len(xs) - 1
    x0, y0, x1, y1 = xs[0], ys[0], xs[-1], ys[-1]

    def below(i: int) -> float:
        chord = y0 + (y1 - y0) * (xs[i] - x0) / (x1 - x0)
        return chord - ys[i]

    return max(range(len(xs)), key=below)


def _expand_config(cfg: SweepConfig, target: int) -> Any:
    from langgraft.tokenizer.config import ExpandConfig

    return ExpandConfig(
        source=cfg.source, out=cfg.out, pieces=cfg.pieces, merge_sp=cfg.merge_sp,
        merge_top=cfg.merge_top,
        learn_from=cfg.learn_from, target_size=target, keep_segmentation=cfg.keep_segmentation,
        learner=cfg.learner, min_count=cfg.min_count, hold_out=cfg.hold_out,
        held_out=[], pattern=cfg.pattern, measure_keep_cost=False,
    )  # fmt: skip


def held_out_sets(cfg: SweepConfig, tail: list[str]) -> dict[str, list[str]]:
    from langgraft.tokenizer.sources import read_samples

    sets = {}
    if tail:
        sets["held-out tail"] = tail
    for p in cfg.held_out:
        p = Path(p)
        name = f"{p.parent.name}/{p.name}" if p.is_dir() else p.name
        sets[name] = [t for t, _ in read_samples([p])[0]]
    if not sets:
        raise UserError(
            "sweep measures on held-out text: give --hold-out FRACTION and/or --held-out"
        )
    return sets


def check_reached(cfg: SweepConfig, sizes: list[int], n_src: int, reached: int) -> None:
    """Sizes above the vocabulary that learning reached all measure that one tokenizer: when
    every size is above it there is no curve (and no knee) to show, so refuse; when some are,
    say which rows repeat it."""
    above = [n for n in sizes if n > reached]
    if not above:
        return
    how = (f"learning from --learn-from reached {reached:,} pieces ({reached - n_src:,} beyond "
           f"the source's {n_src:,})")  # fmt: skip
    if len(above) == len(sizes):
        raise UserError(
            f"--sizes {cfg.sizes}: {how}; every size asked is above it: ask for sizes up to "
            f"{reached}, or learn from more text (or lower --min-count)"
        )
    log.warning("--sizes %s: %s; the rows of %s all measure that %s-piece tokenizer",
                cfg.sizes, how, ", ".join(map(str, above)), f"{reached:,}")  # fmt: skip


def sweep_tokenizers(cfg: SweepConfig, sizes: list[int]) -> tuple[int, dict[int, Any], list[str]]:
    """(source size, {size: tokenizers.Tokenizer}, held-out tail texts), learning once."""
    from langgraft.tokenizer.bytelevel_source import is_bytelevel_source
    from langgraft.tokenizer.config import read_learning_text

    ecfg = _expand_config(cfg, sizes[-1])
    ecfg.validate()
    samples, tail = read_learning_text(ecfg)
    if is_bytelevel_source(Path(cfg.source)):
        from langgraft.tokenizer.bytelevel import append_merges
        from langgraft.tokenizer.expand_bytelevel import learn_expansion, load_source

        src = load_source(ecfg)
        n_src = src.size()
        if sizes[0] <= n_src:
            raise UserError(f"--sizes: {sizes[0]} is not above the source size {n_src}")
        learned = learn_expansion(
            src, samples, sizes[-1] - n_src, cfg.keep_segmentation, cfg.min_count, None
        )
        merges = learned.merges
        check_reached(cfg, sizes, n_src, n_src + len(merges))
        toks = {}
        for n in sizes:
            t = copy.deepcopy(src)
            append_merges(t, merges[: n - n_src])
            toks[n] = t.tokenizer()
        return n_src, toks, tail
    from langgraft.tokenizer.expand import build_expansion
    from langgraft.tokenizer.hf import build_fast_tokenizer
    from langgraft.tokenizer.spmodel import ModelProto, load_proto, resolve_model_path

    source = load_proto(resolve_model_path(cfg.source))
    n_src = len(source.pieces)
    if sizes[0] <= n_src:
        raise UserError(f"--sizes: {sizes[0]} is not above the source size {n_src}")
    proto, _, _ = build_expansion(ecfg, source, samples, cfg.keep_segmentation)
    check_reached(cfg, sizes, n_src, len(proto.pieces))
    toks = {}
    for n in sizes:
        q = ModelProto()
        q.CopyFrom(proto)
        del q.pieces[n:]
        toks[n] = build_fast_tokenizer(q)
    return n_src, toks, tail


def sweep(cfg: SweepConfig) -> list[dict]:
    from langgraft.fsutil import atomic_output_dir, check_output
    from langgraft.tokenizer.records import tokens_per_char

    sizes = parse_sizes(cfg.sizes)
    inputs = [cfg.source, *cfg.learn_from, *cfg.held_out, *cfg.merge_sp, *cfg.pieces]
    check_output(cfg.out, cfg.overwrite, inputs)  # before the learning
    n_src, toks, tail = sweep_tokenizers(cfg, sizes)
    sets = held_out_sets(cfg, tail)
    rows = []
    for n, tok in toks.items():
        vocab = tok.get_vocab_size()
        rates = {name: tokens_per_char(tok, texts) for name, texts in sets.items()}
        rows.append(
            {
                "size": n,
                "vocab_size": vocab,
                "added": vocab - n_src,
                "embedding_params_added": (vocab - n_src)
                * cfg.hidden_size
                * (1 if cfg.tied_embeddings else 2),
                **{f"tokens_per_char[{k}]": v for k, v in rates.items()},
                "tokens_per_char_mean": sum(rates.values()) / len(rates),
            }
        )
    k = knee([r["vocab_size"] for r in rows], [r["tokens_per_char_mean"] for r in rows])
    for i, r in enumerate(rows):
        r["knee"] = i == k
    with atomic_output_dir(cfg.out, cfg.overwrite, inputs) as tmp:
        write_outputs(rows, tmp, list(sets))
    return rows


def to_markdown(rows: list[dict], sets: list[str]) -> str:
    head = "| size | added | embedding params added | " + " | ".join(sets) + " | mean |"
    lines = [head, "|---:|---:|---:|" + "---:|" * (len(sets) + 1)]
    for r in rows:
        cells = [f"{r[f'tokens_per_char[{s}]']:.4f}" for s in sets]
        mark = " (knee)" if r["knee"] else ""
        if r["vocab_size"] < r["size"]:  # above what learning reached (check_reached)
            mark += f" (asked {r['size']:,})"
        lines.append(
            f"| {r['vocab_size']:,}{mark} | {r['added']:,} | {r['embedding_params_added'] / 1e6:.1f}M"
            f" | " + " | ".join(cells) + f" | {r['tokens_per_char_mean']:.4f} |"
        )
    return "\n".join(lines)


def write_outputs(rows: list[dict], out: Path, sets: list[str]) -> None:
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(rows, indent=1) + "\n")
    with open(out / "sweep.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / "sweep.md").write_text(to_markdown(rows, sets) + "\n", encoding="utf-8")
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [r["vocab_size"] for r in rows]
    for s in sets:
        ax.plot(xs, [r[f"tokens_per_char[{s}]"] for r in rows], marker="o", label=s)
    ax.plot(xs, [r["tokens_per_char_mean"] for r in rows], "k--", marker="s", label="mean")
    kr = next(r for r in rows if r["knee"])
    ax.axvline(kr["vocab_size"], color="grey", ls=":", label=f"knee {kr['vocab_size']:,}")
    ax.set_xlabel("vocabulary size")
    ax.set_ylabel("held-out tokens per character (lower is better)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "sweep.png", dpi=120)
    plt.close(fig)
