"""The training-time eval hook: held-out loss per category and the CMMLU multiple-choice probe
(real files) land in metrics.jsonl, so forgetting is visible during training."""

from __future__ import annotations

import json

import torch
from train_helpers import SHARED, prepared, tiny_model, write_recipe

from langgraft.__main__ import main


def test_eval_hook_writes_heldout_loss_and_mc_probe(tmp_path):
    torch.set_num_threads(1)
    model = tiny_model(tmp_path / "model")
    train = prepared(tmp_path / "train", model, {"en": 40, "zh": 40})
    held = prepared(tmp_path / "held", model, {"en": 8, "zh": 8}, seed=7)
    cfg = write_recipe(tmp_path / "r.yaml", {
        "model": str(model), "out": str(tmp_path / "run"), "progress": False,
        "train": {"micro_batch_size": 4, "warmup_steps": 0},
        "eval": {"interval": 2, "data": [str(held)], "max_rows": 8, "mc_task": "cmmlu",
                 "mc_data": str(SHARED / "eval" / "cmmlu"), "mc_limit": 1},
        "stages": [{"name": "s", "data": [{"path": str(train)}], "steps": 4}],
    })  # fmt: skip
    assert main(["train", "--config", str(cfg)]) == 0
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/held/loss" in r]
    assert len(evals) >= 2  # every 2 steps and at the stage end
    for r in evals:
        assert r["eval/held/loss/en"] > 0 and r["eval/held/loss/zh"] > 0
        acc = r["eval/cmmlu/first_token_acc"]
        assert 0.0 <= acc <= 1.0
    cats = {k.rsplit("/", 1)[1] for k in evals[-1] if k.startswith("eval/cmmlu/first_token_acc/")}
    assert {"STEM", "Humanities", "Social Science", "Other"} <= cats  # every CMMLU category probed
