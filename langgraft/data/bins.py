"""Per-category sequence stores on disk, and the seeded split into bins and buckets.

Packed sequences of each category are appended to flat files in a scratch directory, so memory
does not grow with the corpus; only a few integers per sequence stay in memory. Reads use
`os.pread` into small buffers rather than `np.memmap`: pages of a memory map count towards the
process's resident memory once touched, and the output pass touches every one of them.

Bins and buckets (Colossal-LLaMA-2's "bucket-based training", made explicit and seeded): the
sequences of each category are shuffled with a generator seeded by (seed, category name) and cut
into K near-equal bins (`np.array_split` sizes: the first n % K bins get one more). Bucket k holds
bin k of every category, shuffled together with a generator seeded by (seed, k), so a trainer
reading a bucket front to back sees the categories interleaved. The bins are random splits, so
every bucket is a balanced sample of every category and the order of the buckets is no
curriculum: reading them in turn spreads each category evenly over training.
"""

from __future__ import annotations

import hashlib
import os
from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class SequenceStore:
    """Append-only store of one category's packed sequences."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._files = {
            name: open(directory / f"{name}.bin", "wb")  # noqa: SIM115 - closed in finish()
            for name in ("ids", "mask", "doc_lens")
        }
        # Per sequence: token offset, doc_lens offset, number of trained tokens.
        self.token_offsets = array("q", [0])
        self.doc_offsets = array("q", [0])
        self.supervised = array("q")
        self._fds: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.supervised)

    def append(self, ids: np.ndarray, mask: np.ndarray, doc_lens: list[int]) -> None:
        self._files["ids"].write(np.ascontiguousarray(ids, dtype=np.int32).tobytes())
        self._files["mask"].write(np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
        self._files["doc_lens"].write(np.asarray(doc_lens, dtype=np.int32).tobytes())
        self.token_offsets.append(self.token_offsets[-1] + len(ids))
        self.doc_offsets.append(self.doc_offsets[-1] + len(doc_lens))
        self.supervised.append(int(np.count_nonzero(mask)))

    def finish(self) -> None:
        """Close the writers and open the files for reading."""
        for name, f in self._files.items():
            f.close()
            self._fds[name] = os.open(self.directory / f"{name}.bin", os.O_RDONLY)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def length(self, i: int) -> int:
        return self.token_offsets[i + 1] - self.token_offsets[i]

    def _read(self, name: str, start: int, stop: int, dtype: type) -> np.ndarray:
        size = np.dtype(dtype).itemsize
        buf = os.pread(self._fds[name], (stop - start) * size, start * size)
        return np.frombuffer(buf, dtype=dtype)

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids int32, mask uint8, doc_lens int32) of sequence i."""
        a, b = self.token_offsets[i], self.token_offsets[i + 1]
        c, d = self.doc_offsets[i], self.doc_offsets[i + 1]
        return (
            self._read("ids", a, b, np.int32),
            self._read("mask", a, b, np.uint8),
            self._read("doc_lens", c, d, np.int32),
        )


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


def _category_key(category: str) -> int:
    return int.from_bytes(hashlib.sha256(category.encode("utf-8")).digest()[:8], "little")


def split_into_bins(n: int, num_bins: int, seed: int, category: str) -> list[np.ndarray]:
    """Sequence indices of each bin of one category (a seeded permutation, cut K ways)."""
    perm = _rng(seed, 0, _category_key(category)).permutation(n)
    return np.array_split(perm, num_bins)


@dataclass
class BucketPlan:
    buckets: list[np.ndarray]
    """Per bucket: an (n, 2) int64 array of (category index, sequence index), in output order."""
    bins: dict[str, list[np.ndarray]]
    """Per category: the sequence indices of each bin."""


def plan_buckets(sizes: dict[str, int], num_bins: int, seed: int) -> BucketPlan:
    """Bins per category, and bucket k = bin k of every category (categories in sorted order),
    shuffled with a generator seeded by (seed, k)."""
    cats = sorted(sizes)
    bins = {c: split_into_bins(sizes[c], num_bins, seed, c) for c in cats}
    buckets = []
    for k in range(num_bins):
        parts = [
            np.stack([np.full(len(bins[c][k]), ci, dtype=np.int64), bins[c][k]], axis=1)
            for ci, c in enumerate(cats)
        ]
        members = np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int64)
        order = _rng(seed, 1, k).permutation(len(members))
        buckets.append(members[order])
    return BucketPlan(buckets=buckets, bins=bins)
