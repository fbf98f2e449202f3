"""One optimizer step's forward and backward (`accumulate`), what the host reads of it
(`step_totals`, logging steps only) and the device-side divergence guard (`DivergenceGuard`).

Host-sync budget (torchtitan keeps the step free of them; so do we): on a step that is not
logged, nothing here reads a tensor on the host. The global token counts are one all-reduce of
a device tensor; the loss stays on the device; the non-finite check is a device flag that the
fused AdamW kernel reads itself (`found_inf`). The host reads the step once, on logging steps,
checkpoints and stage ends (`step_totals`, `DivergenceGuard.check`). tests/distributed/
test_host_syncs.py counts it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from langgraft.distributed.dims import ParallelDims
from langgraft.distributed.parallel import gather_objects, sum_float, sum_tensor
from langgraft.distributed.parallelize import grad_sync
from langgraft.train.loss import MicroBatch, add_totals, category_totals, forward_nll, row_sums
from langgraft.train.setup import NeftHook


@dataclass
class StepResult:
    """What one step leaves on the device; `step_totals` reads it on a logging step."""

    micro_batches: list[MicroBatch]
    row_sums: torch.Tensor
    """(rows,) this rank's summed nll of each row of the step (no grad)."""
    counts: torch.Tensor
    """(2,) int64: the global step's supervised targets and real tokens (all data-parallel
    ranks), on the device."""


def accumulate(
    model: Any,
    micro_batches: list[MicroBatch],
    device: torch.device,
    autocast: Any,
    scaler: Any = None,
    neft: NeftHook | None = None,
    dims: ParallelDims | None = None,
) -> StepResult:
    """Forward/backward over one optimizer step's micro-batches with the loss token-weighted
    across all of them: each micro-batch adds sum(nll) / N, N = supervised tokens of the whole
    step (not a mean of per-micro-batch means).

    Under DDP (`model` wrapped, W ranks) N is the supervised-token count of the whole global
    step (all-reduced first, on the device) and each rank's loss is multiplied by W, because DDP
    averages the gradients over ranks: the synchronised gradient is then sum over every rank's
    micro-batches of grad(sum(nll)) / N, the same sum one process with W times the accumulation
    steps forms over the same rows (only the float summation order differs). DDP runs every
    micro-step but the last under `no_sync()`; FSDP2 reduce-scatters on every micro-step, so
    its gradients stay sharded (distributed/parallelize.py `grad_sync`).

    The same holds for FSDP2 (its reduce-scatter averages over the data-parallel ranks too). W
    counts data-parallel ranks only (`dims.dp`): the tp ranks of one group share their rows and
    compute the same loss, so sums run over the "dp" group of the mesh."""
    world = dims.dp if dims is not None else 1
    group = dims.dp_group if dims is not None else None
    local = [sum(mb.num_supervised for mb in micro_batches),
             sum(mb.num_tokens for mb in micro_batches)]  # fmt: skip
    counts = sum_tensor(torch.tensor(local, dtype=torch.int64, device=device), group)
    # An all-masked step gives zero gradients, not NaN (Colossal #5370).
    denom = counts[0].clamp(min=1).to(torch.float32)
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
    per_row = torch.cat(sums) if sums else torch.zeros(0, device=device)
    return StepResult(micro_batches, per_row, counts)


def step_totals(
    res: StepResult, device: torch.device, dims: ParallelDims | None = None,
    categories: bool = True,
) -> tuple[float, int, int, dict[str, tuple[float, int]]]:  # fmt: skip
    """(global loss, supervised targets, real tokens, per-category sums) of a step: the host
    reads (one copy of the rows' sums and the counts, then the loss summed over the ranks)."""
    world = dims.dp if dims is not None else 1
    group = dims.dp_group if dims is not None else None
    n_rows = len(res.row_sums)
    values = torch.cat([res.row_sums.double(), res.counts.double()]).tolist()
    per_row, (supervised, tokens) = values[:n_rows], values[n_rows:]
    supervised, tokens = int(supervised), int(tokens)
    loss_sum, start = 0.0, 0
    cats: dict[str, tuple[float, int]] = {}
    for mb in res.micro_batches:
        part = per_row[start : start + len(mb.categories)]
        start += len(mb.categories)
        loss_sum += sum(part)
        if categories:
            add_totals(cats, category_totals(part, mb))
    if world > 1:  # the logged loss is the global step's, identical on every rank
        loss_sum = sum_float(loss_sum, device, group)
        parts = gather_objects(cats, group) if categories else []
        cats = {}
        for part_cats in parts:
            add_totals(cats, part_cats)
    return loss_sum / max(supervised, 1), supervised, tokens, cats


class DivergenceGuard:
    """A non-finite gradient norm stops every update from that step on, decided on the device.

    The norm is global (all-reduced) and so identical on every rank: all ranks skip together.
    The flag is sticky and is handed to the fused AdamW kernel as `found_inf`, which leaves
    weights, moments and step counts untouched while it is set, so the weights stay those of
    the last good step without a host read. The host reads the flag at the next logging step,
    checkpoint or export (`check`), and the run stops there naming the first bad step."""

    def __init__(self, device: torch.device) -> None:
        self.flag = torch.zeros((), dtype=torch.float32, device=device)
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)
        self.first_values = torch.zeros(2, dtype=torch.float64, device=device)

    def update(self, step: int, grad_norm: torch.Tensor, loss_rows: torch.Tensor) -> None:
        """Record step `step` (1-based global step); device ops only."""
        norm = grad_norm.detach().to(self.flag.device, torch.float32)
        bad = (~torch.isfinite(norm)).float()
        first = (self.flag == 0) & (bad > 0)
        self.first_bad = torch.where(first, torch.full_like(self.first_bad, step), self.first_bad)
        values = torch.stack([loss_rows.detach().double().sum(), norm.double()])
        self.first_values = torch.where(first, values, self.first_values)
        self.flag = torch.maximum(self.flag, bad)

    def arm(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.found_inf = self.flag  # read by the fused kernel (torch.optim.AdamW)

    def check(self) -> tuple[int, float, float] | None:
        """(first bad step, this rank's loss sum, gradient norm) once diverged, else None: one
        host read."""
        step, loss, norm = torch.cat([self.first_bad.double()[None], self.first_values]).tolist()
        return None if step < 0 else (int(step), loss, norm)
