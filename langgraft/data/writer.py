"""Write one bucket as a `datasets` Arrow dataset directory (and optionally a jsonl mirror).

The files are the ones `Dataset.save_to_disk` writes (`data-XXXXX-of-YYYYY.arrow` in Arrow's
streaming format, `dataset_info.json`, `state.json`), written here directly with pyarrow so the
output is streamed (never a whole bucket in memory) and byte-for-byte reproducible: the
fingerprint in state.json is derived from the content, not random.

Columns (one row = one packed sequence, at most max_length tokens, not padded):
- `input_ids`  list<int32>
- `labels`     list<int32>: the token id where trained, -100 elsewhere (aligned with input_ids;
  the model shifts). The first token of every document segment has label -100.
- `doc_lens`   list<int32>: lengths of the document segments, in order; they sum to the sequence
  length. Positions restart at 0 in each segment (`position_ids_from_doc_lens`), and attention
  must not cross segments.
- `category`   string
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from langgraft.fsutil import sha256_file

COLUMNS = ("input_ids", "labels", "doc_lens", "category")
SHARD_BYTES = 512 << 20  # datasets' default max_shard_size
BATCH_ROWS = 256


def features() -> Any:
    import datasets

    ints = datasets.List(datasets.Value("int32"))
    return datasets.Features(
        {"input_ids": ints, "labels": ints, "doc_lens": ints, "category": datasets.Value("string")}
    )


def position_ids_from_doc_lens(doc_lens: np.ndarray | list[int]) -> np.ndarray:
    """Position ids that restart at 0 at every document segment, e.g. [3, 2] -> [0 1 2 0 1]."""
    lens = np.asarray(doc_lens, dtype=np.int64)
    total = int(lens.sum())
    starts = np.repeat(np.cumsum(lens) - lens, lens)
    return (np.arange(total, dtype=np.int64) - starts).astype(np.int32)


def _list_array(chunks: list[np.ndarray]) -> Any:
    import pyarrow as pa

    offsets = np.zeros(len(chunks) + 1, dtype=np.int32)
    np.cumsum([len(c) for c in chunks], out=offsets[1:])
    values = (
        np.concatenate(chunks).astype(np.int32, copy=False) if chunks else np.zeros(0, np.int32)
    )
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=pa.int32()))


class BucketWriter:
    """Streams rows into `directory` (Arrow shards) and `jsonl` (mirror), in the given order."""

    def __init__(
        self,
        directory: Path,
        num_rows: int,
        num_tokens: int,
        description: str,
        jsonl: Path | None = None,
        shard_bytes: int = SHARD_BYTES,
    ) -> None:
        import pyarrow as pa

        self._pa = pa
        self.directory = directory
        directory.mkdir(parents=True)
        self.features = features()
        self.schema = self.features.arrow_schema
        self.description = description
        # ~8 bytes per token (input_ids + labels) decides the shard count; rows are spread evenly.
        n_shards = max(1, math.ceil(num_tokens * 8 / shard_bytes))
        n_shards = min(n_shards, max(1, num_rows))
        sizes = [len(a) for a in np.array_split(np.arange(num_rows), n_shards)]
        self.shard_names = [f"data-{i:05d}-of-{n_shards:05d}.arrow" for i in range(n_shards)]
        self._shard_rows = sizes
        self._shard = -1
        self._in_shard = 0
        self._writer: Any = None
        self._sink: Any = None
        self._rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, str]] = []
        self._jsonl = open(jsonl, "w", encoding="utf-8") if jsonl else None  # noqa: SIM115
        self.rows = 0
        self._next_shard()

    def _next_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
        self._shard += 1
        self._in_shard = 0
        if self._shard < len(self.shard_names):
            path = self.directory / self.shard_names[self._shard]
            self._sink = self._pa.OSFile(str(path), "wb")
            self._writer = self._pa.ipc.new_stream(self._sink, self.schema)
        else:
            self._writer = self._sink = None

    def write(self, ids: np.ndarray, mask: np.ndarray, doc_lens: np.ndarray, category: str) -> None:
        labels = np.where(mask.astype(bool), ids, np.int32(-100)).astype(np.int32)
        self._rows.append((ids, labels, doc_lens, category))
        if self._jsonl is not None:
            row = {
                "input_ids": ids.tolist(),
                "labels": labels.tolist(),
                "doc_lens": doc_lens.tolist(),
                "category": category,
            }
            self._jsonl.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
        self.rows += 1
        self._in_shard += 1
        if self._in_shard == self._shard_rows[self._shard] or len(self._rows) >= BATCH_ROWS:
            self._flush_batch()
            if self._in_shard == self._shard_rows[self._shard]:
                self._next_shard()

    def _flush_batch(self) -> None:
        if not self._rows:
            return
        pa = self._pa
        cols = list(zip(*self._rows, strict=True))
        batch = pa.record_batch(
            [
                _list_array(list(cols[0])),
                _list_array(list(cols[1])),
                _list_array(list(cols[2])),
                pa.array(list(cols[3]), type=pa.string()),
            ],
            schema=self.schema,
        )
        self._writer.write_batch(batch)
        self._rows.clear()

    def close(self) -> dict[str, str]:
        """Finish the files; returns {relative file name: sha256} of the Arrow shards."""
        self._flush_batch()
        while self._writer is not None:  # an empty bucket still gets a (schema-only) shard
            self._next_shard()
        if self._jsonl is not None:
            self._jsonl.close()
        # Streamed: a whole shard read into memory would make peak memory grow with the corpus.
        hashes = {name: sha256_file(self.directory / name) for name in self.shard_names}
        fingerprint = hashlib.sha256("".join(hashes.values()).encode()).hexdigest()[:16]
        state = {
            "_data_files": [{"filename": n} for n in self.shard_names],
            "_fingerprint": fingerprint,
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
            "_split": None,
        }
        (self.directory / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
        info = {
            "citation": "",
            "description": self.description,
            "features": self.features.to_dict(),
            "homepage": "",
            "license": "",
        }
        (self.directory / "dataset_info.json").write_text(json.dumps(info, indent=2))
        return hashes
