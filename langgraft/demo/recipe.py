"""The demo's sizes and training recipe: Colossal-LLaMA-2's three stages at stories260K scale,
and the no-replay control. `train` runs a recipe through the real `langgraft train` parser."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from langgraft.errors import UserError


@dataclass(frozen=True)
class Scale:
    replay_tokens: int  # self-replay samples (train + held-out)
    vocab: int  # expanded vocabulary size
    zh_train_chars: int | None  # cap per Chinese training corpus (None: all)
    heldout_chars: int  # per held-out corpus
    steps: tuple[int, int, int]  # embeddings, injection, replay
    accumulation: int
    eval_interval: int
    cmmlu_limit: int  # questions per CMMLU subject; 0: no CMMLU probe
    max_length: int = 256  # tokens per packed training sequence
    micro_batch: int = 8
    eval_rows: int = 32  # held-out rows per dataset in the trainer's evaluations
    sample_tokens: int = 60  # greedy tokens per prompt in the evaluation's generations
    replay_max_new: int | None = None  # longest self-replay sample (None: the model's context)
    replay_heldout: float = 0.1  # fraction of the self-replay samples held out as the probe


FULL = Scale(120_000, 2048, None, 30_000, (60, 250, 100), 2, 50, 5)
QUICK = Scale(24_000, 1024, 120_000, 8_000, (30, 90, 40), 1, 40, 1)
STORIES260K_VOCAB = 512
STORIES260K_WEIGHTS_PER_TOKEN = 259_328  # weights_per_token(stories260K's config.json)
# What a model 500x stories260K's cost still gets (SmolLM2-135M is 519x): budgets divided by the
# cost would leave it ~3k training tokens, too few to move anything. Measured on 2 cores, one
# thread: SmolLM2-135M trains at ~40 tokens/s, forwards at ~140 (stories260K: ~4,400 / 40,000).
FLOOR = {"train_tokens": 20_480, "replay_tokens": 6_000, "heldout_chars": 3_000}
QUICK_FLOOR = {"train_tokens": 5_120, "replay_tokens": 2_000, "heldout_chars": 1_200}


def weights_per_token(config: dict[str, Any]) -> int:
    """Weights a token is multiplied by in a forward (decoder layers + lm_head; ~2 FLOPs each,
    6 with the backward): the cost of a token, from a LLaMA-family config.json."""
    d, layers = config["hidden_size"], config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    kv = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or d // heads
    layer = d * head_dim * (2 * heads + 2 * kv) + 3 * d * config["intermediate_size"]
    return layers * layer + d * config["vocab_size"]


def scale_for(config: dict[str, Any], quick: bool) -> Scale:
    """The demo's sizes for the model of `config.json`. stories260K (and anything under twice
    its cost per token) gets FULL / QUICK, the sizes the recipe was tuned at; a larger model
    gets token budgets divided by its cost ratio, but never below FLOOR / QUICK_FLOOR, in
    steps of 2 rows x 128 tokens, self-replay samples of <= 64 tokens (a quarter held out: 2,000
    tokens hold ~30 samples, and 10% of 18 once held out none), and no CMMLU probe (5-shot prompts of 67 subjects take
    hours at a 135M model's CPU speed; --cmmlu-limit asks for it anyway). The vocabulary
    grows by stories260K's +1,536 (+512 --quick) or a twelfth (a 24th) of the source's,
    whichever is larger, rounded up to 64: SmolLM2's 49,152 + 4,096."""
    base, floor = (QUICK, QUICK_FLOOR) if quick else (FULL, FLOOR)
    source = config["vocab_size"]
    grow = max(base.vocab - STORIES260K_VOCAB, -(-source // (24 if quick else 12) // 64) * 64)
    ratio = weights_per_token(config) / STORIES260K_WEIGHTS_PER_TOKEN
    if ratio < 2:
        return replace(base, vocab=source + grow)
    max_length, micro_batch = 128, 2
    base_tokens = sum(base.steps) * base.micro_batch * base.accumulation * base.max_length
    tokens = max(base_tokens / ratio, floor["train_tokens"])
    total = max(round(tokens / (max_length * micro_batch)), 12)
    steps = [max(2, round(total * k / sum(base.steps))) for k in base.steps]
    return replace(
        base, vocab=source + grow, steps=(steps[0], steps[1], steps[2]), accumulation=1,
        replay_tokens=max(round(base.replay_tokens / ratio), floor["replay_tokens"]),
        heldout_chars=max(round(base.heldout_chars / ratio), floor["heldout_chars"]),
        eval_interval=0, cmmlu_limit=0, max_length=max_length, micro_batch=micro_batch,
        eval_rows=8, sample_tokens=24, replay_max_new=64, replay_heldout=0.25,
    )  # fmt: skip


INJECTION_REPLAY = 0.2
"""Fraction of the injection stage's rows that are self-replay English."""
REPLAY_ZH = 0.1
"""Fraction of the replay stage's rows that are Chinese (the rest is self-replay English)."""


def rows(data: Path) -> int:
    """Packed rows of a prepared dataset (checked against its manifest on open)."""
    from langgraft.train.data import PreparedDataset

    return sum(b.num_rows for b in PreparedDataset(data).buckets)


def mix(main: Path, extra: Path, fraction: float) -> list[dict[str, Any]]:
    """Sources where `extra` makes `fraction` of the rows of a pass and `main` keeps weight 1.
    A source's weight counts its own rows, so a fixed weight would mean another mixture at
    another scale; the fraction is what the recipe means."""
    weight = fraction / (1 - fraction) * rows(main) / rows(extra)
    return [{"path": str(main)}, {"path": str(extra), "weight": round(weight, 4)}]


def demo_recipe(model: Path, data: dict[str, Path], run: Path, s: Scale, progress: bool) -> dict:
    """Colossal-LLaMA-2's three stages at stories260K scale, tuned against forgetting. Figures
    are the original-domain probe in bits/char as `eval text` measured it while this was tuned
    (non-overlapping 256-token windows: imported 0.829, full size; 0.880 --quick). With the
    overlapping character windows of 2026-12-07 the imported model reads 0.916 / 0.941 and the
    end of this recipe +3.3% / +4.3% (README); the comparisons below were not re-run:
    - stories260K ties embed_tokens and lm_head, so the embeddings-only warm-up moves the old
      rows too: lr 1e-2 took the probe to 1.97 (--quick), 2e-3 to 0.921, 1e-3 to 0.851.
    - The learning rate is what forgets most. 40 steps on the self-replay English alone, at 3e-3,
      take the probe from 0.880 to 1.04 (5e-4: 0.92; --quick). Chinese-only injection at 3e-3
      then replay at 3e-3 (the first demo recipe) ended at 1.087 (+31%); injection at 1e-3 with
      20% self-replay rows and replay at 5e-4 with 90%, at 0.895 (+8%); injection at 5e-4, at
      0.876; at 3e-4 with replay at 2.5e-4, at 0.869 (+4.8%), modern Chinese 86% below the
      imported model (the target is 80%). A 30% injection mixture changed the end by 0.002.
    Mixtures are fractions of rows (`mix`), so they mean the same at every scale."""
    zh, en = data["zh-train"], data["en-train"]
    replay = mix(en, zh, REPLAY_ZH)[::-1]  # the new language is replayed as well
    return {
        "model": str(model), "out": str(run), "seed": 1024, "precision": "fp32",
        "progress": progress, "tensorboard": False,
        "train": {"micro_batch_size": s.micro_batch, "accumulation_steps": s.accumulation,
                  "lr": 3.0e-4, "min_lr_ratio": 0.1, "weight_decay": 0.01, "grad_clip": 1.0},
        "checkpoint": {"save_interval": 0, "keep_last": 1},
        "eval": {"interval": s.eval_interval, "max_rows": s.eval_rows,
                 "data": [str(data["zh-heldout"]), str(data["en-heldout"])]},
        "stages": [
            {"name": "embeddings", "data": [{"path": str(zh)}], "steps": s.steps[0],
             "lr": 1.0e-3, "freeze_non_embeds_params": True},
            {"name": "injection", "data": mix(zh, en, INJECTION_REPLAY), "steps": s.steps[1]},
            {"name": "replay", "data": replay, "steps": s.steps[2], "lr": 2.5e-4},
        ],
    }  # fmt: skip


def train_together(
    jobs: dict[str, tuple[dict, Path]], log_dir: Path, timeout: float, threads: int | None = None
) -> None:
    """Run `langgraft train --config` for each {name: (recipe, yaml path)} at once, one process
    each, with `threads` torch threads per process: the user's --threads / $OMP_NUM_THREADS,
    else 1. On 2 cores two one-thread trainings of a 260K model do 1.5x the tokens per second of
    one two-thread training (measured: 8.8k vs 5.9k tok/s), and one thread per process is what
    a busy machine leaves room for. The first job's output goes to the terminal; the others' to
    log_dir/NAME.log. Any failure stops them all."""
    import os
    import subprocess
    import sys
    import time

    import yaml

    procs = {}
    n = str(threads or 1)
    env = {**os.environ, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n}
    try:
        for i, (name, (recipe, path)) in enumerate(jobs.items()):
            path.write_text(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True))
            argv = [sys.executable, "-m", "langgraft", "train", "--config", str(path)]
            out = None if i == 0 else open(log_dir / f"{name}.log", "w")  # noqa: SIM115
            procs[name] = (subprocess.Popen(argv, env=env, stdout=out, stderr=out), out)
        deadline = time.monotonic() + timeout
        while procs:
            for name, (proc, out) in list(procs.items()):
                if proc.poll() is None:
                    continue
                del procs[name]
                if out is not None:
                    out.close()
                if proc.returncode != 0:
                    if out is not None:  # a failed demo's --out is removed: show the log now
                        tail = (log_dir / f"{name}.log").read_text(errors="replace")
                        print(f"--- {name}:\n" + "\n".join(tail.splitlines()[-30:]),
                              file=sys.stderr)  # fmt: skip
                    raise UserError(f"training {name} ({jobs[name][1]}) failed: see above")
            if time.monotonic() > deadline:
                raise UserError(f"training did not finish in {timeout:.0f} s")
            time.sleep(0.5)
    finally:
        for proc, out in procs.values():
            proc.kill()
            proc.wait()
            if out is not None:
                out.close()


def same_weights(a: Path, b: Path) -> bool:
    from langgraft.fsutil import sha256_file

    files = sorted(p.name for p in a.glob("*.safetensors"))
    return files == sorted(p.name for p in b.glob("*.safetensors")) and all(
        sha256_file(a / f) == sha256_file(b / f) for f in files
    )


def no_replay_recipe(recipe: dict, out: Path) -> dict:
    """The control for forgetting: the same recipe with no self-replay anywhere. Its warm-up is
    the main recipe's own (Chinese only; same seed, so the same weights: the demo checks the
    two warm-up exports are identical), then injection and replay with the same steps and
    learning rates on Chinese only."""
    warmup, injection, replay = recipe["stages"]
    zh = warmup["data"]  # the warm-up trains on the Chinese source alone
    stages = [warmup, dict(injection, data=zh), dict(replay, name="no-replay", data=zh)]
    return {**recipe, "out": str(out), "progress": False, "stages": stages}
