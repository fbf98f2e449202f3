"""Everything the loop needs before step 0: model, tokenizer, pad id, per-stage plan, and what
trains in a stage (freezing, NEFTune, LoRA)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from langgraft.errors import UserError
from langgraft.model.checks import check_model_dir
from langgraft.model.families import family_of
from langgraft.train.data import PreparedDataset, StageSampler
from langgraft.train.optim import warmup_steps_for
from langgraft.train.recipe import Recipe, StageConfig

log = logging.getLogger(__name__)


def pick_device(recipe: Recipe) -> torch.device:
    if recipe.device == "cuda" and not torch.cuda.is_available():
        raise UserError("device: cuda requested but torch sees no GPU; use device: cpu or auto")
    if recipe.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(recipe.device)
    if recipe.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError(
            f"precision: bf16 needs a GPU with bf16 support, which {torch.cuda.get_device_name()} "
            "lacks; use precision: fp16 (or fp32 with attn_implementation: sdpa)"
        )
    return device


def check_attention(impl: str, device: torch.device) -> None:
    """Refuse a kernel that cannot train here (train/attention.py); never a silent fallback."""
    from langgraft.train.attention import check_implementation

    check_implementation(impl, device, training=True)


def load_model(recipe: Recipe, device: torch.device, on_cpu: bool = False) -> Any:
    """The recipe's model in fp32, on `device` (or left on CPU for `parallelize` to shard)."""
    from transformers import AutoModelForCausalLM

    path = Path(recipe.model)
    if not (path / "config.json").is_file():
        raise UserError(f"model: {path}: not a Hugging Face model directory (no config.json)")
    check_attention(recipe.attn_implementation, device)
    check_model_dir(path, remote_code_flag=False)  # config.json agrees with the weights
    try:
        # fp32 master weights; bf16/fp16 come from autocast in the step.
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=torch.float32, attn_implementation=recipe.attn_implementation
        )
    except (ImportError, ValueError) as e:
        raise UserError(f"model: {path}: cannot load with {recipe.attn_implementation}: {e}") from e
    model.config.use_cache = False
    return model if on_cpu else model.to(device)


def pad_token_id(tokenizer: Any) -> int:
    """A real padding id that is never EOS. Which id it is does not change the loss (pads are
    masked by length and labelled -100), but a pad id equal to EOS invites id-based masking."""
    for cand in (tokenizer.pad_token_id, tokenizer.unk_token_id):
        if cand is not None and cand != tokenizer.eos_token_id:
            return int(cand)
    return 0 if tokenizer.eos_token_id != 0 else 1


@dataclass
class StagePlan:
    index: int
    stage: StageConfig
    sampler: StageSampler
    total_steps: int
    warmup_steps: int
    tokens_per_step: float


def plan_stage(
    recipe: Recipe,
    index: int,
    datasets: dict[str, PreparedDataset],
    max_length: int,
    where: str = "recipe",
    world: int = 1,
) -> StagePlan:
    """Open the stage's data and turn its budget into steps; impossible budgets are errors."""
    stage = recipe.stages[index]
    w = f"{where}: stages[{index}]"
    sources = []
    for j, d in enumerate(stage.data):
        if d.path not in datasets:
            try:
                datasets[d.path] = PreparedDataset(d.path)
            except UserError as e:
                raise UserError(f"{w}.data[{j}].path: {e}") from None
        ds = datasets[d.path]
        if ds.max_length > max_length:
            raise UserError(
                f"{w}.data[{j}].path: {d.path} was packed to {ds.max_length} tokens, longer "
                f"than max_length {max_length} (recipe max_length or the model's context)"
            )
        sources.append(ds)
    # The global batch: every data-parallel rank takes micro_batch_size x accumulation_steps.
    rows_per_step = stage.micro_batch_size * stage.accumulation_steps * world
    sampler = StageSampler(
        sources, [d.weight for d in stage.data], recipe.seed, index, rows_per_step
    )
    if sampler.steps_per_epoch == 0:
        raise UserError(
            f"{w}.micro_batch_size: {stage.micro_batch_size} x accumulation_steps "
            f"{stage.accumulation_steps} x {world} process(es) = {rows_per_step} sequences "
            "per step, but a pass over "
            f"the stage's data has only {sampler.rows_per_epoch}; lower them or add data"
        )
    tokens_per_step = sampler.tokens_per_epoch / sampler.rows_per_epoch * rows_per_step
    if stage.steps is not None:
        total = stage.steps
    elif stage.tokens is not None:
        total = math.ceil(stage.tokens / tokens_per_step)
    else:
        epochs = stage.epochs if stage.epochs is not None else 1.0
        total = math.floor(epochs * sampler.rows_per_epoch / rows_per_step)
        if total == 0:
            raise UserError(
                f"{w}.epochs: {epochs} passes is less than one optimizer step "
                f"({rows_per_step} of {sampler.rows_per_epoch} sequences per pass)"
            )
    warmup = warmup_steps_for(stage, total)
    if warmup >= total and stage.warmup_steps is not None:
        raise UserError(
            f"{w}.warmup_steps: {warmup} warm-up steps but the stage has only {total} steps"
        )
    return StagePlan(index, stage, sampler, total, warmup, tokens_per_step)


class NeftHook:
    """NEFTune (Jain et al. 2023): Uniform(-1, 1) * alpha / sqrt(L * d) noise on the input
    embeddings in training mode. L is each row's real length (Colossal counts the pads too)."""

    def __init__(self, module: torch.nn.Module, alpha: float) -> None:
        self.alpha = alpha
        self.lengths: torch.Tensor | None = None
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        if not module.training:
            return output
        B, L, d = output.shape
        n = self._position_lengths(B, L).to(output.device, output.dtype)
        scale = (self.alpha / torch.sqrt(n * d))[..., None]
        return output + torch.empty_like(output).uniform_(-1, 1) * scale

    def _position_lengths(self, B: int, L: int) -> torch.Tensor:
        """(B, L): the real length of the row each position belongs to. Padded micro-batches
        have one row per batch entry; the packed (flash) path concatenates the rows into one,
        and each position must still be scaled by its own row's length, not the total."""
        lengths = self.lengths
        if lengths is not None and len(lengths) == B:
            return lengths.double()[:, None].expand(B, L)
        if lengths is not None and B == 1 and int(lengths.sum()) == L:
            return torch.repeat_interleave(lengths.double(), lengths)[None]
        return torch.full((B, L), float(L), dtype=torch.float64)

    def remove(self) -> None:
        self.handle.remove()


def configure_trainable(model: Any, stage: StageConfig) -> Any:
    """Set requires_grad for this stage; wraps with LoRA adapters when lora_rank is set."""
    if stage.lora_rank:
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(
            r=stage.lora_rank, lora_alpha=stage.lora_alpha, lora_dropout=0.0,
            target_modules=list(family_of(model).lora_targets), task_type="CAUSAL_LM",
        )  # fmt: skip
        return get_peft_model(model, cfg)
    embeddings = family_of(model).embeddings
    for name, p in model.named_parameters():
        if stage.freeze_non_embeds_params:
            p.requires_grad_(any(m in name.split(".") for m in embeddings))
        else:
            p.requires_grad_(True)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("stage %s: %s trainable parameters", stage.name, f"{n:,}")
    return model
