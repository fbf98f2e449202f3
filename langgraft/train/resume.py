"""What may change between a checkpoint's recipe and the recipe that resumes it.

A resume continues one run, so the recipe must still describe that run. The checkpoint keeps
the recipe it was written with (checkpoints/step-N/recipe.json) and `check_resume` compares:

* may change, applied from the resume step: `lr`, `min_lr_ratio`, `weight_decay`, `grad_clip`
  of the stage in progress (`apply_resumed_hyper` rewrites the restored optimizer groups and
  the schedule's base lr, which the checkpoint would otherwise bring back);
* may change freely: the layout (`plugin`, `tp`, `zero`, `compile`, `device`,
  `grad_checkpoint`, `attn_implementation`), `micro_batch_size` / `accumulation_steps` while
  the global batch (micro x accumulation x data-parallel ranks) stays the same,
  `dist_timeout_s`, logging,
  `checkpoint.*`, `eval.*`, paths (`out`, `model`, `tokenizer`), and everything about stages
  that have not started yet (including adding or removing them);
* must not change (refused, naming every differing key): anything else of a started stage
  (data, budget, warm-up, freezing, NEFTune, LoRA, AdamW betas/eps, ...), `seed`, `precision`,
  `max_length`. Start a new run from the weights instead: `--init-from CHECKPOINT`.
"""

from __future__ import annotations

import logging
from typing import Any

from langgraft.errors import UserError

log = logging.getLogger(__name__)

APPLIED_ON_RESUME = ("lr", "min_lr_ratio", "weight_decay", "grad_clip")
_BATCH_KEYS = ("micro_batch_size", "accumulation_steps")
_FREE_TOP = ("out", "model", "tokenizer", "inputs_built_by", "plugin", "tp", "zero", "pp", "compile", "device",
             "grad_checkpoint", "attn_implementation", "dist_timeout_s", "log_interval", "tensorboard", "progress",
             "checkpoint", "eval", "train")  # fmt: skip
# `train:` is only the defaults block: what it changes shows up in the stages, compared there.


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(_flat(v, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def check_resume(
    saved: dict[str, Any], now: dict[str, Any], state: dict[str, Any], dp: int, where: str
) -> None:
    """Refuse a resume whose recipe changes the meaning of the run (see the module doc)."""
    started = int(state["stage"])  # stages 0..started have trained (or are training)
    old_stages, new_stages = saved.get("stages", []), now.get("stages", [])
    diffs: list[str] = []
    if len(new_stages) <= started:
        diffs.append(f"stages (the checkpoint is in stage {started}, the recipe has "
                     f"{len(new_stages)})")  # fmt: skip
    for key in sorted(set(saved) | set(now)):
        if key in _FREE_TOP or key == "stages":
            continue
        if saved.get(key) != now.get(key):
            diffs.append(f"{key} ({saved.get(key)!r} -> {now.get(key)!r})")
    saved_dp = int(state.get("dp", state.get("world_size", 1)))
    for i in range(min(started + 1, len(old_stages), len(new_stages))):
        a, b = _flat(old_stages[i], ""), _flat(new_stages[i], "")
        for key in sorted(set(a) | set(b)):
            if key in APPLIED_ON_RESUME or key in _BATCH_KEYS or a.get(key) == b.get(key):
                continue
            diffs.append(f"stages[{i}].{key} ({a.get(key)!r} -> {b.get(key)!r})")
        old_batch = a["micro_batch_size"] * a["accumulation_steps"] * saved_dp
        new_batch = b["micro_batch_size"] * b["accumulation_steps"] * dp
        if old_batch != new_batch:
            diffs.append(
                f"stages[{i}] global batch ({a['micro_batch_size']} x {a['accumulation_steps']} x "
                f"{saved_dp} rank(s) = {old_batch} -> {b['micro_batch_size']} x "
                f"{b['accumulation_steps']} x {dp} = {new_batch} rows; keep micro_batch_size x "
                "accumulation_steps x data-parallel ranks equal)"
            )
    if diffs:
        raise UserError(
            f"cannot resume from {where}: the recipe differs from the checkpoint's in "
            f"{', '.join(diffs)}. A resume continues the same run; restore these keys, or start "
            "a new run from the weights with --init-from. On resume only "
            f"{', '.join(APPLIED_ON_RESUME)} of the stage in progress (applied from the resume "
            "step), the parallel layout at the same global batch, logging/checkpoint/eval "
            "settings and stages not started yet may change (docs/train.md)"
        )


def apply_resumed_hyper(optimizer: Any, scheduler: Any, stage: Any, saved_stage: dict) -> None:
    """Put the recipe's lr / weight decay on the restored optimizer and schedule (the state
    dicts bring back the checkpoint's). min_lr_ratio and grad_clip are read from the recipe
    every step already."""
    for i, group in enumerate(optimizer.param_groups):
        group["initial_lr"] = stage.lr
        if i == 0:  # optim.param_groups: group 0 decays, group 1 (norms, biases) never does
            group["weight_decay"] = stage.weight_decay
    scheduler.base_lrs = [stage.lr] * len(optimizer.param_groups)
    step = scheduler.last_epoch
    for group, lr_lambda in zip(optimizer.param_groups, scheduler.lr_lambdas, strict=True):
        group["lr"] = stage.lr * lr_lambda(step)
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
    changed = [k for k in APPLIED_ON_RESUME if saved_stage.get(k) != getattr(stage, k)]
    if changed:
        log.info("resume: %s", ", ".join(f"{k} {saved_stage.get(k)} -> {getattr(stage, k)}"
                                         for k in changed))  # fmt: skip
