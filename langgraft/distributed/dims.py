"""`ParallelDims`: the run's parallel layout (plugin, degrees, device mesh), validated against
the world size and the model's shape before any weights are loaded.

Colossal-LLaMA-2's plugin names map onto PyTorch's own engine (torchtitan's `ParallelDims`):

    ddp                     DistributedDataParallel (one full replica per rank)
    zero2                   FSDP2, parameters kept gathered from forward to backward
    gemini, zero3           FSDP2 fully sharded (re-sharded after every forward)
    zero2_cpu, gemini_auto  the two above with CPUOffloadPolicy (params, grads, AdamW on CPU)
    3d                      tensor parallel (tp ranks) x FSDP2 over the data-parallel ranks

The mesh has two named dimensions, ("dp", "tp"). Data sharding, the loss denominator and the
gradient sync follow "dp": the tp ranks of one group see the same rows.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from langgraft.errors import UserError

log = logging.getLogger(__name__)

FSDP_PLUGINS = ("zero2", "zero2_cpu", "gemini", "gemini_auto", "zero3")
SHARDED_PLUGINS = (*FSDP_PLUGINS, "3d")
OFFLOAD_PLUGINS = ("zero2_cpu", "gemini_auto")
# ZeRO-2 in FSDP2 terms: keep the all-gathered parameters from forward to backward (one
# all-gather per step instead of two) at the cost of unsharded parameters during the step.
_KEEP_GATHERED = ("zero2", "zero2_cpu")


@dataclass
class ParallelDims:
    plugin: str
    world: int
    tp: int = 1
    zero: int = 3
    """ZeRO stage of the FSDP2 dimension: 2 keeps parameters gathered after forward, 3 not."""
    mesh: Any = field(default=None, repr=False)
    """DeviceMesh ("dp", "tp"); None with one process and no sharding."""

    @property
    def dp(self) -> int:
        return self.world // self.tp

    @property
    def fsdp(self) -> bool:
        """FSDP2 wraps the model (3d only shards when there is more than one dp rank)."""
        return self.plugin in FSDP_PLUGINS or (self.plugin == "3d" and self.dp > 1)

    @property
    def sharded(self) -> bool:
        return self.plugin in SHARDED_PLUGINS

    @property
    def offload(self) -> bool:
        return self.plugin in OFFLOAD_PLUGINS

    @property
    def reshard_after_forward(self) -> bool:
        if self.plugin == "3d":
            return self.zero >= 3
        return self.plugin not in _KEEP_GATHERED

    # Slicing a DeviceMesh builds a new sub-mesh (host work, a tolist()) on every call: the
    # sub-meshes are made once, when the mesh is (the step asks for dp_group every time).
    _dp_mesh: Any = field(default=None, repr=False)
    _tp_mesh: Any = field(default=None, repr=False)

    @property
    def dp_mesh(self) -> Any:
        return self._dp_mesh

    @property
    def tp_mesh(self) -> Any:
        return None if self.tp == 1 else self._tp_mesh

    @property
    def dp_rank(self) -> int:
        return 0 if self._dp_mesh is None else self._dp_mesh.get_local_rank()

    @property
    def dp_group(self) -> Any:
        return None if self._dp_mesh is None else self._dp_mesh.get_group()

    def build_mesh(self, device: torch.device) -> None:
        """The ("dp", "tp") mesh over the initialised process group (collective)."""
        if not self.sharded and self.world == 1:
            return
        from torch.distributed.device_mesh import init_device_mesh

        self.mesh = init_device_mesh(device.type, (self.dp, self.tp), mesh_dim_names=("dp", "tp"))
        self._dp_mesh, self._tp_mesh = self.mesh["dp"], self.mesh["tp"]
        log.info("layout: plugin %s, dp %d x tp %d", self.plugin, self.dp, self.tp)


def _model_shape(model_dir: str) -> dict[str, Any]:
    """config.json only (no weights): enough to check that tp divides the shapes."""
    path = Path(model_dir) / "config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"model: {path}: cannot read the model config ({e})") from None
    if not isinstance(cfg, dict):
        raise UserError(f"model: {path}: not a JSON object")
    return cfg


def parallel_dims(recipe: Any, world: int, where: str = "recipe") -> ParallelDims:
    """Check the recipe's layout against the world size and the model's shape (config.json
    only) and return it; every message says what to change. Runs before any model is loaded."""
    plugin, tp, zero, pp = recipe.plugin, recipe.tp, recipe.zero, recipe.pp
    if pp != 1:
        raise UserError(
            f"{where}: pp: {pp}: pipeline parallelism is not implemented; a 7B model fits "
            "8 x 80 GB with plugin gemini or 3d (tp x FSDP2), see `langgraft train --plan`"
        )
    if world > 1 and plugin == "none":
        raise UserError(
            f"WORLD_SIZE={world} (torchrun) but plugin is 'none': every process would train its "
            "own copy; set plugin: ddp in the recipe or pass --plugin=ddp (or a sharded plugin: "
            f"{', '.join(SHARDED_PLUGINS)})"
        )
    if tp != 1 and plugin != "3d":
        raise UserError(f"{where}: tp: {tp} needs plugin: 3d (got plugin: {plugin})")
    if zero is not None and plugin != "3d":
        raise UserError(
            f"{where}: zero: {zero} applies to plugin 3d only; plugin {plugin} sets its own "
            "stage (zero2/zero2_cpu: 2, gemini/gemini_auto/zero3: 3)"
        )
    if zero is not None and zero not in (2, 3):
        raise UserError(f"{where}: zero: {zero}: use 2 (keep gathered) or 3 (fully sharded)")
    if tp < 1 or world % tp:
        raise UserError(
            f"{where}: tp: {tp} must divide the world size {world} (torchrun "
            f"--nproc_per_node x --nnodes); use tp in {[d for d in range(1, world + 1) if world % d == 0]}"
        )
    if plugin in SHARDED_PLUGINS:
        if recipe.precision == "fp16":
            raise UserError(
                f"{where}: precision: fp16 with plugin {plugin}: FSDP2's mixed precision has no "
                "dynamic loss scaling for sharded gradients here; use precision: bf16 (or plugin: ddp)"
            )
        for i, s in enumerate(recipe.stages):
            if s.lora_rank:
                raise UserError(
                    f"{where}: stages[{i}].lora_rank: LoRA with plugin {plugin}: peft replaces "
                    "the projections that FSDP2/TP have already sharded; use plugin ddp or none "
                    "for LoRA stages"
                )
    if tp > 1:
        cfg = _model_shape(recipe.model)
        heads = cfg.get("num_attention_heads", 0)
        checks = {
            "num_attention_heads": heads,
            "num_key_value_heads": cfg.get("num_key_value_heads") or heads,
            "intermediate_size": cfg.get("intermediate_size", 0),
        }
        for key, n in checks.items():
            if not n or n % tp:
                raise UserError(
                    f"{where}: tp: {tp} does not divide the model's {key} ({n}); pick a tp that "
                    "divides the attention heads, the key/value heads and the MLP width"
                )
    if zero is None:
        zero = 2 if plugin in (*_KEEP_GATHERED, "3d") else 3
    return ParallelDims(plugin, world, tp, zero)
