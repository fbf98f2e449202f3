"""Reading `prepare` output for training: bucket order, seeded shuffle within a bucket, exact resume.

Colossal-LLaMA-2 concatenates its buckets and shuffles globally, so they are never read in turn.
(The buckets are random, category-balanced splits from `prepare --num-bins`, not a curriculum.)
Here a stage's pass over its data is bucket 0, then bucket 1, ...; each bucket's pool is the
rows of that bucket of every source (weighted) shuffled with a seed derived from
(seed, stage, epoch, bucket). A source with fewer buckets than the stage is spread evenly over
the stage's buckets (a one-bucket English replay source appears in every bucket, also in the last
one, just before the export). The order is a pure function of those numbers, so the sampler
state is just (epoch, cursor) and a resume continues with the very next row, without replaying
or skipping batches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from langgraft.errors import UserError
from langgraft.train.datacheck import (
    BUCKET_COUNTS,
    ShardStats,
    check_counts,
    check_manifest,
    check_totals,
    checked_shard,
    plain_name,
    read_json_object,
)

log = logging.getLogger(__name__)

FORMAT = "langgraft-prepared/1"


@dataclass
class Row:
    input_ids: np.ndarray
    labels: np.ndarray
    doc_lens: np.ndarray
    category: str


class _ListColumn:
    """A list<int32> column as (offsets, values) numpy views over memory-mapped Arrow batches."""

    def __init__(self, arrays: list[Any]) -> None:
        self.parts = [(a.offsets.to_numpy(), a.values.to_numpy()) for a in arrays]

    def get(self, part: int, i: int) -> np.ndarray:
        offsets, values = self.parts[part]
        return values[offsets[i] : offsets[i + 1]]


class Bucket:
    """One bucket directory (Arrow stream shards written by langgraft.data.writer), checked as
    it is opened (train/datacheck.py): `stats` holds its rows, tokens, supervised tokens and
    largest token id."""

    def __init__(self, directory: Path, max_length: int) -> None:
        state_path = directory / "state.json"
        files = read_json_object(state_path, "bucket state").get("_data_files")
        if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
            raise UserError(f"{state_path}: '_data_files' is not a list of files; re-run "
                            "`langgraft prepare`")  # fmt: skip
        batches = []
        self.stats = ShardStats()
        for i, f in enumerate(files):
            path = directory / plain_name(f.get("filename"), f"{state_path}: _data_files[{i}]")
            shard, stats = checked_shard(path, self.stats.rows, max_length)
            batches += shard
            self.stats.add(stats)
        self.starts = np.cumsum([0] + [b.num_rows for b in batches])
        self.num_rows = int(self.starts[-1])
        self.ids = _ListColumn([b.column("input_ids") for b in batches])
        self.labels = _ListColumn([b.column("labels") for b in batches])
        self.doc_lens = _ListColumn([b.column("doc_lens") for b in batches])
        self.categories = [b.column("category").to_pylist() for b in batches]
        self.lengths = np.concatenate(
            [np.diff(p[0]) for p in self.ids.parts] or [np.zeros(0, np.int64)]
        )

    def row(self, i: int) -> Row:
        part = int(np.searchsorted(self.starts, i, side="right") - 1)
        j = i - int(self.starts[part])
        return Row(
            self.ids.get(part, j),
            self.labels.get(part, j),
            self.doc_lens.get(part, j),
            self.categories[part][j],
        )


class PreparedDataset:
    """A `prepare` output directory: manifest.json plus bucket_XX/ Arrow datasets."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        mf = self.path / "manifest.json"
        if not mf.is_file():
            raise UserError(f"{self.path}: no manifest.json; is this `langgraft prepare` output?")
        self.manifest = read_json_object(mf, "manifest")
        if self.manifest.get("format") != FORMAT:
            raise UserError(f"{mf}: format {self.manifest.get('format')!r}, expected {FORMAT!r}")
        check_manifest(mf, self.manifest)
        self.buckets = []
        total = ShardStats()
        for meta in self.manifest["buckets"]:
            bucket = Bucket(self.path / meta["name"], self.max_length)
            check_counts(f"{self.path / meta['name']}", bucket.stats, meta, BUCKET_COUNTS)
            total.add(bucket.stats)
            self.buckets.append(bucket)
        check_totals(mf, total, self.manifest.get("counts"))
        self.stats = total

    def check_vocabulary(self, rows: int) -> None:
        """Refuse token ids the model has no embedding row for (an IndexError mid-step later)."""
        if self.stats.max_id >= rows:
            raise UserError(
                f"{self.stats.max_where}: token id {self.stats.max_id}, but the model's embedding "
                f"has {rows} rows (ids 0..{rows - 1}); the data was prepared with a larger "
                "tokenizer or modified: re-run `langgraft prepare` with the model's tokenizer"
            )

    @property
    def max_length(self) -> int:
        return int(self.manifest["settings"]["max_length"])

    def check_tokenizer(self, identity: dict[str, str], tokenizer_path: str | Path) -> None:
        """Refuse data tokenized differently from the model's tokenizer. Compared by what the
        tokenizers encode (`tokenizer_fingerprint`), so data prepared from a bare
        tokenizer.model trains a model directory holding the same tokenizer as tokenizer.json;
        manifests written before fingerprints fall back to the file's sha256."""
        info = self.manifest["tokenizer"]
        key = "fingerprint" if "fingerprint" in info else "sha256"
        if info[key] != identity[key]:
            raise UserError(
                f"{self.path}: prepared with tokenizer {info['path']} ({key} {info[key][:12]}), "
                f"but the model's tokenizer {tokenizer_path} encodes differently ({key} "
                f"{identity[key][:12]}); re-run `langgraft prepare` with it"
            )


def check_recipe_data(
    recipe: Any, vocab_rows: int, where: str = "recipe"
) -> dict[str, PreparedDataset]:
    """Open and check every prepared dataset of the recipe (stages and eval) and its token ids
    against the model's `vocab_rows` embedding rows: run before the model is loaded and the run
    directory is claimed, so damaged or lying data costs seconds and leaves nothing behind.
    Returns the opened datasets by path, for the trainer (so no shard is read twice)."""
    places = [(f"stages[{i}].data[{j}].path", d.path)
              for i, s in enumerate(recipe.stages) for j, d in enumerate(s.data)]  # fmt: skip
    places += [(f"eval.data[{k}]", p) for k, p in enumerate(recipe.eval.data)]
    opened: dict[str, PreparedDataset] = {}
    for key, path in places:
        if str(path) in opened:
            continue
        try:
            opened[str(path)] = PreparedDataset(path)
            opened[str(path)].check_vocabulary(vocab_rows)
        except UserError as e:
            raise UserError(f"{where}: {key}: {e}") from None
    return opened


def tokenizer_identity(tokenizer: Any, path: str | Path) -> dict[str, str]:
    """What `PreparedDataset.check_tokenizer` compares: the fingerprint (and, for manifests
    that predate it, the defining file's sha256)."""
    from langgraft.data.tokenize import tokenizer_fingerprint, tokenizer_hash

    return {"fingerprint": tokenizer_fingerprint(tokenizer), "sha256": tokenizer_hash(path)}


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(key)))


class StageSampler:
    """The row order of one stage over its weighted sources, bucket by bucket, with a cursor.

    A pass (epoch) is the concatenation of the shuffled bucket pools; optimizer steps take
    `rows_per_step` consecutive rows (the global batch, split across data-parallel ranks), and
    the tail of a pass that does not fill a step is dropped.
    """

    def __init__(
        self,
        sources: list[PreparedDataset],
        weights: list[float],
        seed: int,
        stage: int,
        rows_per_step: int,
    ) -> None:
        self.sources, self.weights = sources, weights
        self.seed, self.stage, self.rows_per_step = seed, stage, rows_per_step
        self.num_buckets = max(len(s.buckets) for s in sources)
        self.epoch, self.cursor = 0, 0
        self._order_epoch: int | None = None
        self._order: np.ndarray = np.zeros((0, 3), np.int64)
        self._bucket_ends: np.ndarray = np.zeros(0, np.int64)
        first = self.order(0)
        self.rows_per_epoch = len(first)
        self.tokens_per_epoch = int(sum(self._length(r) for r in first))

    def _length(self, ref: np.ndarray) -> int:
        src, k, i = (int(x) for x in ref)
        return int(self.sources[src].buckets[k].lengths[i])

    def _pool(self, epoch: int, k: int) -> np.ndarray:
        """Stage bucket k: from every source, its share of the source bucket that covers k.

        A source with b <= K buckets (K = the stage's) spreads each of its buckets j evenly over
        the stage buckets that map to it, [ceil(jK/b), ceil((j+1)K/b)); so a one-bucket replay
        source is mixed into every stage bucket, not front-loaded into bucket 0, and a source's
        own bucket order is kept. Which rows go to which share is reshuffled
        every epoch."""
        K = self.num_buckets
        parts = []
        for si, (src, w) in enumerate(zip(self.sources, self.weights, strict=True)):
            b = len(src.buckets)
            j = k * b // K
            first, last = -(-j * K // b), -(-(j + 1) * K // b)
            n = src.buckets[j].num_rows
            rows = np.tile(np.arange(n), int(w))
            frac = w - int(w)
            if frac > 0:  # a seeded subset, fixed across epochs so replay sees the same rows
                pick = _rng(self.seed, self.stage, 1, si, j).permutation(n)[: round(frac * n)]
                rows = np.concatenate([rows, np.sort(pick)])
            if last - first > 1:
                rows = rows[_rng(self.seed, self.stage, 2, epoch, si, j).permutation(len(rows))]
                rows = np.array_split(rows, last - first)[k - first]
            parts.append(np.stack([np.full(len(rows), si), np.full(len(rows), j), rows], 1))
        pool = np.concatenate(parts) if parts else np.zeros((0, 3), np.int64)
        return pool[_rng(self.seed, self.stage, 0, epoch, k).permutation(len(pool))]

    def order(self, epoch: int) -> np.ndarray:
        """(source, bucket, row) triples of one pass, bucket 0 first."""
        if self._order_epoch != epoch:
            pools = [self._pool(epoch, k) for k in range(self.num_buckets)]
            self._order = np.concatenate(pools).astype(np.int64)
            self._bucket_ends = np.cumsum([len(p) for p in pools])
            self._order_epoch = epoch
        return self._order

    @property
    def steps_per_epoch(self) -> int:
        return self.rows_per_epoch // self.rows_per_step

    def next_step_rows(self, rank: int = 0, world: int = 1) -> list[tuple[Row, int]]:
        """This rank's rows of the next optimizer step as (row, bucket); advances the cursor.

        `rows_per_step` is the global batch. Under data parallelism every rank walks the same
        order and takes a contiguous share: rank r gets rows [r*n, (r+1)*n) of the step's global
        rows, n = rows_per_step / world. Contiguous (not strided) so that rank r's micro-batches
        are exactly micro-batches r*A ... (r+1)*A-1 of one process with world*A accumulation
        steps: the same rows, the same padding, the same step."""
        if self.cursor + self.rows_per_step > self.rows_per_epoch:
            self.epoch, self.cursor = self.epoch + 1, 0
        order = self.order(self.epoch)
        share = self.rows_per_step // world
        start = self.cursor + rank * share
        refs = order[start : start + share]
        self.cursor += self.rows_per_step
        return [(self.sources[s].buckets[k].row(int(i)), int(k)) for s, k, i in refs.tolist()]

    def state_dict(self) -> dict[str, Any]:
        self.order(self.epoch)
        starts = np.concatenate([[0], self._bucket_ends[:-1]])
        per_bucket = np.clip(self.cursor - starts, 0, self._bucket_ends - starts)
        return {
            "epoch": self.epoch,
            "cursor": self.cursor,
            "rows_per_epoch": self.rows_per_epoch,
            "consumed_per_bucket": [int(x) for x in per_bucket],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["rows_per_epoch"] != self.rows_per_epoch:
            raise UserError(
                f"cannot resume: the stage's data now has {self.rows_per_epoch} rows per pass, "
                f"the checkpoint was taken with {state['rows_per_epoch']}; the data changed"
            )
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
