"""One optimizer step's forward and backward: the loss token-weighted over every micro-batch of
the step and every data-parallel rank (see `accumulate`)."""

from __future__ import annotations

from typing import Any

import torch

from langgraft.distributed.dims import ParallelDims
from langgraft.distributed.parallel import gather_objects, sum_float, sum_int
from langgraft.distributed.parallelize import grad_sync
from langgraft.train.loss import MicroBatch, category_totals, forward_nll, row_sums
from langgraft.train.setup import NeftHook


def accumulate(
    model: Any,
    micro_batches: list[MicroBatch],
    device: torch.device,
    autocast: Any,
    scaler: Any = None,
    neft: NeftHook | None = None,
    dims: ParallelDims | None = None,
    categories: bool = True,
) -> tuple[float, int, dict[str, tuple[float, int]]]:
    """Forward/backward over one optimizer step's micro-batches with the loss token-weighted
    across all of them: each micro-batch adds sum(nll) / N, N = supervised tokens of the whole
    step (not a mean of per-micro-batch means). Returns (loss, N, per-category sums).

    Under DDP (`model` wrapped, W ranks) N is the supervised-token count of the whole global
    step (all-reduced first) and each rank's loss is multiplied by W, because DDP averages the
    gradients over ranks: the synchronised gradient is then sum over every rank's micro-batches
    of grad(sum(nll)) / N, the same sum one process with W times the accumulation steps forms
    over the same rows (only the float summation order differs). Every micro-step but the last
    runs under `no_sync()`, so gradients are all-reduced once per optimizer step.

    The same holds for FSDP2 (its reduce-scatter averages over the data-parallel ranks too). W
    counts data-parallel ranks only (`dims.dp`): the tp ranks of one group share their rows and
    compute the same loss, so sums and gathers run over the "dp" group of the mesh.

    The step syncs with the host once (the per-row loss sums, one copy at the end); the
    per-category sums are gathered over ranks only when `categories` (a logged step)."""
    world = dims.dp if dims is not None else 1
    group = dims.dp_group if dims is not None else None
    total = sum_int(sum(mb.num_supervised for mb in micro_batches), device, group)
    denom = max(total, 1)  # an all-masked step gives zero gradients, not NaN (Colossal #5370)
    sums = []
    for k, mb in enumerate(micro_batches):
        if neft is not None:
            neft.lengths = mb.real_lengths
        mbd = mb.to(device)
        with grad_sync(model, last=k == len(micro_batches) - 1):
            with autocast():
                nll = forward_nll(model, mbd)
            loss = nll.sum() / denom * world  # x W is exact for W a power of two
            (scaler.scale(loss) if scaler is not None else loss).backward()
        sums.append(row_sums(nll, mbd))
    per_row = torch.cat(sums).tolist() if sums else []  # the step's one host sync
    loss_sum, start = 0.0, 0
    cats: dict[str, tuple[float, int]] = {}
    for mb in micro_batches:
        part = per_row[start : start + len(mb.categories)]
        start += len(mb.categories)
        loss_sum += sum(part)
        for c, (s, n) in category_totals(part, mb).items():
            s0, n0 = cats.get(c, (0.0, 0))
            cats[c] = (s0 + s, n0 + n)
    if world > 1:  # the logged loss is the global step's, identical on every rank
        loss_sum = sum_float(loss_sum, device, group)
        parts = gather_objects(cats, group) if categories else []
        cats = {}
        for part_cats in parts:
            for c, (s, n) in part_cats.items():
                s0, n0 = cats.get(c, (0.0, 0))
                cats[c] = (s0 + s, n0 + n)
    return loss_sum / denom, total, cats
