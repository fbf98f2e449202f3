"""The demo's sizes and training recipe: Colossal-LLaMA-2's three stages at stories260K scale,
and the no-replay control. `train` runs a recipe through the real `langgraft train` parser."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
    cmmlu_limit: int


FULL = Scale(120_000, 2048, None, 30_000, (60, 250, 100), 2, 50, 5)
QUICK = Scale(24_000, 1024, 120_000, 8_000, (30, 90, 40), 1, 40, 1)


def demo_recipe(model: Path, data: dict[str, Path], run: Path, s: Scale, progress: bool) -> dict:
    """The three stages of Colossal-LLaMA-2 at stories260K scale (recipes/demo-stories260k.yaml
    with a gentler warm-up). stories260K ties embed_tokens and lm_head, so the warm-up moves the
    old rows too: at lr 1e-2 it alone took the original-domain probe from 0.83 to 1.97 bits/char
    (--quick), at 2e-3 to 0.86. The replay stage's lr 3e-3 (not 1e-3) recovers more of the
    original domain in the same steps (1.18 vs 1.33 bits/char, --quick)."""
    zh, en = str(data["zh-train"]), str(data["en-train"])
    return {
        "model": str(model), "out": str(run), "seed": 1024, "precision": "fp32",
        "progress": progress, "tensorboard": False,
        "train": {"micro_batch_size": 8, "accumulation_steps": s.accumulation, "lr": 3.0e-3,
                  "min_lr_ratio": 0.1, "weight_decay": 0.01, "grad_clip": 1.0},
        "checkpoint": {"save_interval": 0, "keep_last": 1},
        "eval": {"interval": s.eval_interval, "max_rows": 32,
                 "data": [str(data["zh-heldout"]), str(data["en-heldout"])]},
        "stages": [
            {"name": "embeddings", "data": [{"path": zh}], "steps": s.steps[0], "lr": 2.0e-3,
             "freeze_non_embeds_params": True},
            {"name": "injection", "data": [{"path": zh}], "steps": s.steps[1]},
            {"name": "replay", "data": [{"path": zh, "weight": 0.1}, {"path": en}],
             "steps": s.steps[2], "lr": 3.0e-3},
        ],
    }  # fmt: skip


def train(recipe: dict, path: Path, init_from: Path | None = None) -> Path:
    import yaml

    from langgraft.train import cli as train_cli

    path.write_text(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True))
    from langgraft.__main__ import build_parser

    # through the real parser, so the train command's defaults (new options included) apply
    argv = ["train", "--config", str(path)] + (["--init-from", str(init_from)] if init_from else [])
    if train_cli.run(build_parser().parse_args(argv)) != 0:
        raise UserError(f"training from {path} failed")
    return Path(recipe["out"])


def no_replay_recipe(recipe: dict, out: Path) -> dict:
    """The replay stage again with the same budget, Chinese only: the control for forgetting."""
    stage = dict(recipe["stages"][2], name="no-replay", data=[recipe["stages"][1]["data"][0]])
    return {**recipe, "out": str(out), "stages": [stage]}
