"""Pack documents into sequences of at most max_length tokens, losing none, recording boundaries.

- A document longer than max_length is split into chunks (Colossal truncates it and loses the
  tail). Chunk 1 holds the first max_length tokens; every later chunk starts with the last token
  of the chunk before as an untrained context token, then up to max_length - 1 new tokens. So
  every trained token is trained exactly once and always has at least one token of its own
  document before it.
- Every document segment in a sequence starts with an untrained token (BOS, a template's first
  token, or the overlap token above). With labels aligned to input_ids (label = id where trained,
  -100 elsewhere; the model shifts), the label of a segment's first token is -100, so a shifted
  loss never asks a document to predict the next document's first token.
- Chunks without any trained token (a long `source` prefix) are dropped and counted: they would
  give an all-masked sequence, i.e. a NaN loss (Colossal #5370).
- Packing is best fit over a bounded set of open sequences: each document goes into the open
  sequence whose free space fits it most tightly; a sequence is emitted when full, or, if too many
  are open, the fullest is emitted. Memory is bounded (max_open x max_length tokens) and, unlike
  Colossal's greedy buffers, no partly filled sequence is thrown away.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

Sink = Callable[[np.ndarray, np.ndarray, list[int]], None]
"""Called with (ids int32, mask uint8, doc_lens) of every emitted sequence."""


@dataclass
class PackStats:
    documents: int = 0
    split_documents: int = 0
    """Documents longer than max_length, split into chunks."""
    chunks: int = 0
    """Document pieces placed into sequences (a whole document counts as one)."""
    overlap_tokens: int = 0
    """Context tokens repeated at the start of a later chunk of a split document."""
    dropped_chunks: int = 0
    dropped_tokens: int = 0
    """Tokens of chunks that had no trained token (context only), left out."""
    sequences: int = 0
    tokens_out: int = 0
    supervised_out: int = 0


def split_document(
    ids: np.ndarray, mask: np.ndarray, max_length: int
) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Chunks (ids, mask, overlap tokens added) of a document; one chunk if it fits."""
    n = len(ids)
    if n <= max_length:
        yield ids, mask, 0
        return
    yield ids[:max_length], mask[:max_length], 0
    start = max_length
    while start < n:
        end = min(n, start + max_length - 1)
        chunk_ids = ids[start - 1 : end]
        chunk_mask = mask[start - 1 : end].copy()
        chunk_mask[0] = 0  # the overlap token was trained on as the previous chunk's last token
        yield chunk_ids, chunk_mask, 1
        start = end


class _OpenSequence:
    __slots__ = ("ids", "mask", "fill", "doc_lens")

    def __init__(self, max_length: int) -> None:
        self.ids = np.empty(max_length, dtype=np.int32)
        self.mask = np.empty(max_length, dtype=np.uint8)
        self.fill = 0
        self.doc_lens: list[int] = []


class BestFitPacker:
    """Packs the documents of one category; see the module docstring."""

    def __init__(self, max_length: int, sink: Sink, max_open: int = 128) -> None:
        self.max_length = max_length
        self.sink = sink
        self.max_open = max_open
        self.stats = PackStats()
        self._free: list[tuple[int, int]] = []  # sorted (free space, serial) of open sequences
        self._open: dict[int, _OpenSequence] = {}
        self._serial = 0
        self._spare: list[_OpenSequence] = []

    def add(self, ids: np.ndarray, mask: np.ndarray, trained: int | None = None) -> None:
        """Add one document (token ids and trained-token mask; mask[0] must be 0).

        `trained` (the mask's count of ones, if the caller has it) saves a pass over the mask.
        """
        if len(ids) == 0:
            return
        assert mask[0] == 0, "a document must start with an untrained token"
        st = self.stats
        st.documents += 1
        if len(ids) <= self.max_length and (trained if trained is not None else mask.any()):
            st.chunks += 1
            self._place(ids, mask)
            return
        if len(ids) > self.max_length:
            st.split_documents += 1
        for chunk_ids, chunk_mask, overlap in split_document(ids, mask, self.max_length):
            self._place_chunk(chunk_ids, chunk_mask, overlap)

    def add_pieces(self, pieces: Iterable[tuple[np.ndarray, np.ndarray]]) -> tuple[int, int]:
        """Add one document given as consecutive (ids, mask) pieces; returns (tokens, trained).

        Places exactly the chunks `add` places for the concatenation, in the same order (so the
        output is the same), while holding only about max_length tokens plus one piece: a
        document of any length streams through (see `Encoder.long_document`)."""
        size = self.max_length
        buf_ids, buf_mask = np.zeros(0, np.int32), np.zeros(0, np.uint8)
        base = 0  # absolute position of buf[0]
        start = 0  # absolute position of the next chunk's first new token (0: none placed yet)
        n = trained = 0
        for ids, mask in pieces:
            if not len(ids):
                continue
            if n == 0:
                assert mask[0] == 0, "a document must start with an untrained token"
            n += len(ids)
            trained += int(np.count_nonzero(mask))
            buf_ids, buf_mask = np.concatenate([buf_ids, ids]), np.concatenate([buf_mask, mask])
            if start == 0 and n > size:  # longer than a sequence: split, as split_document
                self.stats.documents += 1
                self.stats.split_documents += 1
                self._place_chunk(buf_ids[:size], buf_mask[:size], 0)
                start = size
            while start and start + size - 1 <= n:  # a full later chunk is in the buffer
                a, b = start - 1 - base, start + size - 1 - base
                chunk_mask = buf_mask[a:b].copy()
                chunk_mask[0] = 0
                self._place_chunk(buf_ids[a:b], chunk_mask, 1)
                start += size - 1
            if start:  # keep the overlap token and what follows it; free the rest
                keep = start - 1 - base
                buf_ids, buf_mask = buf_ids[keep:].copy(), buf_mask[keep:].copy()
                base = start - 1
        if n == 0:
            return 0, 0
        if start == 0:  # it fits in one sequence
            self.add(buf_ids, buf_mask, trained)
        elif start < n:
            chunk_mask = buf_mask.copy()
            chunk_mask[0] = 0
            self._place_chunk(buf_ids, chunk_mask, 1)
        return n, trained

    def _place_chunk(self, ids: np.ndarray, mask: np.ndarray, overlap: int) -> None:
        st = self.stats
        st.overlap_tokens += overlap
        if not mask.any():
            st.dropped_chunks += 1
            st.dropped_tokens += len(ids)
            return
        st.chunks += 1
        self._place(ids, mask)

    def _place(self, ids: np.ndarray, mask: np.ndarray) -> None:
        n = len(ids)
        if n == self.max_length:
            self._emit_arrays(ids, mask, [n])
            return
        i = bisect.bisect_left(self._free, (n, -1))
        if i < len(self._free):
            free, serial = self._free.pop(i)
            seq = self._open[serial]
        else:
            if len(self._open) >= self.max_open:
                _, fullest = self._free.pop(0)
                self._emit(self._open.pop(fullest))
            seq = self._spare.pop() if self._spare else _OpenSequence(self.max_length)
            seq.fill, seq.doc_lens = 0, []
            serial = self._serial
            self._serial += 1
            self._open[serial] = seq
            free = self.max_length
        seq.ids[seq.fill : seq.fill + n] = ids
        seq.mask[seq.fill : seq.fill + n] = mask
        seq.fill += n
        seq.doc_lens.append(n)
        free -= n
        if free == 0:
            self._emit(self._open.pop(serial))
        else:
            bisect.insort(self._free, (free, serial))

    def _emit(self, seq: _OpenSequence) -> None:
        self._emit_arrays(seq.ids[: seq.fill], seq.mask[: seq.fill], seq.doc_lens)
        self._spare.append(seq)

    def _emit_arrays(self, ids: np.ndarray, mask: np.ndarray, doc_lens: list[int]) -> None:
        st = self.stats
        st.sequences += 1
        st.tokens_out += len(ids)
        st.supervised_out += int(np.count_nonzero(mask))
        self.sink(ids, mask, doc_lens)

    def flush(self) -> None:
        """Repack what is still open (best fit, longest first) and emit it all.

        The open sequences at the end of a category are the stream's leftovers, often half
        empty; repacking their documents in decreasing length order closes most of that gap.
        """
        pieces = []
        for serial in sorted(self._open):
            seq, offset = self._open[serial], 0
            for n in seq.doc_lens:
                pieces.append(
                    (seq.ids[offset : offset + n].copy(), seq.mask[offset : offset + n].copy())
                )
                offset += n
        self._open.clear()
        self._free.clear()
        pieces.sort(key=lambda p: -len(p[0]))  # stable: ties keep stream order
        max_open, self.max_open = self.max_open, len(pieces) + 1
        for ids, mask in pieces:
            self._place(ids, mask)
        self.max_open = max_open
        for serial in sorted(self._open):
            self._emit(self._open.pop(serial))
        self._free.clear()
