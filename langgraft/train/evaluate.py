"""The periodic evaluation hook: held-out loss per category, and optionally the multiple-choice
probe from langgraft.eval, so forgetting of the original language shows up during training."""

from __future__ import annotations

import logging
from typing import Any

import torch

from langgraft.train.data import PreparedDataset
from langgraft.train.loss import category_sums, collate, model_inputs, token_nll
from langgraft.train.recipe import EvalConfig

log = logging.getLogger(__name__)


def heldout_loss(
    model: Any,
    dataset: PreparedDataset,
    max_rows: int,
    device: torch.device,
    pad_id: int,
    batch_size: int,
    autocast: Any,
    mask_dtype: torch.dtype,
) -> dict[str, tuple[float, int]]:
    """{category: (summed nll, supervised tokens)} over the first `max_rows` rows (bucket order)."""
    rows = []
    for b in dataset.buckets:
        rows += [b.row(i) for i in range(min(b.num_rows, max_rows - len(rows)))]
    sums: dict[str, tuple[float, int]] = {}
    model.eval()
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            mb = collate(rows[i : i + batch_size], pad_id, mask_dtype=mask_dtype)
            with autocast():
                logits = model(**model_inputs(mb.to(device))).logits
            nll = token_nll(logits, mb.labels.to(device))
            for c, (s, n) in category_sums(nll, mb).items():
                s0, n0 = sums.get(c, (0.0, 0))
                sums[c] = (s0 + s, n0 + n)
    return sums


def evaluate(
    model: Any,
    tokenizer: Any,
    cfg: EvalConfig,
    datasets: list[PreparedDataset],
    device: torch.device,
    pad_id: int,
    batch_size: int,
    autocast: Any,
    mask_dtype: torch.dtype,
) -> dict[str, float]:
    out: dict[str, float] = {}
    for ds in datasets:
        sums = heldout_loss(
            model, ds, cfg.max_rows, device, pad_id, batch_size, autocast, mask_dtype
        )
        name = ds.path.name
        for c, (s, n) in sorted(sums.items()):
            out[f"eval/{name}/loss/{c}"] = s / max(n, 1)
        total_s, total_n = sum(s for s, _ in sums.values()), sum(n for _, n in sums.values())
        out[f"eval/{name}/loss"] = total_s / max(total_n, 1)
    if cfg.mc_task is not None and cfg.mc_data is not None:
        from langgraft.eval import load_task, probe_mc

        task = load_task(cfg.mc_task, cfg.mc_data)
        for k, v in probe_mc(model, tokenizer, task, limit=cfg.mc_limit).items():
            out[f"eval/{cfg.mc_task}/{k}"] = v
    return out
