"""Turn batches of raw rows into token ids and a trainable mask (one process, or N workers).

Pretrain rows become `BOS + source + target + EOS`, with source and target tokenized
separately and concatenated, so the mask boundary is exact (Colossal tokenizes the prefix and the
whole row separately and assumes they line up; they need not). Loss is on target + EOS. Chat rows
are laid out by `langgraft.templates`; loss is on assistant content + its end-of-turn token.
Special tokens are always inserted by id.

Speed: the batch's texts go to the Rust tokenizer in one `encode_batch_fast` call (no offsets,
parallel over cores), not through `PreTrainedTokenizer.__call__`.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from langgraft.data import rows as rowlib
from langgraft.data.sources import BAD_FILE, BAD_ROW, JSON_ROW, Item
from langgraft.errors import UserError
from langgraft.fsutil import sha256_file


def tokenizer_file(path: str | Path) -> Path:
    """The file that defines a tokenizer: tokenizer.json of a HF directory, or the bare file."""
    p = Path(path)
    if p.is_dir():
        if not (p / "tokenizer.json").is_file():
            raise UserError(f"{p}: no tokenizer.json in this directory")
        return p / "tokenizer.json"
    if not p.is_file():
        raise UserError(f"{p}: no such tokenizer file or directory")
    return p


def tokenizer_hash(path: str | Path) -> str:
    """sha256 of the tokenizer's defining file: tokenizer.json (HF directory) or the bare
    SentencePiece tokenizer.model. Recorded as `tokenizer.sha256` in every prepared dataset's
    manifest; the trainer compares it with its own tokenizer's hash before training."""
    return sha256_file(tokenizer_file(path))


@dataclass(frozen=True)
class EncoderSpec:
    """Everything a worker needs to build its Encoder (small and picklable)."""

    tokenizer: str
    kind: str
    text_field: str | None
    allow_missing_category: bool
    labels: tuple[str, ...]
    template: str | None = None


@dataclass
class EncodedBatch:
    rows: int = 0
    """Rows read in this batch (accepted + rejected)."""
    categories: list[str] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    mask: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    """1 where the token is trained on (its label is itself), 0 where the label is -100."""
    problems: list[tuple[int, int, str, str, bool]] = field(default_factory=list)
    """(file index, line, reason, message, file_level), in input order."""


class Encoder:
    def __init__(self, spec: EncoderSpec) -> None:
        from langgraft.tokenizer.hf import load_tokenizer

        self.spec = spec
        self.tokenizer = load_tokenizer(spec.tokenizer)
        self.backend = self.tokenizer.backend_tokenizer
        self.bos, self.eos = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
        self.template = None
        if spec.kind == "chat":
            from langgraft.templates import get_template

            self.template = get_template(spec.template or "llama2")
            self.template.check(self.tokenizer)
            self._special_ids: dict[str, int] = {}
        elif self.bos is None or self.eos is None:
            raise UserError(f"{spec.tokenizer}: the tokenizer needs BOS and EOS tokens")

    def _encode_texts(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return [e.ids for e in self.backend.encode_batch_fast(texts, add_special_tokens=False)]

    def encode(self, items: list[Item]) -> EncodedBatch:
        out = EncodedBatch()
        good: list[tuple[int, int, Any]] = []
        for file_idx, line, kind, payload in items:
            if kind == BAD_FILE:
                reason, msg = payload  # type: ignore[misc]
                out.problems.append((file_idx, line, reason, msg, True))
                continue
            out.rows += 1
            try:
                if kind == BAD_ROW:
                    raise rowlib.RowError(*payload)  # type: ignore[misc]
                good.append((file_idx, line, self._parse(file_idx, kind, payload)))
            except rowlib.RowError as e:
                out.problems.append((file_idx, line, e.reason, e.message, False))
        if self.spec.kind == "chat":
            self._assemble_chat(good, out)
        else:
            self._assemble_pretrain(good, out)
        out.problems.sort(key=lambda p: (p[0], p[1]))
        return out

    def _parse(self, file_idx: int, kind: int, payload: Any) -> Any:
        if kind == JSON_ROW:
            obj = rowlib.decode_json_line(payload)
            if self.spec.kind == "chat":
                return rowlib.chat_row(obj, self.spec.allow_missing_category)
            return rowlib.pretrain_row(
                obj,
                self.spec.text_field,
                self.spec.allow_missing_category,
                self.spec.labels[file_idx],
            )
        if self.spec.kind == "chat":
            raise rowlib.RowError(
                "wrong_type", "raw text in chat mode: chat rows are jsonl with 'messages'"
            )
        return rowlib.PretrainRow("", payload, self.spec.labels[file_idx])

    def _assemble_pretrain(self, good: list[Any], out: EncodedBatch) -> None:
        texts = [r.target for _, _, r in good]
        src_rows = [i for i, (_, _, r) in enumerate(good) if r.source]
        texts += [good[i][2].source for i in src_rows]
        enc = self._encode_texts(texts)
        sources: dict[int, list[int]] = dict(zip(src_rows, enc[len(good) :], strict=True))
        flat: list[int] = []
        spans: list[tuple[int, int]] = []  # (start of target, end) in flat
        for i, (file_idx, line, row) in enumerate(good):
            target = enc[i]
            if not target:
                out.problems.append(
                    (file_idx, line, "empty_target", "target is empty after tokenization", False)
                )
                continue
            start = len(flat)
            flat.append(self.bos)
            flat.extend(sources.get(i, ()))
            t0 = len(flat)
            flat.extend(target)
            flat.append(self.eos)
            spans.append((t0, len(flat)))
            out.categories.append(row.category)
            out.lengths.append(len(flat) - start)
        out.ids = np.array(flat, dtype=np.int32)
        out.mask = np.zeros(len(flat), dtype=np.uint8)
        for a, b in spans:
            out.mask[a:b] = 1

    def _assemble_chat(self, good: list[Any], out: EncodedBatch) -> None:
        assert self.template is not None
        layouts = [self.template.parts(r.messages) for _, _, r in good]
        enc = iter(self._encode_texts([p.text for ps in layouts for p in ps if p.text is not None]))
        flat: list[int] = []
        mask: list[int] = []
        for (_, _, row), parts in zip(good, layouts, strict=True):
            start = len(flat)
            for p in parts:
                if p.text is not None:
                    ids = next(enc)
                else:
                    ids = self._special(p.special)
                flat.extend(ids)
                mask.extend([int(p.trainable)] * len(ids))
            out.categories.append(row.category)
            out.lengths.append(len(flat) - start)
        out.ids = np.array(flat, dtype=np.int32)
        out.mask = np.array(mask, dtype=np.uint8)

    def _special(self, name: str | None) -> list[int]:
        from langgraft.templates import OPTIONAL_BOS

        if name == OPTIONAL_BOS:
            return [] if self.bos is None else [self.bos]
        if name not in self._special_ids:
            self._special_ids[name] = self.template.special_id(self.tokenizer, name)  # type: ignore[union-attr]
        return [self._special_ids[name]]


# --- worker processes -------------------------------------------------------------------------

_WORKER: Encoder | None = None


def _init_worker(spec: EncoderSpec) -> None:
    global _WORKER
    _WORKER = Encoder(spec)


def _encode_in_worker(items: list[Item]) -> EncodedBatch:
    assert _WORKER is not None
    return _WORKER.encode(items)


def encode_stream(
    encoder: Encoder, batches: Iterable[list[Item]], workers: int
) -> Iterator[EncodedBatch]:
    """Encode batches in input order, in this process (workers=1) or in a pool of processes.

    At most 2 x workers batches are in flight, so memory does not grow with the input
    (`Pool.imap` would read the whole input ahead into its task queue).
    """
    if workers <= 1:
        for batch in batches:
            yield encoder.encode(batch)
        return
    import multiprocessing as mp

    # Each worker tokenizes single-threaded: N processes x all-core Rust threads oversubscribe.
    # "spawn", not fork: a forked copy of a tokenizer that has used its thread pool can deadlock.
    saved = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        pool = mp.get_context("spawn").Pool(
            workers, initializer=_init_worker, initargs=(encoder.spec,)
        )
    finally:
        if saved is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = saved
    with pool:
        pending: deque[Any] = deque()
        for batch in batches:
            pending.append(pool.apply_async(_encode_in_worker, (batch,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
