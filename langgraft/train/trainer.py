"""The training loop: stages in order, token-weighted accumulation, checkpoints, exact resume.

The trainer is thin and stateful (torchtitan's `Trainer`): `state_dict()` holds the stage,
the step, the tokens seen and the sampler position, and together with the model, optimizer,
scheduler, grad scaler and RNG states (distributed/checkpoint.py) a resume continues bit for
bit. Each stage starts a fresh AdamW and schedule, like Colossal's chained runs.

Under torchrun every rank runs this same loop; the rows of a step are split by the
data-parallel rank of the mesh (data.py: `next_step_rows`; the tp ranks of one group share
rows). The eval hook, checkpoints and exports are collective (a sharded model's forward and its
state gathering need every rank); only rank 0 writes metrics, TensorBoard and the shared files.
A resume checks the recipe against the checkpoint's (train/resume.py).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from langgraft.config import to_dict
from langgraft.distributed import checkpoint as ckpt
from langgraft.distributed.dims import ParallelDims
from langgraft.distributed.export import export_hf
from langgraft.distributed.parallel import data_parallel, rank
from langgraft.distributed.parallelize import clip_grad_norm
from langgraft.errors import UserError
from langgraft.model.families import attention_groups
from langgraft.train.data import PreparedDataset
from langgraft.train.evaluate import evaluate
from langgraft.train.exportmeta import export_meta, stage_templates
from langgraft.train.loader import StepLoader
from langgraft.train.loss import Collator, MicroBatch
from langgraft.train.metrics import (
    MetricsLogger,
    NoMetrics,
    Throughput,
    attention_dim,
    matmul_params,
    mfu,
    training_flops,
)
from langgraft.train.optim import build_optimizer, optimizer_step
from langgraft.train.recipe import Recipe
from langgraft.train.resume import apply_resumed_hyper, check_resume
from langgraft.train.setup import NeftHook, StagePlan, configure_trainable, plan_stage
from langgraft.train.step import DivergenceGuard, accumulate, step_totals

log = logging.getLogger(__name__)

# Fault injection for the kill-and-resume test: SIGKILL after this global step is logged.
_KILL_AT_STEP = "LANGGRAFT_TEST_KILL_AT_STEP"
_KILL_RANK = "LANGGRAFT_TEST_KILL_RANK"  # only this rank (default: every rank)
_KILL_SIGNAL = "LANGGRAFT_TEST_KILL_SIGNAL"  # e.g. SIGSTOP: a frozen rank (default SIGKILL)


@dataclass
class _StageRun:
    """What one stage's loop holds besides the trainer's own state."""

    optimizer: Any
    scheduler: Any
    scaler: Any  # GradScaler under fp16, else None
    neft: NeftHook | None
    trainable: list[torch.Tensor]
    wrapped: Any  # DDP around the model, or the model itself
    bar: Any


class Trainer:
    def __init__(
        self,
        recipe: Recipe,
        model: Any,
        tokenizer: Any,
        tokenizer_id: dict[str, str],
        device: torch.device,
        pad_id: int,
        max_length: int,
        where: str = "recipe",
        dims: ParallelDims | None = None,
        datasets: dict[str, PreparedDataset] | None = None,
    ) -> None:
        self.recipe, self.model, self.tokenizer = recipe, model, tokenizer
        self.device, self.pad_id, self.max_length = device, pad_id, max_length
        self.out = Path(recipe.out)
        self.where = where
        self.dims = dims or ParallelDims(recipe.plugin, 1)
        # Data follows the data-parallel rank: the tp ranks of one group take the same rows.
        self.rank, self.world = self.dims.dp_rank, self.dims.dp
        self.main = rank() == 0
        # Already opened (and checked) by train/cli.py, by path; the others open here.
        opened = dict(datasets or {})
        self.datasets: dict[str, PreparedDataset] = {
            d.path: opened[d.path] for s in recipe.stages for d in s.data if d.path in opened
        }
        # Plan every stage up front: a bad budget in stage 3 fails before stage 1 trains.
        self.plans = [
            plan_stage(recipe, i, self.datasets, max_length, where, self.world)
            for i in range(len(recipe.stages))
        ]
        for ds in self.datasets.values():
            ds.check_tokenizer(tokenizer_id, recipe.tokenizer or recipe.model)
        self.eval_sets = [opened.get(p) or PreparedDataset(p) for p in recipe.eval.data]
        for ds in self.eval_sets:
            ds.check_tokenizer(tokenizer_id, recipe.tokenizer or recipe.model)
        self.chat_templates = stage_templates(recipe, self.datasets, where)  # for the exports
        self.stage = 0
        self.stage_step = 0
        self.global_step = 0
        self.tokens_seen = 0
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(recipe.precision)
        self.mask_dtype = amp or torch.float32
        self.guard = DivergenceGuard(device)
        self._pending_tokens = torch.zeros((), dtype=torch.int64, device=device)
        # Each layer type's sliding window goes into the document masks (model/families.py).
        windows = tuple(attention_groups(model.config).items())
        self.collate = Collator(pad_id, recipe.attn_implementation, self.mask_dtype,
                                windows=windows)  # fmt: skip
        self.loader: StepLoader | None = None
        if self.dims.fsdp and amp is not None:
            amp = None  # FSDP2's MixedPrecisionPolicy computes in bf16 (torchtitan: no autocast)
        self.autocast = (
            (lambda: torch.autocast(device.type, dtype=amp)) if amp else contextlib.nullcontext
        )

    def state_dict(self, plan: StagePlan) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "stage_name": plan.stage.name,
            "stage_step": self.stage_step,
            "stage_total_steps": plan.total_steps,
            "global_step": self.global_step,
            "tokens_seen": self.tokens_seen,
            "sampler": self._sampler_state(plan),
            "dp": self.world,
            "plugin": self.dims.plugin,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stage, self.stage_step = state["stage"], state["stage_step"]
        self.global_step, self.tokens_seen = state["global_step"], state["tokens_seen"]

    def _device_flops(self, micro: list[MicroBatch]) -> float:
        """Model FLOPs of this rank's share of the step, per device (metrics.py convention):
        the tp ranks of a group split the same rows."""
        cfg = self.model.config
        flops = training_flops(
            self._matmul_weights, sum(mb.num_tokens for mb in micro),
            sum(mb.causal_pairs for mb in micro), cfg.num_hidden_layers, attention_dim(cfg),
        )  # fmt: skip
        return flops / self.dims.tp

    def _sampler_state(self, plan: StagePlan) -> dict[str, Any]:
        """The position after the last consumed step (the loader thread may have read on)."""
        return self.loader.state_dict() if self.loader else plan.sampler.state_dict()

    def _start_loader(self, plan: StagePlan) -> None:
        """Collate the next steps in a background thread, from the sampler's current state."""
        self._close_loader()
        if self.recipe.compile and not self.collate.impl.startswith("flash"):
            # One micro-batch shape per stage (its data's packed length): a width that changes
            # from step to step would make torch.compile recompile the layers.
            width = max(ds.max_length for ds in plan.sampler.sources)
            self.collate = Collator(self.pad_id, self.collate.impl, self.mask_dtype, width,
                                    self.collate.windows)  # fmt: skip
        self.loader = StepLoader(
            plan.sampler, self.collate, plan.stage.micro_batch_size, self.rank, self.world,
            pin_memory=self.device.type == "cuda",
        )  # fmt: skip

    def _close_loader(self) -> None:
        """Stop the thread; its consumed state stays readable for the stage-end checkpoint."""
        if self.loader is not None:
            self.loader.close()

    def train(self, resume: Path | None = None) -> dict[str, Any]:
        recipe = self.recipe
        resumed_state = ckpt.read_trainer_state(resume) if resume is not None else None
        if resumed_state is not None:
            assert resume is not None
            saved_recipe = ckpt.read_recipe(resume)
            check_resume(saved_recipe, to_dict(recipe), resumed_state, self.world, str(resume))
            self.saved_stages = saved_recipe["stages"]
            self.load_state_dict(resumed_state)
            log.info("resuming from %s (global step %d)", resume, self.global_step)
            if self.stage_step >= resumed_state["stage_total_steps"]:
                # Saved at a stage end (after its export): the next stage starts from its
                # weights with a fresh optimizer, as it would have without the interruption.
                assert resume is not None
                ckpt.load_model_weights(self.model, resume)
                ckpt.load_rng_state(resume)
                self.stage, self.stage_step, resume = self.stage + 1, 0, None
        resume_step = self.global_step if resumed_state is not None else None
        metrics: MetricsLogger | NoMetrics = NoMetrics()
        if self.main:  # one writer: rank 0
            metrics = MetricsLogger(self.out, recipe.tensorboard, resume_step)
        summary: dict[str, Any] = {"stages": []}
        try:
            for i in range(self.stage, len(self.plans)):
                summary["stages"].append(self._run_stage(self.plans[i], metrics, resume))
                resume = None
        finally:
            self._close_loader()
            metrics.close()
        summary.update(global_step=self.global_step, tokens_seen=self.tokens_seen)
        return summary

    def _run_stage(self, plan: StagePlan, metrics: MetricsLogger, resume: Path | None) -> dict:
        recipe = self.recipe
        run = self._begin_stage(plan, resume)
        kill_at = os.environ.get(_KILL_AT_STEP)
        last_loss = float("nan")
        saved_at = -1
        while self.stage_step < plan.total_steps:
            last_loss = self._train_step(plan, run, metrics)
            if kill_at is not None and int(kill_at) == self.global_step:
                if os.environ.get(_KILL_RANK, str(rank())) == str(rank()):
                    os.kill(os.getpid(), getattr(signal, os.environ.get(_KILL_SIGNAL, "SIGKILL")))
            every = recipe.checkpoint.save_interval
            if every and self.global_step % every == 0 and self.stage_step < plan.total_steps:
                self._save(plan, run.optimizer, run.scheduler, run.scaler)
                saved_at = self.global_step
            # every rank: a sharded model's forward is collective (rank 0 writes the row); the
            # stage's last step is evaluated once, by _end_stage (after a LoRA merge)
            at = recipe.eval.interval
            if at and self.global_step % at == 0 and self.stage_step < plan.total_steps:
                metrics.write(self._eval_row(plan))
                self.model.train()
        export = self._end_stage(plan, run, metrics, saved_at)
        return {
            "name": plan.stage.name, "steps": plan.total_steps, "final_loss": last_loss,
            "export": str(export) if export else None,
        }  # fmt: skip

    def _begin_stage(self, plan: StagePlan, resume: Path | None) -> _StageRun:
        """Trainable set, a fresh AdamW + schedule (or the checkpoint's), NEFTune, DDP."""
        recipe, stage = self.recipe, plan.stage
        if resume is None:
            self.stage, self.stage_step = plan.index, 0
        self.model = configure_trainable(self.model, stage)
        optimizer, scheduler = build_optimizer(self.model, stage, plan.total_steps)
        scaler = torch.amp.GradScaler(self.device.type) if recipe.precision == "fp16" else None
        if resume is not None:
            ckpt.load_checkpoint(resume, self.model, optimizer, scheduler, scaler)
            plan.sampler.load_state_dict(ckpt.read_trainer_state(resume)["sampler"])
            apply_resumed_hyper(optimizer, scheduler, stage, self.saved_stages[plan.index])
        neft = None
        if stage.neft_alpha:
            neft = NeftHook(self.model.get_input_embeddings(), stage.neft_alpha)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        # DDP over this stage's trainable parameters (identity with one process); self.model
        # stays the unwrapped model for clipping, eval, checkpoints and export.
        wrapped = data_parallel(self.model, self.device, self.dims.plugin)
        log.info(
            "stage %d/%d %r: %d steps (%d warm-up), ~%s tokens per step, %d bucket(s)",
            plan.index + 1, len(self.plans), stage.name, plan.total_steps, plan.warmup_steps,
            f"{plan.tokens_per_step:,.0f}", plan.sampler.num_buckets,
        )  # fmt: skip
        bar = tqdm(
            total=plan.total_steps, initial=self.stage_step, desc=stage.name, unit="step",
            disable=not recipe.progress or not self.main, dynamic_ncols=True,
        )  # fmt: skip
        self.meter = Throughput()
        self._matmul_weights = matmul_params(self.model)  # per stage: LoRA adds matmuls
        self._start_loader(plan)
        self.model.train()
        return _StageRun(optimizer, scheduler, scaler, neft, trainable, wrapped, bar)

    def _train_step(self, plan: StagePlan, run: _StageRun, metrics: MetricsLogger) -> float:
        """One optimizer step over the step's global rows; returns its (global) loss on a
        logging step, NaN on the others (their loss is never read on the host: step.py)."""
        recipe, stage, meter = self.recipe, plan.stage, self.meter
        meter.start()
        assert self.loader is not None
        micro = self.loader.next()
        logged = (self.global_step + 1) % recipe.log_interval == 0 or (
            self.stage_step + 1 == plan.total_steps
        )
        res = accumulate(
            run.wrapped, micro, self.device, self.autocast, run.scaler, run.neft, self.dims
        )
        if run.scaler is not None:
            run.scaler.unscale_(run.optimizer)
        clip = stage.grad_clip if stage.grad_clip > 0 else float("inf")
        grad_norm = clip_grad_norm(run.trainable, clip)
        lr = run.scheduler.get_last_lr()[0]
        if run.scaler is None:  # under fp16 a non-finite step is GradScaler's business
            self.guard.update(self.global_step + 1, grad_norm, res.row_sums)
            self.guard.arm(run.optimizer)
        optimizer_step(run.optimizer, run.scheduler, run.scaler)
        self._pending_tokens += res.counts[1]
        meter.stop(self._device_flops(micro))
        self.stage_step += 1
        self.global_step += 1
        loss = float("nan")
        if logged:
            self._check_diverged(plan)
            loss, supervised, _, cats = step_totals(res, self.device, self.dims)
            if not math.isfinite(loss):
                raise UserError(self._diverged(plan, self.global_step, f"loss {loss}",
                                               float(grad_norm)))  # fmt: skip
            window = self._flush_tokens()
            row = self._row(plan, loss, cats, lr, float(grad_norm), supervised, meter.rate(window))
            metrics.write(row)
            run.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{row['tok_s']:,.0f}")
        run.bar.update(1)
        return loss

    def _flush_tokens(self) -> int:
        """Add the tokens of the steps since the last flush to `tokens_seen` (one host read);
        returns how many they were."""
        n = int(self._pending_tokens.item())
        self._pending_tokens.zero_()
        self.tokens_seen += n
        return n

    def _check_diverged(self, plan: StagePlan) -> None:
        bad = self.guard.check()
        if bad is not None:
            step, loss_sum, norm = bad
            loss = f"summed loss {loss_sum} on rank {self.rank}"  # a quiet step: not reduced
            raise UserError(self._diverged(plan, step, loss, norm))

    def _end_stage(
        self, plan: StagePlan, run: _StageRun, metrics: MetricsLogger, saved_at: int
    ) -> Path | None:
        """LoRA merge, the stage-end eval, the HF export and a weights-only checkpoint."""
        recipe, stage = self.recipe, plan.stage
        run.bar.close()
        self._close_loader()
        run.wrapped = None  # drops DDP's gradient hooks before the next stage re-wraps
        if run.neft is not None:
            run.neft.remove()
        if stage.lora_rank:
            # Fold the adapters into the weights: the export is a plain HF model and the next
            # stage (LoRA or not) starts from the merged weights.
            self.model = self.model.merge_and_unload()
        if recipe.eval.interval:
            metrics.write(self._eval_row(plan))
        export = None
        if recipe.checkpoint.export_hf:  # every rank: they hold the same weights
            self._check_finite_weights("export")
        if recipe.checkpoint.export_hf:  # collective: the weights are gathered, rank 0 writes
            meta = export_meta(recipe, plan, self.chat_templates[plan.index], self.state_dict(plan))
            export = export_hf(
                self.model, self.tokenizer,
                self.out / "export" / f"stage-{plan.index}-{stage.name}", to_dict(recipe), meta,
            )  # fmt: skip
            log.info("stage %r exported to %s", stage.name, export)
        if saved_at != self.global_step:
            # Weights only: a resume from a stage end starts the next stage with a fresh
            # optimizer, and after a LoRA merge this stage's optimizer no longer fits the model.
            self._save(plan, None, run.scheduler, run.scaler)
        return export

    def _row(self, plan, loss, cats, lr, grad_norm, supervised, tok_s) -> dict[str, Any]:
        row: dict[str, Any] = {
            "step": self.global_step, "stage": plan.index, "stage_step": self.stage_step,
            "epoch": self._sampler_state(plan)["epoch"], "loss": loss, "lr": lr, "grad_norm": grad_norm,
            "supervised_tokens": supervised, "tokens_seen": self.tokens_seen,
            "tok_s": tok_s, "time": time.time(),
        }  # fmt: skip
        for c, (s, n) in sorted(cats.items()):
            if n:
                row[f"loss/{c}"] = s / n
        if self.device.type == "cuda":
            row["memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
            # per device, FLOPs at the real per-document lengths (metrics.py: convention)
            row["mfu"] = mfu(self.meter.flops_per_s, self.device)
        return row

    def _eval_row(self, plan: StagePlan) -> dict[str, Any]:
        row: dict[str, Any] = {"step": self.global_step, "stage": plan.index}
        row.update(
            evaluate(
                self.model, self.tokenizer, self.recipe.eval, self.eval_sets, self.device,
                self.collate, plan.stage.micro_batch_size, self.autocast, self.dims,
            )
        )  # fmt: skip
        log.info("eval at step %d: %s", self.global_step,
                 ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k.startswith("eval/")))  # fmt: skip
        return row

    def _diverged(self, plan: StagePlan, step: int, loss: str, grad_norm: float) -> str:
        latest = ckpt.find_checkpoint(self.out, "auto") if self.main else None
        stage_step = self.stage_step - (self.global_step - step)
        return (
            f"stage {plan.stage.name!r} step {stage_step} (global step {step}): {loss}, "
            f"gradient norm {grad_norm}: training diverged; no update was applied "
            "from this step on (no export). Last good checkpoint: "
            f"{latest or 'none yet'}. Lower the learning rate, or use bf16 instead of fp16"
        )

    def _check_finite_weights(self, what: str) -> None:
        """Never save or export NaN/inf weights (the loss guard catches most divergence one step
        late: the update that broke the weights happens after that step's finite loss)."""
        bad = [n for n, p in self.model.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            raise UserError(
                f"step {self.global_step}: non-finite weights in {', '.join(bad[:3])}; not "
                f"writing the {what}. Last good checkpoint: "
                f"{ckpt.find_checkpoint(self.out, 'auto') or 'none yet'}; lower the learning rate"
            )

    def _save(self, plan: StagePlan, optimizer: Any, scheduler: Any, scaler: Any) -> None:
        self._check_diverged(plan)  # never a checkpoint of a run whose updates stopped
        self._flush_tokens()
        self._check_finite_weights("checkpoint")
        path = ckpt.save_checkpoint(
            self.out / "checkpoints", self.global_step, self.model, optimizer, scheduler, scaler,
            self.state_dict(plan), to_dict(self.recipe), self.recipe.checkpoint.keep_last,
        )  # fmt: skip
        log.debug("checkpoint %s", path)
