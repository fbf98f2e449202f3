"""The periodic evaluation hook: held-out loss per category, and optionally the multiple-choice
probe from langgraft.eval, so forgetting of the original language shows up during training."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch

from langgraft.distributed.dims import ParallelDims
from langgraft.distributed.parallel import gather_objects
from langgraft.train.data import PreparedDataset, Row
from langgraft.train.loss import MicroBatch, add_totals, category_totals, forward_nll, row_sums
from langgraft.train.recipe import EvalConfig

log = logging.getLogger(__name__)


def heldout_loss(
    model: Any,
    dataset: PreparedDataset,
    max_rows: int,
    device: torch.device,
    collate: Callable[[list[Row]], MicroBatch],
    batch_size: int,
    autocast: Any,
    dims: ParallelDims | None = None,
) -> dict[str, tuple[float, int]]:
    """{category: (summed nll, supervised tokens)} over the first `max_rows` rows (bucket order),
    collated and run exactly as training does (`collate` is the trainer's, `autocast` its
    precision), so a flash-attention run gets packed rows in bf16 here too.

    The rows are split over the data-parallel ranks (every dp-th row; the tp ranks of a group
    share theirs) and the sums gathered: each rank scores 1/dp of them instead of all. A sharded
    forward is collective, so every rank runs the same number of batches: a rank whose share
    ends early repeats a row and drops its result."""
    rows = []
    for b in dataset.buckets:
        rows += [b.row(i) for i in range(min(b.num_rows, max_rows - len(rows)))]
    dp, dp_rank = (dims.dp, dims.dp_rank) if dims is not None else (1, 0)
    mine = rows[dp_rank::dp]
    batches = math.ceil(math.ceil(len(rows) / dp) / batch_size)  # the largest share's
    sums: dict[str, tuple[float, int]] = {}
    model.eval()
    with torch.no_grad():
        for i in range(batches):
            part = mine[i * batch_size : (i + 1) * batch_size]
            mb = collate(part or rows[:1])
            mbd = mb.to(device)
            with autocast():
                nll = forward_nll(model, mbd)
            if part:
                add_totals(sums, category_totals(row_sums(nll, mbd), mb))
    if dp > 1:
        gathered, sums = gather_objects(sums, dims.dp_group), {}
        for other in gathered:
            add_totals(sums, other)
    return sums


def evaluate(
    model: Any,
    tokenizer: Any,
    cfg: EvalConfig,
    datasets: list[PreparedDataset],
    device: torch.device,
    collate: Callable[[list[Row]], MicroBatch],
    batch_size: int,
    autocast: Any,
    dims: ParallelDims | None = None,
) -> dict[str, float]:
    out: dict[str, float] = {}
    for ds in datasets:
        sums = heldout_loss(model, ds, cfg.max_rows, device, collate, batch_size, autocast, dims)
        name = ds.path.name
        for c, (s, n) in sorted(sums.items()):
            out[f"eval/{name}/loss/{c}"] = s / max(n, 1)
        total_s, total_n = sum(s for s, _ in sums.values()), sum(n for _, n in sums.values())
        out[f"eval/{name}/loss"] = total_s / max(total_n, 1)
    if cfg.mc_task is not None and cfg.mc_data is not None:
        from langgraft import eval as mc

        task = mc.load_task(cfg.mc_task, cfg.mc_data)
        with autocast():  # flash kernels only run in fp16/bf16
            probe = mc.probe_mc(model, tokenizer, task, limit=cfg.mc_limit)
        for k, v in probe.items():
            out[f"eval/{cfg.mc_task}/{k}"] = v
    return out
