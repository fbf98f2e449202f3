"""Seeded bins per category, buckets = bin k of every category, and the on-disk store."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from langgraft.data.bins import SequenceStore, plan_buckets, split_into_bins


def test_bins_partition_a_category_evenly_and_reproducibly() -> None:
    bins = split_into_bins(10, 3, seed=1, category="zh")
    assert [len(b) for b in bins] == [4, 3, 3]
    assert sorted(np.concatenate(bins).tolist()) == list(range(10))
    again = split_into_bins(10, 3, seed=1, category="zh")
    assert all((a == b).all() for a, b in zip(bins, again, strict=True))
    other = split_into_bins(10, 3, seed=2, category="zh")
    assert any((a != b).any() for a, b in zip(bins, other, strict=True))
    assert np.concatenate(bins).tolist() != list(range(10)), "shuffled, not contiguous"


def test_bucket_k_holds_bin_k_of_every_category() -> None:
    plan = plan_buckets({"en": 7, "zh": 5, "code": 2}, 2, seed=3)
    cats = ["code", "en", "zh"]
    for k, members in enumerate(plan.buckets):
        for ci, c in enumerate(cats):
            got = sorted(members[members[:, 0] == ci, 1].tolist())
            assert got == sorted(plan.bins[c][k].tolist())
    assert [len(b) for b in plan.buckets] == [1 + 4 + 3, 1 + 3 + 2]
    assert plan_buckets({"en": 7, "zh": 5, "code": 2}, 2, seed=3).buckets[0].tolist() == (
        plan.buckets[0].tolist()
    )


def test_store_round_trip(tmp_path: Path) -> None:
    store = SequenceStore(tmp_path / "s")
    seqs = [
        (np.arange(5, dtype=np.int32), np.array([0, 1, 1, 0, 1], np.uint8), [2, 3]),
        (np.arange(7, 10, dtype=np.int32), np.array([0, 1, 1], np.uint8), [3]),
    ]
    for s in seqs:
        store.append(*s)
    store.finish()
    assert len(store) == 2 and store.length(1) == 3 and list(store.supervised) == [3, 2]
    for i, (ids, mask, doc_lens) in enumerate(seqs):
        got = store.read(i)
        assert got[0].tolist() == ids.tolist()
        assert got[1].tolist() == mask.tolist()
        assert got[2].tolist() == doc_lens
    store.close()
