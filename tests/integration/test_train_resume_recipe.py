"""Resume against a changed recipe (issue 15, training 1): the checkpoint keeps its recipe; keys
that would change the meaning of the started stages are refused by name, lr / weight decay are
applied from the resume step (not silently reverted by the restored optimizer), and stages that
have not started may change freely."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from train_helpers import two_languages, write_recipe  # noqa: E402

from langgraft.__main__ import main  # noqa: E402
from langgraft.train.optim import build_optimizer, lr_at, warmup_steps_for  # noqa: E402
from langgraft.train.recipe import StageConfig  # noqa: E402
from langgraft.train.resume import apply_resumed_hyper  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> dict:
    """A run killed after step 3 of stage 0 (latest checkpoint: step 2)."""
    s = two_languages(tmp_path_factory.mktemp("resume-recipe"))
    out = s["t"] / "run"
    r = {
        "model": str(s["model"]), "out": str(out), "progress": False, "tensorboard": False,
        "train": {"micro_batch_size": 2, "accumulation_steps": 2, "lr": 3e-3},
        "checkpoint": {"save_interval": 2, "keep_last": 5, "export_hf": False},
        "stages": [
            {"name": "a", "data": [{"path": str(s["zh"])}], "steps": 6, "warmup_steps": 1},
            {"name": "b", "data": [{"path": str(s["en"])}], "steps": 2},
        ],
    }  # fmt: skip
    cfg = write_recipe(s["t"] / "run.yaml", r)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LANGGRAFT_TEST_KILL_AT_STEP": "3"}
    cmd = [sys.executable, "-m", "langgraft", "train", "--config", str(cfg)]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode != 0
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-00000002"
    return {"cfg": cfg, "out": out}


@pytest.mark.parametrize(
    "override, named",
    [
        (["--stages.0.steps=8"], "stages[0].steps (6 -> 8)"),
        (["--seed=7"], "seed (1024 -> 7)"),
        (["--stages.0.adam_beta2=0.99"], "stages[0].adam_beta2 (0.95 -> 0.99)"),
        (["--train.accumulation_steps=4"], "stages[0] global batch (2 x 2 x 1 rank(s) = 4 -> "),
    ],
)
def test_changed_meaning_is_refused_by_name(killed, capsys, override, named) -> None:
    rc = main(["train", "--config", str(killed["cfg"]), "--resume", "auto", *override])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert named in err and "--init-from" in err
    assert (killed["out"] / "checkpoints" / "latest").read_text().strip() == "step-00000002"


def test_lr_override_applies_from_the_resume_step(killed, tmp_path) -> None:
    out = killed["out"]
    # a changed later stage is fine: it has not started
    args = ["train", "--config", str(killed["cfg"]), "--resume", "auto", "--stages.0.lr=1e-3",
            "--stages.0.weight_decay=0.0", "--stages.1.steps=3"]  # fmt: skip
    assert main(args) == 0
    got = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    got = [r for r in got if "loss" in r and r["stage"] == 0]
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]
    warm = warmup_steps_for(StageConfig(warmup_steps=1), 6)
    for r in got:
        peak = 3e-3 if r["step"] <= 2 else 1e-3  # the old lr before the resume, the new after
        assert r["lr"] == pytest.approx(lr_at(r["step"] - 1, peak, 6, warm, 0.1), rel=1e-12)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["global_step"] == 9  # stage b ran its new budget of 3 steps


def test_apply_resumed_hyper_overrides_restored_groups() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    old = StageConfig(lr=1e-2, weight_decay=0.1, warmup_steps=0)
    opt, sched = build_optimizer(model, old, total_steps=10)
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    sched.step()
    saved_opt, saved_sched = opt.state_dict(), sched.state_dict()
    new = StageConfig(lr=4e-3, weight_decay=0.0, warmup_steps=0)
    opt2, sched2 = build_optimizer(model, new, total_steps=10)
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved_sched)
    assert opt2.param_groups[0]["lr"] == pytest.approx(1e-2 * lr_at(1, 1, 10, 0, 0.1))  # reverted
    apply_resumed_hyper(opt2, sched2, new, {"lr": 1e-2, "weight_decay": 0.1})
    assert [g["weight_decay"] for g in opt2.param_groups] == [0.0, 0.0]
    assert opt2.param_groups[0]["lr"] == pytest.approx(4e-3 * lr_at(1, 1, 10, 0, 0.1))
    sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(4e-3 * lr_at(2, 1, 10, 0, 0.1))
