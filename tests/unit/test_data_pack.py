"""Chunking of long documents and best-fit packing: no token lost, boundaries recorded."""

from __future__ import annotations

import numpy as np
import pytest

from langgraft.data.pack import BestFitPacker, split_document
from langgraft.data.writer import position_ids_from_doc_lens


def _doc(n: int, n_masked: int = 1, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    ids = np.arange(start, start + n, dtype=np.int32)
    mask = np.ones(n, dtype=np.uint8)
    mask[:n_masked] = 0
    return ids, mask


def _pack(docs, max_length: int, max_open: int = 128):
    out = []
    packer = BestFitPacker(
        max_length, lambda i, m, d: out.append((i.copy(), m.copy(), list(d))), max_open
    )
    for ids, mask in docs:
        packer.add(ids, mask)
    packer.flush()
    return out, packer.stats


def test_short_document_is_one_chunk() -> None:
    ids, mask = _doc(10)
    assert [(len(c), o) for c, _, o in split_document(ids, mask, 10)] == [(10, 0)]


def test_long_document_is_split_with_one_overlap_token_not_truncated() -> None:
    ids, mask = _doc(25, n_masked=3)
    chunks = list(split_document(ids, mask, 10))
    assert [len(c) for c, _, _ in chunks] == [10, 10, 7]
    assert [o for _, _, o in chunks] == [0, 1, 1]
    # chunk k starts with the last token of chunk k-1, untrained
    assert chunks[1][0][0] == chunks[0][0][-1] and chunks[1][1][0] == 0
    assert chunks[2][0][0] == chunks[1][0][-1] and chunks[2][1][0] == 0
    # every trained token of the document is trained exactly once, and nothing is lost
    trained = np.concatenate([c[m.astype(bool)] for c, m, _ in chunks])
    assert trained.tolist() == ids[mask.astype(bool)].tolist()
    new_tokens = np.concatenate([chunks[0][0]] + [c[1:] for c, _, _ in chunks[1:]])
    assert new_tokens.tolist() == ids.tolist()


def test_packing_conserves_tokens_and_records_boundaries() -> None:
    rng = np.random.default_rng(0)
    docs, start = [], 0
    for _ in range(400):
        n = int(rng.integers(3, 200))
        docs.append(_doc(n, n_masked=int(rng.integers(1, 3)), start=start))
        start += n
    docs.append(_doc(1000, start=start))  # longer than max_length
    out, st = _pack(docs, 256)
    assert all(len(i) <= 256 for i, _, _ in out)
    for ids, mask, doc_lens in out:
        assert sum(doc_lens) == len(ids)
        starts = np.cumsum([0] + doc_lens[:-1])
        assert (mask[starts] == 0).all(), "every segment starts with an untrained token"
    total_in = sum(len(i) for i, _ in docs)
    assert st.tokens_out == total_in + st.overlap_tokens - st.dropped_tokens
    assert st.supervised_out == sum(int(m.sum()) for _, m in docs)
    assert st.split_documents == 1 and st.overlap_tokens == 3
    # every input token id appears (ids are unique per position in this test)
    seen = np.concatenate([i for i, _, _ in out])
    assert set(seen.tolist()) == set(range(start + 1000))
    efficiency = st.tokens_out / (st.sequences * 256)
    assert efficiency > 0.97, efficiency


def test_best_fit_places_a_document_into_the_tightest_open_sequence() -> None:
    out: list[list[int]] = []
    packer = BestFitPacker(11, lambda i, m, d: out.append(list(d)))
    for n in (6, 3, 4, 2):  # 6 -> A (free 5), 3 -> A (free 2), 4 -> B (free 7), 2 -> A: full
        packer.add(*_doc(n))
    assert out == [[6, 3, 2]]


def test_flush_repacks_leftovers_longest_first() -> None:
    out, st = _pack([_doc(3), _doc(6), _doc(4), _doc(7)], 10, max_open=4)
    # streamed: 3 -> A, 6 -> A (free 1), 4 -> B, 7 -> C; repacked: 7+3, 6+4, the rest
    assert sorted(d for _, _, d in out) == [[6, 4], [7, 3]]
    assert st.sequences == 2


def test_bounded_open_sequences_emit_the_fullest_first() -> None:
    out, st = _pack([_doc(9), _doc(8), _doc(7)], 10, max_open=2)
    assert [d for _, _, d in out] == [[9], [8], [7]]
    assert st.sequences == 3


def test_context_only_chunks_are_dropped_and_counted() -> None:
    ids, mask = _doc(30, n_masked=25)  # a long untrained source, then 5 trained tokens
    out, st = _pack([(ids, mask)], 10)
    assert st.dropped_chunks == 2 and st.dropped_tokens == 20
    assert all(m.any() for _, m, _ in out), "no all-masked sequence"
    assert st.supervised_out == 5


def test_document_must_start_untrained() -> None:
    packer = BestFitPacker(10, lambda *a: None)
    with pytest.raises(AssertionError):
        packer.add(np.arange(3, dtype=np.int32), np.ones(3, dtype=np.uint8))


def test_position_ids_restart_per_document() -> None:
    assert position_ids_from_doc_lens([3, 1, 2]).tolist() == [0, 1, 2, 0, 0, 1]


def _pack_in_pieces(docs, max_length: int, max_open: int, rng: np.random.Generator):
    out = []
    packer = BestFitPacker(
        max_length, lambda i, m, d: out.append((i.copy(), m.copy(), list(d))), max_open
    )
    for ids, mask in docs:
        cuts = np.sort(rng.integers(0, len(ids) + 1, size=int(rng.integers(0, 6))))
        bounds = [0, *cuts.tolist(), len(ids)]
        pieces = [(ids[a:b], mask[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
        assert packer.add_pieces(iter(pieces)) == (len(ids), int(mask.sum()))
    packer.flush()
    return out, packer.stats


def test_a_document_added_in_pieces_packs_exactly_as_added_whole() -> None:
    """`add_pieces` (how a long document streams in) places the same chunks in the same order as
    `add` of the concatenation: same sequences, same stats, whatever the piece boundaries."""
    rng = np.random.default_rng(1)
    docs, start = [], 0
    for n in [5, 10, 11, 19, 20, 21, 28, 29, 30, 95, 3, 300, 9, 10]:
        ids, mask = _doc(n, n_masked=int(rng.integers(1, 4)), start=start)
        if n == 300:
            mask[:40] = 0  # the first chunks have no trained token: dropped, both ways
        docs.append((ids, mask))
        start += n
    for max_length in (10, 16):
        whole, st_whole = _pack(docs, max_length, max_open=3)
        out, stats = _pack_in_pieces(docs, max_length, 3, rng)
        assert stats == st_whole and st_whole.split_documents >= 6
        assert st_whole.dropped_chunks >= 2
        assert len(out) == len(whole)
        for (i1, m1, d1), (i2, m2, d2) in zip(out, whole, strict=True):
            assert i1.tolist() == i2.tolist() and m1.tolist() == m2.tolist() and d1 == d2
