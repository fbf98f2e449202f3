"""AdamW with decoupled weight decay on matrices only, and linear warm-up + cosine to a floor.

Colossal-LLaMA-2 decays every parameter, norms included; decaying RMSNorm gains pulls them to
zero for no regularising benefit, so by default only tensors with >= 2 dimensions decay.
The schedule is a pure function of the step (`lr_at`), so resuming needs only the step count.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from langgraft.train.recipe import StageConfig


def warmup_steps_for(stage: StageConfig, total_steps: int) -> int:
    if stage.warmup_steps is not None:
        return stage.warmup_steps
    return math.ceil(stage.warmup_ratio * total_steps)


def lr_at(step: int, peak: float, total: int, warmup: int, min_ratio: float) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warm-up to `peak` over `warmup`
    steps, then cosine from `peak` to `min_ratio * peak` at the last step."""
    if step < warmup:
        return peak * (step + 1) / warmup
    decay = max(1, total - warmup - 1)
    progress = min(1.0, (step - warmup) / decay)
    floor = min_ratio * peak
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def param_groups(model: torch.nn.Module, stage: StageConfig) -> list[dict[str, Any]]:
    """Decay on matrices, none on norms and biases; each split further by device mesh, because
    the fused AdamW kernel refuses a group that mixes plain tensors with DTensors or DTensors of
    different meshes (tensor parallel shards the projections, and their biases, but leaves the
    norms plain; TP x FSDP2 puts them on two meshes)."""
    from torch.distributed.tensor import DTensor

    groups: dict[tuple[bool, Any], list[torch.nn.Parameter]] = {}
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = p.ndim >= 2 or stage.decay_norms_and_biases
        mesh = p.device_mesh if isinstance(p, DTensor) else None
        groups.setdefault((not decay, id(mesh) if mesh is not None else 0), []).append(p)
    if not groups:
        return [{"params": [], "weight_decay": stage.weight_decay}]
    return [
        {"params": params, "weight_decay": 0.0 if no_decay else stage.weight_decay}
        # decay groups first, then in the parameters' order: the same on every rank
        for (no_decay, _), params in sorted(groups.items(), key=lambda kv: kv[0][0])
    ]


def build_optimizer(
    model: torch.nn.Module, stage: StageConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    groups = param_groups(model, stage)
    # Fused on every device (CPU included): one kernel per device and dtype, and the only
    # AdamW that takes `found_inf` on the device, so a non-finite step is skipped without a
    # host sync (train/step.py DivergenceGuard).
    opt = torch.optim.AdamW(
        groups,
        lr=stage.lr,
        betas=(stage.adam_beta1, stage.adam_beta2),
        eps=stage.adam_eps,
        fused=True,
    )
    warmup = warmup_steps_for(stage, total_steps)

    def factor(step: int) -> float:
        return lr_at(step, 1.0, total_steps, warmup, stage.min_lr_ratio)

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def optimizer_step(optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any = None) -> bool:
    """Apply the step's gradients (through GradScaler under fp16); returns whether the weights
    changed. GradScaler skips a step whose gradients hold inf/NaN and halves its scale; the
    schedule then stays put, or it would run ahead of the updates actually made."""
    if scaler is None:
        optimizer.step()
        stepped = True
    else:
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        stepped = scaler.get_scale() >= scale  # only a skipped step lowers the scale
    optimizer.zero_grad(set_to_none=True)
    if stepped:
        scheduler.step()
    return stepped
