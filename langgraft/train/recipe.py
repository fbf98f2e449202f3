"""Training recipes: shared settings plus `stages: [...]`, loaded strictly from YAML.

Multi-stage training is data, not code (nanotron's `DatasetStageArgs`): each stage names its
prepared datasets (with mixing weights), its budget, its optimiser settings and what trains.
The `train:` block holds defaults that every stage inherits; a stage overrides any of them.

    langgraft train --config recipes/demo-stories260k.yaml --stages.0.lr=1e-3 --train.seed=7

Overrides are dotted paths into the YAML (`--stages.1.tokens=100000`, `--checkpoint.keep_last=2`)
applied before validation, so a typo is the same error as in the file.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from langgraft.config import from_dict, parse_override_value, read_yaml_mapping
from langgraft.errors import UserError

# Colossal-LLaMA-2's `--plugin` values (plus zero3) on PyTorch's engine: DDP, FSDP2 and DTensor
# tensor parallel (langgraft/distributed/dims.py has the mapping).
PLUGINS = ("none", "ddp", "gemini", "gemini_auto", "zero2", "zero2_cpu", "zero3", "3d")


@dataclass
class DataSource:
    path: str
    """A directory written by `langgraft prepare pretrain|chat` (manifest.json + bucket_XX/)."""
    weight: float = 1.0
    """Rows of this source per pass over the stage = weight x its rows: 1 uses every row once,
    0.25 a seeded quarter of each bucket, 2 every row twice (replay mixing)."""


@dataclass
class Hyper:
    """Optimisation settings; the recipe's `train:` block sets defaults, each stage overrides."""

    micro_batch_size: int = 2
    """Sequences per forward pass (Colossal --micro_batch_size / --batch_size)."""
    accumulation_steps: int = 1
    """Micro-batches per optimizer step; the loss is token-weighted over all of them."""
    lr: float = 3e-4
    """Peak learning rate after warm-up."""
    min_lr_ratio: float = 0.1
    """Cosine decay ends at min_lr_ratio x lr (Colossal: 0.1)."""
    warmup_steps: int | None = None
    """Linear warm-up steps; null means warmup_ratio of the stage's steps."""
    warmup_ratio: float = 0.025
    """Warm-up as a fraction of the stage's steps when warmup_steps is null (Colossal: 2.5%)."""
    weight_decay: float = 0.1
    """AdamW weight decay on matrices (embeddings, projections)."""
    decay_norms_and_biases: bool = False
    """Also decay norm weights and biases (Colossal decays everything; the usual practice not)."""
    adam_beta1: float = 0.9
    """AdamW beta1."""
    adam_beta2: float = 0.95
    """AdamW beta2 (Colossal: 0.95)."""
    adam_eps: float = 1e-8
    """AdamW epsilon."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this; 0 disables clipping."""
    freeze_non_embeds_params: bool = False
    """Train only embed_tokens and lm_head (the embeddings-only warm-up stage)."""
    neft_alpha: float | None = None
    """NEFTune: add Uniform(+-alpha/sqrt(L*d)) noise to input embeddings while training (L = real
    tokens of the row, pads excluded); null disables it. The paper uses 5-15."""
    lora_rank: int | None = None
    """Train LoRA adapters of this rank on the attention and MLP projections (needs `peft`)."""
    lora_alpha: float = 32.0
    """LoRA alpha (Colossal: 32)."""


@dataclass
class StageConfig(Hyper):
    name: str = ""
    """Short name used for logs, TensorBoard tags and the export directory."""
    data: list[DataSource] = field(default_factory=list)
    """Prepared datasets of this stage; buckets are consumed in order, shuffled within."""
    tokens: int | None = None
    """Budget in tokens (rounded up to whole optimizer steps). Set one of tokens/steps/epochs."""
    steps: int | None = None
    """Budget in optimizer steps."""
    epochs: float | None = None
    """Budget in passes over the stage's (weighted) data; the default when no budget is set is 1."""


@dataclass
class CheckpointConfig:
    save_interval: int = 1000
    """Save a resumable checkpoint every N optimizer steps (also at every stage end); 0 = only at
    stage ends."""
    keep_last: int = 3
    """Keep the newest K checkpoints; older ones are deleted after a new one is complete."""
    export_hf: bool = True
    """At every stage end, export a Hugging Face directory (safetensors + tokenizer)."""


@dataclass
class EvalConfig:
    interval: int = 0
    """Evaluate every N optimizer steps and at every stage end; 0 disables it."""
    data: list[str] = field(default_factory=list)
    """Held-out prepared datasets: loss per category (token-weighted)."""
    max_rows: int = 64
    """Rows of each held-out dataset to score (the first ones of bucket order)."""
    mc_task: str | None = None
    """Optional multiple-choice probe from langgraft.eval (mmlu, cmmlu, ceval, ...)."""
    mc_data: str | None = None
    """Data directory of mc_task."""
    mc_limit: int = 5
    """Questions per subject for the probe."""


@dataclass
class Recipe:
    model: str
    """Hugging Face LLaMA-family model directory to start from (e.g. `langgraft model expand`'s
    output). Colossal --pretrained."""
    out: str
    """Run directory: checkpoints/, export/, metrics.jsonl, tensorboard/, recipe.json."""
    tokenizer: str | None = None
    """Tokenizer directory (default: the model directory); its hash must match the data's."""
    inputs_built_by: str | None = None
    """The command that builds this recipe's model and data directories when they do not exist
    yet (e.g. `scripts/train_demo.sh`): an error about a missing input names it."""
    seed: int = 1024
    """Seed of the data order and of torch/numpy/python RNGs (Colossal: 1024)."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """fp32, or autocast to bf16 / fp16 (fp16 with a dynamic loss scale starting at 2^16) over fp32
    master weights. Colossal --mixed_precision."""
    attn_implementation: Literal[
        "sdpa", "eager", "flex_attention", "flash_attention_2", "flash_attention_3"
    ] = "sdpa"
    """Attention kernel, each with exact per-document masking (train/attention.py): sdpa / eager
    (dense additive mask, none when rows are single documents), flex_attention (block mask from
    the document lengths; CUDA, no CPU backward), flash_attention_2/3 (varlen over one packed
    row; CUDA + flash_attn). An unavailable one is an error (Colossal --use_flash_attn)."""
    grad_checkpoint: bool = False
    """Recompute activations in the backward pass (Colossal --use_grad_checkpoint)."""
    plugin: Literal[PLUGINS] = "none"  # type: ignore[valid-type]
    """Parallelism under torchrun (each data-parallel rank takes micro_batch_size x
    accumulation_steps rows per step): none (one process), ddp (DistributedDataParallel), zero2
    (FSDP2, parameters kept gathered from forward to backward), gemini / zero3 (FSDP2 fully
    sharded), zero2_cpu / gemini_auto (the same with parameters, gradients and AdamW on CPU),
    3d (tensor parallel over `tp` ranks x FSDP2 over the rest). Colossal --plugin."""
    tp: int = 1
    """Tensor-parallel degree of plugin 3d: attention and MLP projections (and an untied
    embedding/lm_head, vocabulary padded to a multiple of tp) split over tp ranks. Colossal --tp."""
    zero: int | None = None
    """ZeRO stage of plugin 3d's data-parallel dimension: 2 (default; parameters kept gathered
    from forward to backward) or 3 (fully sharded). Other plugins imply it. Colossal --zero."""
    pp: int = 1
    """Pipeline-parallel degree; only 1 is supported (refused otherwise, before loading)."""
    compile: bool = False
    """torch.compile each decoder layer (after tensor parallel and activation checkpointing,
    before FSDP2), as torchtitan does."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train; auto picks cuda when available."""
    max_length: int | None = None
    """Longest sequence allowed; a dataset packed longer is an error (Colossal --max_length).
    Default: the model's max_position_embeddings."""
    dist_timeout_s: int = 1800
    """Seconds any collective may wait for the other ranks before the job fails (torchrun: the
    process-group timeout; NCCL's watchdog aborts the rank). A rank that froze (SIGSTOP, stuck
    I/O, a dead node) then stops the job in this time instead of torch's default (10 min NCCL,
    30 min gloo). 30 min by default because the other ranks legitimately wait this long while
    rank 0 writes a 7B export (~27 GB of fp32 safetensors: minutes on a network filesystem) or
    a checkpoint; lower it for small models, raise it for a slow disk."""
    log_interval: int = 1
    """Write a metrics row every N optimizer steps."""
    tensorboard: bool = True
    """Also write the metrics rows as TensorBoard scalars (out/tensorboard)."""
    progress: bool = True
    """Show a progress bar (loss, lr, tokens/s, ETA)."""
    train: Hyper = field(default_factory=Hyper)
    """Defaults inherited by every stage."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoint cadence and retention."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Periodic held-out evaluation."""
    stages: list[StageConfig] = field(default_factory=list)
    """The stages, run in order; each starts a fresh optimizer and schedule."""


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `--a.b.0.c=value` / `--a.b value` overrides to a raw recipe mapping (a copy)."""
    data = copy.deepcopy(data)
    items: list[tuple[str, str]] = []
    i = 0
    while i < len(overrides):
        arg = overrides[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise UserError(f"unexpected argument {arg!r}; overrides look like --train.lr=1e-4")
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
        elif i + 1 < len(overrides) and not overrides[i + 1].startswith("--"):
            key, value = arg[2:], overrides[i + 1]
            i += 1
        else:
            raise UserError(f"{arg}: an override needs a value (--{arg[2:]}=VALUE)")
        items.append((key.replace("-", "_"), value))
        i += 1
    for key, value in items:
        node: Any = data
        parts = key.split(".")
        for j, part in enumerate(parts):
            last = j == len(parts) - 1
            where = ".".join(parts[: j + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise UserError(f"--{key}: {where}: no such list index (length {len(node)})")
                if last:
                    node[int(part)] = parse_override_value(value, f"--{key}")
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = parse_override_value(value, f"--{key}")
                else:
                    node = node.setdefault(part, {})
            else:
                raise UserError(f"--{key}: {where}: cannot set a key inside a scalar")
    return data


def recipe_from_dict(data: dict[str, Any], where: str = "recipe") -> Recipe:
    """Build and validate a Recipe; every stage inherits the `train:` defaults."""
    data = dict(data)
    train = data.get("train") or {}
    if not isinstance(train, dict):
        raise UserError(f"{where}: train: expected a mapping")
    from_dict(Hyper, train, where=f"{where}: train")  # names unknown keys of train: itself
    stages = data.get("stages") or []
    if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
        raise UserError(f"{where}: stages: expected a list of mappings")
    data["stages"] = [{**train, **s} for s in stages]
    recipe = from_dict(Recipe, data, where=where)
    validate(recipe, where)
    return recipe


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    from langgraft.fsutil import read_utf8

    path = Path(path)
    read_utf8(path, what="recipe file (--config takes a YAML recipe)")
    data = read_yaml_mapping(path, what="recipe")
    return recipe_from_dict(apply_overrides(data, overrides or []), where=str(path))


def _check(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise UserError(f"{where}: {message}")


def validate(recipe: Recipe, where: str = "recipe") -> None:
    """Cross-field checks that need no data or model (those come in `plan_stage`)."""
    _check(bool(recipe.stages), f"{where}: stages", "at least one stage is required")
    # numpy's SeedSequence refuses negative seeds and every rank adds its rank to the seed.
    _check(0 <= recipe.seed < 2**32, f"{where}: seed", f"{recipe.seed} must be in [0, 2^32)")
    _check(
        not (recipe.precision == "fp32" and recipe.attn_implementation.startswith("flash")),
        f"{where}: precision",
        f"fp32 with attn_implementation {recipe.attn_implementation}: flash kernels run in "
        "fp16/bf16 only; use precision: bf16 (or attn_implementation: sdpa)",
    )
    _check(recipe.log_interval >= 1, f"{where}: log_interval", "must be >= 1")
    ck = recipe.checkpoint
    _check(ck.save_interval >= 0, f"{where}: checkpoint.save_interval", "must be >= 0")
    _check(ck.keep_last >= 1, f"{where}: checkpoint.keep_last", "must be >= 1")
    _check(recipe.eval.interval >= 0, f"{where}: eval.interval", "must be >= 0")
    _check(
        recipe.eval.interval == 0 or bool(recipe.eval.data) or recipe.eval.mc_task is not None,
        f"{where}: eval.interval",
        "is set but eval.data and eval.mc_task are empty",
    )
    _check(
        (recipe.eval.mc_task is None) == (recipe.eval.mc_data is None),
        f"{where}: eval.mc_data",
        "eval.mc_task and eval.mc_data go together",
    )
    _check(recipe.dist_timeout_s >= 1, f"{where}: dist_timeout_s",
           f"{recipe.dist_timeout_s} must be >= 1 (seconds)")  # fmt: skip
    names = [s.name for s in recipe.stages]
    for i, s in enumerate(recipe.stages):
        w = f"{where}: stages[{i}]"
        if not s.name:
            s.name = f"stage{i}"
        _check(names.count(s.name) <= 1 or not s.name, f"{w}.name", f"duplicate name {s.name!r}")
        _check(bool(s.data), f"{w}.data", "no datasets; list prepared directories under data:")
        for j, d in enumerate(s.data):
            _check(
                math.isfinite(d.weight) and d.weight > 0, f"{w}.data[{j}].weight",
                f"{d.weight} must be finite and > 0",
            )  # fmt: skip
        budgets = [k for k in ("tokens", "steps", "epochs") if getattr(s, k) is not None]
        _check(len(budgets) <= 1, f"{w}", f"set one budget, not {' and '.join(budgets)}")
        for k in budgets:
            _check(getattr(s, k) > 0, f"{w}.{k}", f"{getattr(s, k)} must be > 0")
        _check(s.micro_batch_size >= 1, f"{w}.micro_batch_size", "must be >= 1")
        _check(s.accumulation_steps >= 1, f"{w}.accumulation_steps", "must be >= 1")
        # Past ~1e37 AdamW's step size overflows float32; anything above 1e3 is surely a typo.
        _check(0 < s.lr <= 1e3, f"{w}.lr", f"{s.lr} must be finite and in (0, 1e3]")
        for k in ("adam_beta1", "adam_beta2"):
            _check(0 <= getattr(s, k) < 1, f"{w}.{k}", f"{getattr(s, k)} must be in [0, 1)")
        _check(
            math.isfinite(s.adam_eps) and s.adam_eps > 0, f"{w}.adam_eps",
            f"{s.adam_eps} must be finite and > 0",
        )  # fmt: skip
        _check(math.isfinite(s.weight_decay), f"{w}.weight_decay", "must be finite")
        _check(math.isfinite(s.grad_clip), f"{w}.grad_clip", "must be finite (0 disables it)")
        _check(0 <= s.min_lr_ratio <= 1, f"{w}.min_lr_ratio", "must be in [0, 1]")
        _check(0 <= s.warmup_ratio < 1, f"{w}.warmup_ratio", "must be in [0, 1)")
        _check(s.warmup_steps is None or s.warmup_steps >= 0, f"{w}.warmup_steps", "must be >= 0")
        _check(s.weight_decay >= 0, f"{w}.weight_decay", "must be >= 0")
        _check(s.grad_clip >= 0, f"{w}.grad_clip", "must be >= 0 (0 disables clipping)")
        _check(
            s.neft_alpha is None or (math.isfinite(s.neft_alpha) and s.neft_alpha > 0),
            f"{w}.neft_alpha", "must be finite and > 0",
        )  # fmt: skip
        _check(s.lora_rank is None or s.lora_rank >= 1, f"{w}.lora_rank", "must be >= 1")
        _check(
            not (s.lora_rank and s.freeze_non_embeds_params),
            f"{w}.lora_rank",
            "LoRA and freeze_non_embeds_params exclude each other",
        )


def stage_summary(stage: StageConfig) -> dict[str, Any]:
    return dataclasses.asdict(stage)
