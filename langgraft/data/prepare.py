"""The prepare pipeline: read -> tokenize (N workers) -> pack per category -> bins -> buckets.

    langgraft prepare pretrain --input zh=../shared/data/corpus/zh/hongloumeng.txt \\
        en=../shared/data/corpus/en --tokenizer ../shared/data/models/stories260K/tok512.model \\
        --max-length 512 --num-bins 2 --out /tmp/prepared

One pass over the input streams rows through the tokenizer into one best-fit packer per
category; packed sequences go to per-category stores in a scratch directory. A second pass
writes each bucket in its seeded order. Memory holds a few batches, the open sequences and a few
integers per packed sequence, whatever the corpus size. Everything is written into a scratch
directory that is renamed to --out only on success (a bad row or Ctrl-C leaves nothing).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langgraft.config import to_dict
from langgraft.data import rows as rowlib
from langgraft.data.bins import SequenceStore, plan_buckets
from langgraft.data.config import ChatPrepareConfig, PrepareConfig
from langgraft.data.manifest import (
    Accounting,
    CategoryCounts,
    build_manifest,
    check_accounting,
    relative_files,
)
from langgraft.data.pack import BestFitPacker
from langgraft.data.sources import InputFile, Item, discover_inputs, read_items
from langgraft.data.tokenize import (
    Encoder,
    EncoderSpec,
    straddle_text,
    tokenizer_file,
    tokenizer_fingerprint,
    tokenizer_hash,
)
from langgraft.data.workers import encode_stream
from langgraft.data.writer import BucketWriter
from langgraft.errors import UserError
from langgraft.fsutil import atomic_output_dir

log = logging.getLogger(__name__)

BATCH_ROWS = 1024
BATCH_CHARS = 1 << 20


@dataclass
class PrepareResult:
    manifest: dict[str, Any]
    seconds: float
    rows_per_s: float
    tokens_per_s: float


def batch_items(
    items: Iterable[Item], max_rows: int = BATCH_ROWS, max_chars: int = BATCH_CHARS
) -> Iterator[list[Item]]:
    """Group the row stream into batches of at most max_rows rows / about max_chars characters.

    The first batch is 16x smaller: the main process encodes it alone (checking the tokenizer
    backends) while the worker processes start, so it should not keep them waiting.
    """
    batch: list[Item] = []
    chars = 0
    rows_cap, chars_cap = max(1, max_rows // 16), max(1, max_chars // 16)
    for item in items:
        batch.append(item)
        payload = item[3]
        chars += len(payload) if isinstance(payload, str | bytes) else 0
        if len(batch) >= rows_cap or chars >= chars_cap:
            yield batch
            batch, chars = [], 0
            rows_cap, chars_cap = max_rows, max_chars
    if batch:
        yield batch


def _where(files: list[InputFile], file_idx: int, line: int) -> str:
    return files[file_idx].display + (f":{line}" if line else "")


class _Packing:
    """One packer and one on-disk store per category, created on first sight."""

    def __init__(self, scratch: Path, cfg: PrepareConfig) -> None:
        self.scratch, self.cfg = scratch, cfg
        self.stores: dict[str, SequenceStore] = {}
        self.packers: dict[str, BestFitPacker] = {}

    def packer(self, category: str) -> BestFitPacker:
        if category not in self.packers:
            store = SequenceStore(self.scratch / f"cat-{len(self.stores):05d}")
            self.stores[category] = store
            self.packers[category] = BestFitPacker(
                self.cfg.max_length, store.append, self.cfg.pack_open_sequences
            )
        return self.packers[category]

    def finish(self) -> None:
        for cat in self.packers:
            self.packers[cat].flush()
            self.stores[cat].finish()

    def close(self) -> None:
        for store in self.stores.values():
            store.close()


def _progress(cfg: PrepareConfig, total: int) -> Any:
    from tqdm import tqdm

    # disable=None: draw only on a terminal, so logs of batch jobs stay clean.
    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        desc=f"prepare {cfg.kind}",
        disable=None if cfg.progress else True,
        dynamic_ncols=True,
    )


def _pack_long(
    files: list[InputFile],
    encoder: Encoder,
    packing: _Packing,
    acc: Accounting,
    category: str,
    row: tuple[str, str, tuple[int, int]],
) -> tuple[int, int] | None:
    """Stream a long row into its packer; (tokens, trained), or None if rejected."""
    source, target, (file_idx, line) = row
    where = _where(files, file_idx, line)
    got = encoder.long_document(source, target)
    if got is None:
        acc.reject(where, "empty_target", "target is empty after tokenization", False)
        return None
    pieces, at = got
    if at.straddled:
        _straddled(acc, where, straddle_text(rowlib.PretrainRow(source, target, category), at))
    return packing.packer(category).add_pieces(pieces)


def _straddled(acc: Accounting, where: str, what: str) -> None:
    acc.boundary_inside_token += 1
    if acc.boundary_example is None:
        acc.boundary_example = f"{where}: {what}"


def _read_and_pack(
    cfg: PrepareConfig, files: list[InputFile], encoder: Encoder, packing: _Packing, acc: Accounting
) -> tuple[int, float]:
    """Stream every row through the tokenizer into the packers; returns (tokens, seconds)."""
    total_bytes = sum(f.path.stat().st_size for f in files)
    start = time.perf_counter()
    tokens = 0
    last_postfix = 0.0
    with _progress(cfg, total_bytes) as bar:
        items = read_items(files, whole_file_txt=cfg.txt_document == "file", progress=bar)
        stream = encode_stream(encoder, batch_items(items), cfg.workers)
        with contextlib.closing(stream):  # stops worker processes if a bad row ends the run
            for enc in stream:
                acc.rows_in += enc.rows
                for file_idx, line, reason, message, file_level in enc.problems:
                    where = _where(files, file_idx, line)
                    if cfg.on_error == "fail" and reason not in rowlib.FILTERED_REASONS:
                        raise UserError(
                            f"{where}: {message}; fix the input or pass --on-error skip"
                        )
                    acc.reject(where, reason, message, file_level)
                for file_idx, line, what in enc.straddled:
                    _straddled(acc, _where(files, file_idx, line), what)
                offset = 0
                continued = enc.continued or [False] * len(enc.lengths)
                for k, (category, n, trained, cont) in enumerate(
                    zip(enc.categories, enc.lengths, enc.trained, continued, strict=True)
                ):
                    if k in enc.long:
                        got = _pack_long(files, encoder, packing, acc, category, enc.long[k])
                        if got is None:
                            continue
                        n, trained = got
                        tokens += n
                    else:
                        packing.packer(category).add(
                            enc.ids[offset : offset + n], enc.mask[offset : offset + n], trained
                        )
                        offset += n
                    counts = acc.categories.get(category)
                    if counts is None:
                        counts = acc.categories[category] = CategoryCounts()
                    counts.rows += 0 if cont else 1  # a split conversation is still one row
                    acc.extra_pieces += int(cont)
                    counts.tokens_in += n
                    counts.target_in += trained
                tokens += offset
                now = time.perf_counter()
                if now - last_postfix > 0.5:
                    dt = max(now - start, 1e-9)
                    bar.set_postfix_str(f"{acc.rows_in / dt:,.0f} rows/s, {tokens / dt:,.0f} tok/s")
                    last_postfix = now
    return tokens, time.perf_counter() - start


def _write_buckets(
    cfg: PrepareConfig, out: Path, packing: _Packing, template: str | None
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, int]]], list[Path]]:
    cats = sorted(packing.stores)
    stores = [packing.stores[c] for c in cats]
    plan = plan_buckets({c: len(packing.stores[c]) for c in cats}, cfg.num_bins, cfg.seed)
    for k, members in enumerate(plan.buckets):
        if len(members) == 0:
            n = sum(len(s) for s in stores)
            raise UserError(
                f"--num-bins {cfg.num_bins}: bucket {k} would be empty (the input packs into "
                f"{n} sequences); use fewer bins"
            )
    for c in cats:
        if len(packing.stores[c]) < cfg.num_bins:
            log.warning(
                "category %r packs into %d sequences, fewer than --num-bins %d: some of its bins "
                "are empty",
                c,
                len(packing.stores[c]),
                cfg.num_bins,
            )
    width = max(2, len(str(cfg.num_bins - 1)))
    names = [f"bucket_{k:0{width}d}" for k in range(cfg.num_bins)]
    bins = {
        c: [
            {
                "sequences": len(idx),
                "tokens": sum(packing.stores[c].length(int(i)) for i in idx),
                "supervised": sum(packing.stores[c].supervised[int(i)] for i in idx),
            }
            for idx in plan.bins[c]
        ]
        for c in cats
    }
    if cfg.jsonl:
        (out / "jsonl").mkdir()
    buckets, written = [], []
    for k, (name, members) in enumerate(zip(names, plan.buckets, strict=True)):
        desc = f"langgraft prepare {cfg.kind}: {name} ({k + 1} of {cfg.num_bins}); see ../manifest.json"
        if template:
            desc += f"; chat template {template}"
        mirror = out / "jsonl" / f"{name}.jsonl" if cfg.jsonl else None
        n_tokens = sum(stores[ci].length(si) for ci, si in members.tolist())
        writer = BucketWriter(out / name, len(members), n_tokens, desc, jsonl=mirror)
        per_cat: dict[str, int] = {}
        supervised = 0
        for ci, si in members.tolist():
            ids, mask, doc_lens = stores[ci].read(si)
            writer.write(ids, mask, doc_lens, cats[ci])
            per_cat[cats[ci]] = per_cat.get(cats[ci], 0) + 1
            supervised += stores[ci].supervised[si]
        shards = writer.close()
        written += [out / name / s for s in shards] + [out / name / "state.json"]
        written.append(out / name / "dataset_info.json")
        if mirror is not None:
            written.append(mirror)
        buckets.append(
            {
                "name": name,
                "sequences": len(members),
                "tokens": n_tokens,
                "supervised": supervised,
                "categories": dict(sorted(per_cat.items())),
            }
        )
    (out / "dataset_dict.json").write_text(json.dumps({"splits": names}))
    written.append(out / "dataset_dict.json")
    return buckets, bins, written


def prepare(cfg: PrepareConfig) -> PrepareResult:
    """Run `langgraft prepare pretrain|chat` with a resolved config; see the module docstring."""
    cfg.validate()
    files = discover_inputs(cfg.input)
    if cfg.kind == "chat" and any(f.fmt == "txt" for f in files):
        bad = next(f for f in files if f.fmt == "txt")
        raise UserError(f"{bad.display}: chat input must be jsonl with 'messages' rows")
    template = cfg.template if isinstance(cfg, ChatPrepareConfig) else None
    spec = EncoderSpec(
        tokenizer=str(cfg.tokenizer),
        kind=cfg.kind,
        text_field=cfg.text_field,
        allow_missing_category=cfg.allow_missing_category,
        labels=tuple(f.label for f in files),
        template=template,
        backend=cfg.tokenizer_backend,
        max_length=cfg.max_length,
    )
    encoder = Encoder(spec)
    tok_info = {
        "path": str(cfg.tokenizer),
        "file": tokenizer_file(cfg.tokenizer).name,
        "sha256": tokenizer_hash(cfg.tokenizer),
        "fingerprint": tokenizer_fingerprint(encoder.tokenizer),
        "vocab_size": len(encoder.tokenizer),
        "bos_id": encoder.bos,
        "eos_id": encoder.eos,
    }
    template_info = None
    if encoder.template is not None:
        template_info = {
            "name": encoder.template.name,
            "stop_token_ids": encoder.template.stop_token_ids(encoder.tokenizer),
        }
    acc = Accounting()
    with atomic_output_dir(
        cfg.out, cfg.overwrite, inputs=[f.path for f in files] + [cfg.tokenizer]
    ) as out:
        scratch = out / ".scratch"
        packing = _Packing(scratch, cfg)
        try:
            tokens, seconds = _read_and_pack(cfg, files, encoder, packing, acc)
            packing.finish()
            stats = {c: p.stats for c, p in packing.packers.items()}
            check_accounting(acc, stats, sum(f.rows for f in files))
            if not packing.stores:
                counts = {**acc.rejected, **{f"{k} (files)": v for k, v in acc.bad_files.items()}}
                raise UserError(
                    "no rows left to pack (rejected: "
                    + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                    + "); check the input"
                )
            buckets, bins, written = _write_buckets(cfg, out, packing, template)
        finally:
            packing.close()
            shutil.rmtree(scratch, ignore_errors=True)
        inputs = [
            {
                "path": f.display,
                "label": f.label,
                "format": f.fmt + (".gz" if f.gz else ""),
                "bytes": f.bytes,
                "sha256": f.sha256,
                "rows": f.rows,
            }
            for f in files
        ]
        manifest = build_manifest(
            kind=cfg.kind,
            settings=cfg.settings(),
            tokenizer=tok_info,
            template=template_info,
            inputs=inputs,
            acc=acc,
            stats=stats,
            bins=bins,
            buckets=buckets,
            files=relative_files(out, written),
            max_length=cfg.max_length,
        )
        (out / "manifest.json").write_text(
            json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
        )
        (out / "config.json").write_text(
            json.dumps(to_dict(cfg), indent=2, ensure_ascii=False) + "\n"
        )
    log.info("encoded with %s", encoder.text.name)
    if acc.boundary_inside_token:
        log.warning(
            "%d row(s) have a token that begins in the source and ends in the target; it is not "
            "trained, so that part of the target is not learned (manifest: "
            "counts.rows.boundary_inside_token). First: %s. End the source where a token ends "
            "(e.g. move its trailing space to the start of the target)",
            acc.boundary_inside_token,
            acc.boundary_example,
        )
    rejected = manifest["counts"]["rows"]["rejected"]
    if rejected:
        log.warning(
            "rejected rows: %s (first: %s)",
            ", ".join(f"{k} {v}" for k, v in rejected.items()),
            acc.examples[0] if acc.examples else "-",
        )
    return PrepareResult(
        manifest=manifest,
        seconds=seconds,
        rows_per_s=acc.rows_in / max(seconds, 1e-9),
        tokens_per_s=tokens / max(seconds, 1e-9),
    )
