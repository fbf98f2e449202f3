"""`parallelize(model, recipe)`: the one function that prepares a model for its parallel layout.

Order follows torchtitan's `parallelize_llama`: tensor parallel, activation checkpointing,
compile, then data-parallel sharding. With one process only activation checkpointing applies;
the Colossal plugin names are accepted by the recipe and refused here with a clear message
until multi-process training exists, so a run never silently trains unsharded.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from langgraft.errors import UserError

log = logging.getLogger(__name__)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_layout(plugin: str) -> None:
    """Refuse layouts this build cannot run, before any model is loaded."""
    n = world_size()
    if n > 1:
        raise UserError(
            f"WORLD_SIZE={n}: multi-process training is not supported yet (plugin {plugin!r}); "
            "run one process, or wait for the distributed trainer"
        )
    if plugin not in ("none", "ddp"):
        raise UserError(
            f"plugin: {plugin!r} (Colossal's sharded plugin) is reserved for the distributed "
            "trainer and not implemented yet; use plugin: none (one process)"
        )


def parallelize(model: Any, grad_checkpoint: bool) -> Any:
    """Apply the layout to `model` in place and return it (identity for one process)."""
    if grad_checkpoint:
        # Non-reentrant checkpointing works with frozen inputs (embeddings-only stages); the
        # reentrant variant silently drops gradients when no input requires grad.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        log.info("activation checkpointing on")
    return model
