"""Checks of a `prepare` output as the trainer opens it: the on-disk contract, read back.

A prepared dataset that was damaged (a truncated or emptied Arrow shard, a manifest that is not
JSON) or that lies (labels shorter than input_ids, token ids the model has no embedding row for,
row counts that disagree with the manifest) used to surface minutes later as an IndexError inside
the embedding or a broadcast error in the collator, after the run directory had been claimed.
Everything here runs when the dataset is opened, before any model is loaded, and names the file
(and row) at fault.

Cost: one vectorised pass over each record batch's offsets and values (numpy views over the
memory-mapped shard, no Python loop over rows), about the cost of reading the data once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from langgraft import jsonio
from langgraft.errors import UserError

_LIST_COLUMNS = ("input_ids", "labels", "doc_lens")
_REPREPARE = "re-run `langgraft prepare`"


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON object read from `path`; anything else is one line naming the file (and line)."""
    if not path.is_file():
        raise UserError(f"{path}: missing; is this `langgraft prepare` output?")
    return jsonio.read_json_object(path, what, f"; the {what} is damaged: {_REPREPARE}")


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"{where}: expected a count (integer >= 0), got {value!r}; {_REPREPARE}")
    return value


def plain_name(value: Any, where: str) -> str:
    """A file or directory name inside the dataset (never a path out of it)."""
    if not isinstance(value, str) or not value or value in (".", "..") or "/" in value \
            or "\\" in value:  # fmt: skip
        raise UserError(f"{where}: {value!r} is not a file name inside the dataset; {_REPREPARE}")
    return value


def check_manifest(mf: Path, manifest: dict[str, Any]) -> None:
    """The keys the trainer reads, present and of the right type (before any shard is read)."""
    buckets = manifest.get("buckets")
    if not isinstance(buckets, list) or not buckets:
        raise UserError(f"{mf}: 'buckets' is missing or not a non-empty list; {_REPREPARE}")
    for i, b in enumerate(buckets):
        if not isinstance(b, dict):
            raise UserError(f"{mf}: buckets[{i}]: expected an object; {_REPREPARE}")
        plain_name(b.get("name"), f"{mf}: buckets[{i}].name")
        _count(b.get("sequences"), f"{mf}: buckets[{i}].sequences")
    settings = manifest.get("settings")
    length = settings.get("max_length") if isinstance(settings, dict) else None
    if _count(length, f"{mf}: settings.max_length") < 1:
        raise UserError(f"{mf}: settings.max_length: {length} must be >= 1; {_REPREPARE}")
    tok = manifest.get("tokenizer")
    if not isinstance(tok, dict) or not any(isinstance(tok.get(k), str)
                                            for k in ("fingerprint", "sha256")):  # fmt: skip
        raise UserError(f"{mf}: 'tokenizer' names no fingerprint or sha256; {_REPREPARE}")


def read_shard(path: Path) -> list[Any]:
    """The record batches of one Arrow stream shard (memory-mapped), schema checked."""
    import pyarrow as pa

    try:
        batches = list(pa.ipc.open_stream(pa.memory_map(str(path))))
    except FileNotFoundError:
        raise UserError(f"{path}: missing; {_REPREPARE}") from None
    except (pa.ArrowException, OSError) as e:
        why = str(e).strip().split("\n")[0]
        raise UserError(
            f"{path}: not a complete Arrow stream ({why}); the file is truncated or damaged: "
            f"{_REPREPARE}"
        ) from None
    schema = batches[0].schema if batches else None
    expected = {c: pa.list_(pa.int32()) for c in _LIST_COLUMNS} | {"category": pa.string()}
    for name, tp in expected.items():
        if schema is None:
            break
        i = schema.get_field_index(name)
        if i < 0 or not schema.field(i).type.equals(tp, check_metadata=False):
            got = "missing" if i < 0 else str(schema.field(i).type)
            raise UserError(f"{path}: column {name} is {got}, expected {tp}; {_REPREPARE}")
    return batches


@dataclass
class ShardStats:
    """What one pass over the rows found; summed per bucket and compared with the manifest."""

    rows: int = 0
    tokens: int = 0
    supervised: int = 0
    max_id: int = -1
    max_where: str = ""
    """file: row N holding `max_id`, for the vocabulary check's message."""

    def add(self, other: ShardStats) -> None:
        self.rows += other.rows
        self.tokens += other.tokens
        self.supervised += other.supervised
        if other.max_id > self.max_id:
            self.max_id, self.max_where = other.max_id, other.max_where


def _row_error(path: Path, first: int, bad: np.ndarray, what: str) -> UserError:
    return UserError(f"{path}: row {first + int(bad[0])}: {what}; the file was modified after "
                     f"prepare: {_REPREPARE}")  # fmt: skip


def check_batch(path: Path, batch: Any, first: int, max_length: int) -> ShardStats:
    """Lengths, document segments, label alignment and id range of one record batch, whose
    first row is row `first` of its bucket. Labels are the input id or -100 (writer.py)."""
    for name in (*_LIST_COLUMNS, "category"):
        col = batch.column(name)
        if col.null_count or (name != "category" and col.values.null_count):
            raise UserError(f"{path}: column {name} holds nulls; {_REPREPARE}")
    ids, labels, docs = (batch.column(c) for c in _LIST_COLUMNS)
    io, lo, do = (c.offsets.to_numpy() for c in (ids, labels, docs))
    lengths = np.diff(io)
    bad = np.flatnonzero(np.diff(lo) != lengths)
    if bad.size:
        k = bad[0]
        raise _row_error(path, first, bad, f"{lo[k + 1] - lo[k]} labels for {lengths[k]} "
                                           "input_ids")  # fmt: skip
    bad = np.flatnonzero((lengths < 1) | (lengths > max_length))
    if bad.size:
        raise _row_error(path, first, bad, f"{lengths[bad[0]]} tokens, outside 1..{max_length} "
                                           "(the manifest's max_length)")  # fmt: skip
    dv = docs.values.to_numpy().astype(np.int64)
    cs = np.concatenate([[0], np.cumsum(dv)])
    nonpos = np.concatenate([[0], np.cumsum(dv <= 0)])  # non-positive segments per row
    bad = np.flatnonzero(
        (cs[do[1:]] - cs[do[:-1]] != lengths) | (nonpos[do[1:]] != nonpos[do[:-1]])
    )
    if bad.size:
        raise _row_error(path, first, bad, "doc_lens do not split the row into positive "
                                           "segments summing to its length")  # fmt: skip
    iv = ids.values.to_numpy()[io[0] : io[-1]]
    lv = labels.values.to_numpy()[lo[0] : lo[-1]]
    wrong = np.flatnonzero((lv != -100) & (lv != iv))
    if wrong.size:
        bad = np.searchsorted(io - io[0], wrong[:1], side="right") - 1
        raise _row_error(path, first, bad, f"label {lv[wrong[0]]} where input_ids holds "
                                           f"{iv[wrong[0]]} (a label is the id or -100)")  # fmt: skip
    stats = ShardStats(rows=len(lengths), tokens=int(lengths.sum()),
                       supervised=int(np.count_nonzero(lv != -100)))  # fmt: skip
    if iv.size:
        lo_k, hi_k = int(iv.argmin()), int(iv.argmax())
        if iv[lo_k] < 0:
            bad = np.searchsorted(io - io[0], [lo_k], side="right") - 1
            raise _row_error(path, first, bad, f"negative token id {iv[lo_k]}")
        row = first + int(np.searchsorted(io - io[0], hi_k, side="right") - 1)
        stats.max_id, stats.max_where = int(iv[hi_k]), f"{path}: row {row}"
    return stats


def checked_shard(path: Path, first: int, max_length: int) -> tuple[list[Any], ShardStats]:
    """The non-empty record batches of one shard whose first row is row `first` of its bucket,
    and what `check_batch` found in them."""
    batches = [b for b in read_shard(path) if b.num_rows]
    stats = ShardStats()
    for b in batches:
        stats.add(check_batch(path, b, first + stats.rows, max_length))
    return batches, stats


def check_counts(where: str, found: ShardStats, meta: dict[str, Any], keys: dict[str, str]) -> None:
    """The manifest's counts (`keys`: stats attribute -> manifest key) against the data."""
    for attr, key in keys.items():
        if key not in meta:
            continue
        said = _count(meta[key], f"{where}: {key}")
        if said != getattr(found, attr):
            raise UserError(
                f"{where}: the data holds {getattr(found, attr)} {attr}, the manifest says "
                f"{said}; the directory was modified after prepare: {_REPREPARE}"
            )


BUCKET_COUNTS = {"rows": "sequences", "tokens": "tokens", "supervised": "supervised"}
"""A manifest bucket entry's counts (written by data/prepare.py), by `ShardStats` attribute."""


def check_totals(mf: Path, found: ShardStats, counts: Any) -> None:
    """The manifest's dataset totals (counts.sequences, counts.tokens.out/supervised_out)."""
    if not isinstance(counts, dict):
        return
    tokens = counts.get("tokens") if isinstance(counts.get("tokens"), dict) else {}
    said = {"sequences": counts.get("sequences"), "tokens.out": tokens.get("out"),
            "tokens.supervised_out": tokens.get("supervised_out")}  # fmt: skip
    keys = {"rows": "sequences", "tokens": "tokens.out", "supervised": "tokens.supervised_out"}
    check_counts(f"{mf}: counts", found, {k: v for k, v in said.items() if v is not None}, keys)
