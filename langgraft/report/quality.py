"""Is a generated sample degenerate? A model can lower bits/char on held-out text while its own
greedy text is one punctuation mark repeated ("，，，，"); the report must say so next to the
figures (issue 22). Character n-grams, so the same test holds for Chinese and English."""

from __future__ import annotations

from collections import Counter
from typing import Any

MIN_CHARS = 8  # shorter samples say too little to judge
MAX_TOP_SHARE = 0.5  # one character makes half of the sample
MIN_DISTINCT_2 = 0.3  # fewer than 3 in 10 character pairs are new: a loop


def degeneracy(text: str) -> dict[str, Any] | None:
    """Repetition figures of one sample (whitespace ignored), or None when too short to judge:
    distinct_1/2 = distinct character uni/bigrams over all of them, top_share = the share of the
    most common character; degenerate when top_share >= 0.5 or distinct_2 < 0.3."""
    chars = [c for c in text if not c.isspace()]
    if len(chars) < MIN_CHARS:
        return None
    counts = Counter(chars)
    top, n_top = counts.most_common(1)[0]
    pairs = list(zip(chars, chars[1:], strict=False))
    d1, d2 = len(counts) / len(chars), len(set(pairs)) / len(pairs)
    share = n_top / len(chars)
    return {"distinct_1": d1, "distinct_2": d2, "top_char": top, "top_share": share,
            "degenerate": share >= MAX_TOP_SHARE or d2 < MIN_DISTINCT_2}  # fmt: skip


def degenerate_summary(completions: list[str]) -> str | None:
    """One sentence about a model's degenerate samples, or None when none is."""
    judged = [(t, d) for t in completions if (d := degeneracy(t)) is not None]
    bad = [d for _, d in judged if d["degenerate"]]
    if not bad:
        return None
    top = Counter(d["top_char"] for d in bad).most_common(1)[0][0]
    share = sum(d["top_share"] for d in bad) / len(bad)
    d2 = sum(d["distinct_2"] for d in bad) / len(bad)
    return (f"{len(bad)} of {len(judged)} samples are degenerate (mean distinct-2 {d2:.2f}; "
            f"most common character {top!r}, {share:.0%} of the characters)")  # fmt: skip
