"""Learning new merges on top of an existing BPE vocabulary (incremental BPE).

Every existing merge keeps its priority and every new merge ranks after all of them, so a text is
tokenized by first applying the old merges (giving exactly the old segmentation; a new merge
produces a new token, so it can never create an adjacency that an old merge would take), then the
new ones. Learning therefore works on the *old segmentation* of the corpus: each pre-tokenized
word becomes the sequence of its old token ids, and BPE training continues from there. What the
learner sees is exactly what the expanded tokenizer will do, so every learned token is reachable
by construction and no merge-path repair is needed.

The counting and merging is the `tokenizers` library's BpeTrainer (Rust): each old token id is
written as one private character (U+10000 + id), the trainer learns merges over those characters,
and the merges are mapped back to old-token sequences.

Segmentation guarantee (`keep_segmentation`): every old token is classified as an *anchor*
(contains a character that makes a merge safe), *plain* or *blocked* (never merged). Words are cut
before and after blocked tokens and between two adjacent plain tokens, so every learned token
contains an anchor token; text without anchor characters then never meets a new merge and keeps
its ids exactly.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from langgraft.errors import UserError

log = logging.getLogger(__name__)

ANCHOR, PLAIN, BLOCKED = 2, 1, 0
SURROGATE_BASE = 0x10000  # above the BMP: no surrogate halves, no whitespace, no normalisation
# The trainer reads repeated words, so a big weighted corpus (a word list with frequencies) is
# scaled down proportionally to about this many old tokens; every fragment keeps weight >= 1.
MAX_SYMBOLS = 20_000_000


@dataclass
class LearnedMerges:
    """Merges in learned order, as pairs of old-token-id sequences (left, right)."""

    merges: list[tuple[tuple[int, ...], tuple[int, ...]]]
    words: int  # distinct fragments learned from
    symbols: int  # old tokens in the learning corpus (weighted)


def cut_fragments(
    ids: Sequence[int], kinds: Sequence[int] | bytes, keep_segmentation: bool
) -> Iterable[tuple[int, ...]]:
    """Split one word's old token ids into the fragments merges may act within."""
    start = 0
    n = len(ids)
    for i in range(n):
        k = kinds[ids[i]]
        if k == BLOCKED:
            if i > start:
                yield tuple(ids[start:i])
            start = i + 1
        elif keep_segmentation and k == PLAIN and i > start and kinds[ids[i - 1]] == PLAIN:
            yield tuple(ids[start:i])
            start = i
    if n > start:
        yield tuple(ids[start:n])


def count_fragments(
    words: Iterable[tuple[Sequence[int], int]],
    kinds: Sequence[int] | bytes,
    keep_segmentation: bool,
) -> Counter[tuple[int, ...]]:
    """Weighted fragments of length >= 2 (single tokens take part in no merge)."""
    frags: Counter[tuple[int, ...]] = Counter()
    for ids, weight in words:
        for f in cut_fragments(ids, kinds, keep_segmentation):
            if len(f) > 1:
                frags[f] += weight
    return frags


def learn_merges(
    fragments: Counter[tuple[int, ...]],
    n_merges: int,
    min_count: int = 2,
    max_token_length: int | None = None,
) -> LearnedMerges:
    """Continue BPE training over the fragments for up to `n_merges` merges.

    Stops early when no pair occurs `min_count` times. `max_token_length` bounds a new token's
    length in old tokens.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    if not fragments:
        raise UserError(
            "--learn-from: nothing to learn (no two adjacent tokens that a new merge may join)"
        )
    alphabet = {t for f in fragments for t in f}
    to_char = {t: chr(SURROGATE_BASE + t) for t in alphabet}
    total = sum(len(f) * c for f, c in fragments.items())
    scale = min(1.0, MAX_SYMBOLS / total)

    def lines() -> Iterable[str]:
        batch: list[str] = []
        for f, c in fragments.items():
            word = "".join(to_char[t] for t in f)
            batch.append(" ".join([word] * max(1, round(c * scale))))
            if len(batch) >= 1024:
                yield from batch
                batch = []
        yield from batch

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(
        vocab_size=len(alphabet) + n_merges,
        # the floor applies to the unscaled counts
        min_frequency=max(1, round(max(min_count, 1) * scale)),
        show_progress=False,
        special_tokens=[],
        limit_alphabet=len(alphabet),
        max_token_length=max_token_length,
    )
    log.info(
        "learning up to %s merges over %s fragments (%s old tokens)",
        f"{n_merges:,}", f"{len(fragments):,}", f"{total:,}",
    )  # fmt: skip
    tok.train_from_iterator(lines(), trainer=trainer, length=len(fragments))
    model = json.loads(tok.to_str())["model"]

    def back(s: str) -> tuple[int, ...]:
        return tuple(ord(ch) - SURROGATE_BASE for ch in s)

    merges = [(back(a), back(b)) for a, b in model["merges"]][:n_merges]
    if len(merges) < n_merges:
        log.info(
            "learned %s merges: no other pair occurs >= %d times (--min-count)",
            f"{len(merges):,}", min_count,
        )  # fmt: skip
    return LearnedMerges(merges=merges, words=len(fragments), symbols=total)


# --- SentencePiece (LLaMA-2 style) front end ---------------------------------------------------


def missing_characters(proto: Any, samples: list[tuple[str, int]], coverage: float) -> list[str]:
    """Characters not in the source, most frequent first, until `coverage` of all characters
    (weighted) is reached; rarer ones are left to byte fallback."""
    chars: Counter[str] = Counter()
    for text, w in samples:
        chars.update({c: w * n for c, n in Counter(text.replace(" ", "")).items()})
    chars.pop("\n", None)
    present = {p.piece for p in proto.pieces}
    total, covered, out = sum(chars.values()), 0, []
    for ch, c in chars.most_common():
        if covered >= coverage * total:
            break
        covered += c
        if ch not in present and not ch.isspace() and ch.isprintable():
            out.append(ch)
    return out


def sentencepiece_kinds(proto: Any, keep_segmentation: bool, old_chars: set[str]) -> bytearray:
    """Per piece: BLOCKED (control, byte, user-defined, whitespace runs, digits when the source
    splits digits), ANCHOR (contains a character of no multi-character piece of the original
    source, `old_chars`), PLAIN."""
    from langgraft.tokenizer.expand import reject_reason
    from langgraft.tokenizer.spmodel import NORMAL

    split_digits = proto.trainer_spec.split_digits
    kinds = bytearray(len(proto.pieces))
    for i, p in enumerate(proto.pieces):
        s = p.piece
        if p.type != NORMAL or reject_reason(s) or p.score <= -1e8:
            kinds[i] = BLOCKED
        elif split_digits and any(c.isdigit() for c in s):
            kinds[i] = BLOCKED
        elif not keep_segmentation or any(c not in old_chars for c in s):
            kinds[i] = ANCHOR
        else:
            kinds[i] = PLAIN
    return kinds


def sentencepiece_words(
    proto: Any, samples: list[tuple[str, int]]
) -> Iterable[tuple[list[int], int]]:
    """Old segmentation of every line, cut into words before each piece starting with '▁'
    (SentencePiece's trainer never merges across a word boundary either)."""
    from langgraft.tokenizer.hf import build_fast_tokenizer
    from langgraft.tokenizer.spmodel import WS

    tok = build_fast_tokenizer(proto)
    starts = bytearray(len(proto.pieces))
    for i, p in enumerate(proto.pieces):
        starts[i] = p.piece.startswith(WS)
    lines: list[str] = []
    weights: list[int] = []
    for text, w in samples:
        for line in text.replace("\t", " ").splitlines():
            if line.strip():
                lines.append(line)
                weights.append(w)
    for i in range(0, len(lines), 1024):
        encs = tok.encode_batch(lines[i : i + 1024], add_special_tokens=False)
        for enc, w in zip(encs, weights[i : i + 1024], strict=True):
            ids = enc.ids
            start = 0
            for k in range(1, len(ids)):
                if starts[ids[k]]:
                    yield ids[start:k], w
                    start = k
            yield ids[start:], w


def learn_sentencepiece_pieces(
    proto: Any,
    samples: list[tuple[str, int]],
    n_pieces: int,
    keep_segmentation: bool,
    min_count: int,
    coverage: float,
    old_chars: set[str] | None = None,
) -> list[Any]:
    """Candidates for a SentencePiece source: missing characters, then the learned merges.

    `proto` is the vocabulary as it stands (the source plus pieces added before learning);
    `old_chars` are the characters the original source merges (default: those of `proto`)."""
    from langgraft.tokenizer.expand import merged_characters
    from langgraft.tokenizer.sources import Candidate
    from langgraft.tokenizer.spmodel import NORMAL, ModelProto, Piece

    chars = missing_characters(proto, samples, coverage)
    cands = [Candidate(ch, "learned:char") for ch in chars]
    if len(chars) >= n_pieces:
        # Characters come first (byte fallback costs up to 3 tokens each) and always fit, so no
        # learned merge could be added: learning none gives the same vocabulary, faster.
        log.info(
            "the corpus has %s characters the source lacks (coverage %g): the %s most frequent "
            "fill the budget of %s pieces, so no merges are learned (a larger --target-size "
            "leaves room for them)",
            f"{len(chars):,}", coverage, f"{n_pieces:,}", f"{n_pieces:,}",
        )  # fmt: skip
        return cands
    log.info(
        "adding %s characters the source lacks, then learning merges for the other %s pieces",
        f"{len(chars):,}", f"{n_pieces - len(chars):,}",
    )  # fmt: skip
    work = ModelProto()
    work.CopyFrom(proto)
    low = min(p.score for p in proto.pieces if p.type == NORMAL and p.score > -1e8) - 1.0
    for k, ch in enumerate(chars):
        work.pieces.append(Piece(piece=ch, score=low - k, type=NORMAL))
    if old_chars is None:
        old_chars = merged_characters(proto)
    kinds = sentencepiece_kinds(work, keep_segmentation, old_chars)
    frags = count_fragments(sentencepiece_words(work, samples), kinds, keep_segmentation)
    learned = learn_merges(frags, n_pieces - len(chars), min_count=min_count)
    seen = {p.piece for p in work.pieces}
    for r, (left, right) in enumerate(learned.merges):
        piece = "".join(work.pieces[i].piece for i in (*left, *right))
        if piece not in seen:
            seen.add(piece)
            cands.append(Candidate(piece, f"learned:merge{r}"))
    return cands
