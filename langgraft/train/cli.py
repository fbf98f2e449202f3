"""`langgraft train`: continual pretraining from a YAML recipe (see docs/train.md).

langgraft train --config recipes/demo-stories260k.yaml
langgraft train --config recipes/demo-stories260k.yaml --resume auto
langgraft train --config RECIPE.yaml --stages.0.lr=1e-3 --train.micro_batch_size=4
langgraft train --config RECIPE.yaml --init-from runs/x/export/stage-0-warmup --dry-run
torchrun --nproc_per_node 2 -m langgraft train --config RECIPE.yaml --plugin=ddp   # data parallel
torchrun --nproc_per_node 8 -m langgraft train --config RECIPE.yaml --plugin=gemini  # FSDP2
torchrun --nproc_per_node 8 -m langgraft train --config RECIPE.yaml --plugin=3d --tp=2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from langgraft.errors import UserError

log = logging.getLogger(__name__)


class _OverridesParser(argparse.ArgumentParser):
    """Collects unknown `--dotted.key=value` options as recipe overrides instead of failing."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        ns, extra = super().parse_known_args(args, namespace)
        ns.overrides = list(getattr(ns, "overrides", None) or []) + extra
        return ns, []


def run(args: argparse.Namespace) -> int:
    from langgraft.distributed.parallel import close_distributed

    with contextlib.ExitStack() as cleanup:
        try:
            return _run(args, cleanup)
        finally:
            close_distributed()


_QUIET_RANK_WAIT_S = 60


@contextlib.contextmanager
def _one_voice() -> Any:
    """Refusals every rank of a node reaches alike (they read the same files): only local rank
    0 prints it, the others exit 2 silently, so torchrun's failure summary follows one message
    per node instead of one per rank (per node, not per job: another node may read other
    files, and a silent node would hide why it failed)."""
    from langgraft.distributed.parallel import local_rank

    try:
        yield
    except UserError:
        if local_rank() != 0:
            # Exiting at once races local rank 0: torchrun stops every rank of the node when
            # the first one exits, often before rank 0 has printed. Waiting lets rank 0 say it
            # (torchrun then ends this process); the timeout covers a rank 0 that does not fail.
            time.sleep(_QUIET_RANK_WAIT_S)
            raise SystemExit(UserError.exit_code) from None
        raise


def _claim_run_dir(args: argparse.Namespace, recipe: Any, resume: Any, cleanup: Any) -> None:
    """Rank 0: lock out/ for this process, then re-check and clear it (see train/rundir.py)."""
    from langgraft.config import to_dict
    from langgraft.train.rundir import RunLock, check_run_dir, clear_run, recipe_inputs

    out = Path(recipe.out)
    lock = RunLock(out)
    cleanup.callback(lock.release)
    # Checked again under the lock: another run may have written out/ since the first check.
    stale = check_run_dir(out, to_dict(recipe), args.resume, resume, args.overwrite)
    clear_run(out, stale, recipe_inputs(recipe, args.init_from))


def _check_inputs_exist(recipe: Any, where: str) -> None:
    """A recipe whose inputs are built by another command (`inputs_built_by`) says so when one
    is missing, instead of a bare "no such directory" about a path the user never made."""
    if not recipe.inputs_built_by:
        return
    paths = [recipe.model, *(d.path for s in recipe.stages for d in s.data), *recipe.eval.data]
    for path in paths:
        if not Path(path).exists():
            raise UserError(
                f"{path}: no such file or directory (the input of {where}; it is built by "
                f"`{recipe.inputs_built_by}`: run that first)"
            )


def _run(args: argparse.Namespace, cleanup: contextlib.ExitStack) -> int:
    import random

    import numpy as np
    import torch

    from langgraft.config import save_resolved, to_dict
    from langgraft.distributed import checkpoint as ckpt
    from langgraft.distributed.dims import parallel_dims
    from langgraft.distributed.parallel import init_distributed, rank, world_size
    from langgraft.model.checks import read_model_config
    from langgraft.tokenizer import load_tokenizer
    from langgraft.train.build import build_model
    from langgraft.train.data import check_recipe_data, tokenizer_identity
    from langgraft.train.recipe import load_recipe
    from langgraft.train.resume import check_resume
    from langgraft.train.rundir import check_run_dir
    from langgraft.train.setup import pad_token_id, pick_device
    from langgraft.train.trainer import Trainer

    with _one_voice():  # the same file on every rank: the same refusal, said once per node
        recipe = load_recipe(args.config, args.overrides)
    # Every degree against the world size and the model's shape, before anything is loaded.
    if args.plan:  # memory planning only: config.json + the recipe, on the meta device
        from langgraft.distributed.plan import plan_report

        world = args.world_size or world_size()
        print(plan_report(recipe, parallel_dims(recipe, world, str(args.config)), args.gpu_memory))
        return 0
    with _one_voice():
        _check_inputs_exist(recipe, str(args.config))  # --plan needs none of them
        dims = parallel_dims(recipe, world_size(), str(args.config))
    main = rank() == 0
    if not main:  # one voice: the other ranks only report problems
        logging.getLogger("langgraft").setLevel(logging.WARNING)
    if args.resume and args.init_from:
        raise UserError("--resume and --init-from exclude each other (full state vs weights)")
    out = Path(recipe.out)
    resume = ckpt.find_checkpoint(out, args.resume) if args.resume else None
    if args.init_from:
        ckpt.check_metadata(Path(args.init_from))  # before anything is loaded
    if resume is not None:  # a refused resume must not touch out/ (recipe.json, the lock)
        check_resume(ckpt.read_recipe(resume), to_dict(recipe), ckpt.read_trainer_state(resume),
                     dims.dp, str(resume))  # fmt: skip
    if main:  # refuse a run directory that holds another run before loading anything
        check_run_dir(out, to_dict(recipe), args.resume, resume, args.overwrite)
    # Damaged or lying prepared data (truncated shards, ids past the embedding, labels that do
    # not fit input_ids) is refused here, before the model is loaded or out/ is touched.
    vocab_rows = int(read_model_config(recipe.model, remote_code_flag=False).get("vocab_size", 0))
    with _one_voice():
        datasets = check_recipe_data(recipe, vocab_rows, str(args.config))
    if args.resume == "auto" and resume is None:  # said once the inputs are known to be good
        log.info("--resume auto: no checkpoint in %s yet; starting from the beginning", out)
    # Per data-parallel rank RNG streams (NEFTune noise differs across dp ranks but must be the
    # same on the tp ranks of one group, whose activations are replicated); the data order does
    # not use them (data.py seeds its own generators).
    seed = recipe.seed + rank() // dims.tp
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    device = init_distributed(pick_device(recipe), single_process_group=dims.sharded,
                              timeout_s=recipe.dist_timeout_s)  # fmt: skip
    dims.build_mesh(device)
    tok_path = recipe.tokenizer or recipe.model
    tokenizer = load_tokenizer(tok_path)
    if len(tokenizer) > vocab_rows:
        raise UserError(
            f"tokenizer {tok_path} has {len(tokenizer)} tokens but the model's embedding has "
            f"{vocab_rows} rows; run `langgraft model expand`"
        )
    # Sharded layouts build on the meta device and read only their own shards (train/build.py).
    init_from = Path(args.init_from) if args.init_from else None
    model = build_model(recipe, dims, device, init_from)
    if init_from is not None:
        log.info("initialised weights from %s", init_from)
    max_length = recipe.max_length or int(model.config.max_position_embeddings)
    trainer = Trainer(
        recipe, model, tokenizer, tokenizer_identity(tokenizer, tok_path), device,
        pad_token_id(tokenizer),
        max_length, where=str(args.config), dims=dims, datasets=datasets,
    )  # fmt: skip
    if args.dry_run:
        if not main:
            return 0
        plans = [
            {"stage": p.stage.name, "steps": p.total_steps, "warmup": p.warmup_steps,
             "tokens_per_step": round(p.tokens_per_step), "rows_per_pass": p.sampler.rows_per_epoch,
             "buckets": p.sampler.num_buckets}
            for p in trainer.plans
        ]  # fmt: skip
        print(json.dumps({"recipe": to_dict(recipe), "plans": plans}, indent=2))
        return 0
    if main:
        _claim_run_dir(args, recipe, resume, cleanup)
        save_resolved(recipe, out / "recipe.json")
    summary = trainer.train(resume)
    if not main:
        return 0
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for s in summary["stages"]:
        print(f"{s['name']}: {s['steps']} steps, final loss {s['final_loss']:.4f}")
    print(f"{summary['global_step']} steps, {summary['tokens_seen']:,} tokens -> {out}")
    return 0


def register(subparsers: Any, name: str = "train") -> None:
    p = subparsers.add_parser(
        name,
        help="continual pretraining from a YAML recipe (stages, buckets, exact resume)",
        description="Train a HF LLaMA-family model through the stages of a YAML recipe. Any "
        "recipe key can be overridden with a dotted option: --train.lr=1e-4, "
        "--stages.0.steps=100, --checkpoint.keep_last=2.",
        allow_abbrev=False,
    )
    p.__class__ = _OverridesParser
    p.add_argument("--config", required=True, type=Path, help="the YAML recipe")
    p.add_argument(
        "--resume",
        metavar="auto|PATH",
        help="continue exactly from a checkpoint: auto = the run's latest (or start fresh if "
        "there is none), or a checkpoint directory",
    )
    p.add_argument(
        "--init-from",
        metavar="PATH",
        help="load weights only (a checkpoint or HF directory) before stage 0, e.g. the export "
        "of a previous run's stage (Colossal --load_checkpoint .../modeling)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an out/ that holds a previous run: deletes that run's "
        "checkpoints/, export/, tensorboard/, metrics.jsonl, summary.json and recipe.json (and "
        "nothing else); without it such a directory is refused unless --resume",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="load, validate and plan every stage (steps, warm-up), print it, train nothing",
    )
    p.add_argument(
        "--plan",
        action="store_true",
        help="print the per-rank memory estimate of the recipe's plugin (parameters, gradients, "
        "AdamW, activations, logits) from the model's config.json alone, on the meta device; "
        "trains nothing, needs no GPU",
    )
    p.add_argument(
        "--world-size",
        type=int,
        default=None,
        metavar="N",
        help="with --plan: the number of ranks (GPUs) to plan for (default: torchrun's "
        "WORLD_SIZE, else 1)",
    )
    p.add_argument(
        "--gpu-memory",
        type=float,
        default=80.0,
        metavar="GIB",
        help="with --plan: memory per GPU in GiB to check the estimate against (default: 80)",
    )
    p.set_defaults(func=run, overrides=[])
