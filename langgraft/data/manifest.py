"""Accounting of every row and token, and the manifest.json written with each prepared dataset.

Zero loss is checked, not hoped for: `check_accounting` raises if
- rows in != rows packed + rows rejected (by reason), or the per-file row counts disagree;
- target tokens in != supervised tokens out (labels != -100 in the output);
- tokens out != tokens in + overlap tokens added - tokens of dropped context-only chunks.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langgraft.data.pack import PackStats

FORMAT = "langgraft-prepared/1"


@dataclass
class CategoryCounts:
    rows: int = 0
    tokens_in: int = 0
    target_in: int = 0


@dataclass
class Accounting:
    rows_in: int = 0
    rejected: Counter = field(default_factory=Counter)
    bad_files: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    """The first few rejected rows as "file:line: reason: message"."""
    categories: dict[str, CategoryCounts] = field(default_factory=dict)
    boundary_inside_token: int = 0
    """Packed source/target rows with a token that begins in the source and ends in the target
    (not trained; see `langgraft.data.textenc.Split`)."""
    boundary_example: str | None = None
    extra_pieces: int = 0
    """Documents added by splitting long conversations at exchange boundaries (pieces - 1 per
    split conversation); each piece repeats the system prompt."""

    def reject(self, where: str, reason: str, message: str, file_level: bool) -> None:
        (self.bad_files if file_level else self.rejected)[reason] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{where}: {reason}: {message}")

    @property
    def rows_packed(self) -> int:
        return sum(c.rows for c in self.categories.values())


def _sum_stats(stats: list[PackStats]) -> PackStats:
    total = PackStats()
    for s in stats:
        for k, v in vars(s).items():
            setattr(total, k, getattr(total, k) + v)
    return total


def check_accounting(acc: Accounting, stats: dict[str, PackStats], file_rows: int) -> None:
    total = _sum_stats(list(stats.values()))
    tokens_in = sum(c.tokens_in for c in acc.categories.values())
    target_in = sum(c.target_in for c in acc.categories.values())
    problems = []
    if acc.rows_in != acc.rows_packed + sum(acc.rejected.values()):
        problems.append(f"rows in {acc.rows_in} != packed {acc.rows_packed} + rejected")
    if file_rows != acc.rows_in:
        problems.append(f"rows read per file {file_rows} != rows in {acc.rows_in}")
    if total.documents != acc.rows_packed + acc.extra_pieces:
        problems.append(
            f"documents packed {total.documents} != rows packed {acc.rows_packed} + "
            f"conversation pieces added {acc.extra_pieces}"
        )
    if target_in != total.supervised_out:
        problems.append(f"target tokens in {target_in} != supervised out {total.supervised_out}")
    if tokens_in + total.overlap_tokens - total.dropped_tokens != total.tokens_out:
        problems.append(f"tokens in {tokens_in} + overlap - dropped != out {total.tokens_out}")
    if problems:  # a bug in langgraft, not bad input
        raise RuntimeError("prepare accounting does not balance: " + "; ".join(problems))


def content_hash(files: dict[str, str]) -> str:
    """sha256 over the sorted "path sha256" lines of every data file: the dataset's identity."""
    lines = "".join(f"{p} {h}\n" for p, h in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def build_manifest(
    *,
    kind: str,
    settings: dict[str, Any],
    tokenizer: dict[str, Any],
    template: dict[str, Any] | None,
    inputs: list[dict[str, Any]],
    acc: Accounting,
    stats: dict[str, PackStats],
    bins: dict[str, list[dict[str, int]]],
    buckets: list[dict[str, Any]],
    files: dict[str, str],
    max_length: int,
) -> dict[str, Any]:
    from langgraft import __version__

    total = _sum_stats(list(stats.values()))
    tokens_in = sum(c.tokens_in for c in acc.categories.values())
    target_in = sum(c.target_in for c in acc.categories.values())
    capacity = total.sequences * max_length
    categories = {}
    for name in sorted(acc.categories):
        c, s = acc.categories[name], stats[name]
        categories[name] = {
            "rows": c.rows,
            "tokens_in": c.tokens_in,
            "target_tokens_in": c.target_in,
            "sequences": s.sequences,
            "tokens_out": s.tokens_out,
            "supervised_out": s.supervised_out,
            "split_documents": s.split_documents,
            "packing_efficiency": round(s.tokens_out / max(1, s.sequences * max_length), 6),
            "bins": bins[name],
        }
    return {
        "format": FORMAT,
        "langgraft_version": __version__,
        "kind": kind,
        "settings": settings,
        "tokenizer": tokenizer,
        "template": template,
        "columns": {
            "input_ids": "list<int32>: token ids of one packed sequence (<= max_length, unpadded)",
            "labels": "list<int32>: id where trained, -100 elsewhere; aligned with input_ids "
            "(the model shifts); -100 at the first token of every document segment",
            "doc_lens": "list<int32>: document segment lengths in order, summing to the length; "
            "positions restart at 0 in each, attention must not cross them",
            "category": "string: the category every document in the sequence belongs to",
        },
        "inputs": inputs,
        "counts": {
            "files": {"read": len(inputs), "problems": dict(sorted(acc.bad_files.items()))},
            "rows": {
                "in": acc.rows_in,
                "packed": acc.rows_packed,
                "rejected": dict(sorted(acc.rejected.items())),
                "boundary_inside_token": acc.boundary_inside_token,
            },
            "rejected_examples": acc.examples,
            "tokens": {
                "in": tokens_in,
                "target_in": target_in,
                "supervised_out": total.supervised_out,
                "overlap_added": total.overlap_tokens,
                "context_only_dropped": total.dropped_tokens,
                "out": total.tokens_out,
            },
            "documents": {
                "packed": total.documents,
                "conversation_pieces_added": acc.extra_pieces,
                "split": total.split_documents,
                "chunks": total.chunks,
                "context_only_chunks_dropped": total.dropped_chunks,
            },
            "sequences": total.sequences,
            "packing_efficiency": round(total.tokens_out / max(1, capacity), 6),
        },
        "categories": categories,
        "buckets": buckets,
        "files": dict(sorted(files.items())),
        "content_sha256": content_hash(files),
    }


def relative_files(root: Path, paths: list[Path]) -> dict[str, str]:
    from langgraft.fsutil import sha256_file

    return {p.relative_to(root).as_posix(): sha256_file(p) for p in paths}
