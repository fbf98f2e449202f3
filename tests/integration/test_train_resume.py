"""End-to-end runs of `langgraft train` in subprocesses on a tiny model and real `prepare`
output: kill -9 and resume gives bit-identical per-step losses and final weights; a crash in the
middle of a checkpoint leaves the previous one usable; frozen weights stay bit-identical;
budgets that cannot work are refused before training, naming the key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from train_helpers import (  # noqa: E402
    TOK512,
    prepared,
    swap_two_pieces,
    tiny_model,
    two_languages,
    write_recipe,
)

from langgraft.__main__ import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    return two_languages(tmp_path_factory.mktemp("train-e2e"))


def recipe(setup: dict[str, Path], out: Path, **extra) -> Path:
    r = {
        "model": str(setup["model"]),
        "out": str(out),
        "progress": False,
        "tensorboard": True,
        "train": {"micro_batch_size": 2, "accumulation_steps": 2, "lr": 3e-3},
        "checkpoint": {"save_interval": 3, "keep_last": 2},
        "stages": [
            {"name": "warm", "data": [{"path": str(setup["zh"])}], "steps": 4,
             "freeze_non_embeds_params": True, "lr": 1e-2},
            {"name": "mix", "data": [{"path": str(setup["zh"])},
                                     {"path": str(setup["en"]), "weight": 0.5}],
             "steps": 6, "neft_alpha": 5.0},
        ],
    }  # fmt: skip
    r.update(extra)
    return write_recipe(out.parent / f"{out.name}.yaml", r)


def train(config: Path, *args: str, env: dict[str, str] | None = None) -> int:
    e = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    cmd = [sys.executable, "-m", "langgraft", "train", "--config", str(config), *args]
    return subprocess.run(
        cmd, cwd=ROOT, env=e, capture_output=True, text=True, timeout=300
    ).returncode


def rows(out: Path) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines]


def curve(out: Path) -> list[tuple]:
    return [(r["step"], r["loss"], r["grad_norm"], r["lr"], r["tokens_seen"]) for r in rows(out)]


def test_kill_and_resume_is_exact(setup) -> None:
    t = setup["t"]
    straight = t / "straight"
    assert train(recipe(setup, straight)) == 0
    ref = curve(straight)
    assert [r[0] for r in ref] == list(range(1, 11))

    run = t / "killed"
    cfg = recipe(setup, run)
    ck = run / "checkpoints"
    # 1) SIGKILL in the middle of writing step 6's checkpoint: step 4 (the stage end) stays latest.
    rc = train(cfg, env={"LANGGRAFT_TEST_KILL_IN_SAVE": "6"})
    assert rc == -signal.SIGKILL
    assert (ck / "latest").read_text().strip() == "step-00000004"
    assert not (ck / "step-00000006").exists() and list(ck.glob(".tmp-step-00000006-*"))
    # 2) resume across the stage boundary, then SIGKILL after step 8 (latest is step 6).
    rc = train(cfg, "--resume", "auto", env={"LANGGRAFT_TEST_KILL_AT_STEP": "8"})
    assert rc == -signal.SIGKILL
    assert (ck / "latest").read_text().strip() == "step-00000006"
    assert [r[0] for r in curve(run)] == list(range(1, 9))
    # 3) resume to the end.
    assert train(cfg, "--resume", "auto") == 0
    assert curve(run) == ref  # every step's loss, grad norm, lr and tokens, bit for bit
    a = load_file(str(straight / "export" / "stage-1-mix" / "model.safetensors"))
    b = load_file(str(run / "export" / "stage-1-mix" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # keep_last 2, and no leftovers of the crashed save
    assert sorted(p.name for p in ck.glob("step-*")) == ["step-00000009", "step-00000010"]
    assert not list(ck.glob(".tmp-*"))
    state = json.loads((ck / "step-00000010" / "trainer_state.json").read_text())
    assert state["stage"] == 1 and state["stage_step"] == 6 and state["global_step"] == 10
    assert len(state["sampler"]["consumed_per_bucket"]) == 2
    assert list((run / "tensorboard").iterdir())


def test_frozen_weights_are_bit_identical_and_export_loads(setup) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = setup["t"] / "straight"
    if not (out / "export").exists():  # when run alone
        assert train(recipe(setup, out)) == 0
    before = load_file(str(setup["model"] / "model.safetensors"))
    after = load_file(str(out / "export" / "stage-0-warm" / "model.safetensors"))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"model.embed_tokens.weight"}  # lm_head is tied to it
    final = AutoModelForCausalLM.from_pretrained(out / "export" / "stage-1-mix")
    tok = AutoTokenizer.from_pretrained(out / "export" / "stage-1-mix")
    assert len(tok) == final.config.vocab_size
    assert not torch.equal(
        final.model.layers[0].mlp.up_proj.weight, before["model.layers.0.mlp.up_proj.weight"]
    )


@pytest.mark.parametrize(
    "override, match",
    [
        (
            "--stages.0.micro_batch_size=200",
            r"stages\[0\]\.micro_batch_size: 200 x accumulation_steps",
        ),
        ("--stages.1.warmup_steps=6", r"stages\[1\]\.warmup_steps: 6 warm-up steps"),
        ("--stages.1.epochs=0.001", r"stages\[1\]\.epochs"),
        ("--tp=2", r"tp: 2 needs plugin: 3d"),
        ("--max_length=32", r"stages\[0\]\.data\[0\]\.path: .* packed to 64"),
    ],
)
def test_impossible_budgets_fail_before_training(setup, capsys, override: str, match: str) -> None:
    out = setup["t"] / "bad"
    cfg = recipe(setup, out)
    if "epochs" in override:  # steps and epochs together would be a different error
        cfg.write_text(cfg.read_text().replace("steps: 6", "epochs: 1.0"))
    assert main(["train", "--config", str(cfg), override]) == 2
    err = capsys.readouterr().err
    assert __import__("re").search(match, err), err
    assert not out.exists()


def test_dry_run_plans_token_budgets_and_checks_tokenizer(setup, capsys, tmp_path) -> None:
    cfg = recipe(setup, tmp_path / "dry")
    cfg.write_text(cfg.read_text().replace("steps: 6", "tokens: 2000"))
    assert main(["train", "--config", str(cfg), "--dry-run"]) == 0
    plans = json.loads(capsys.readouterr().out)["plans"]
    tps = plans[1]["tokens_per_step"]
    assert plans[0]["steps"] == 4
    assert (plans[1]["steps"] - 1) * tps < 2000 <= (plans[1]["steps"] + 0.01) * tps  # rounded up
    other = tiny_model(tmp_path / "other")
    swap_two_pieces(other)  # the same file layout, a different encoding
    assert main(["train", "--config", str(cfg), "--dry-run", f"--model={other}"]) == 2
    assert "re-run `langgraft prepare`" in capsys.readouterr().err


def test_data_prepared_from_tokenizer_model_trains_a_model_with_tokenizer_json(
    setup, capsys, tmp_path
) -> None:
    """prepare --tokenizer tok512.model, then train a model directory whose tokenizer.json
    is the same tokenizer: accepted (it was refused by file hash before)."""
    data = prepared(tmp_path / "tokfile", setup["model"], {"zh": 30}, tokenizer=TOK512)
    cfg = recipe(setup, tmp_path / "tokfile-run")
    cfg.write_text(cfg.read_text().replace(str(setup["zh"]), str(data)))
    assert main(["train", "--config", str(cfg), "--dry-run"]) == 0, capsys.readouterr().err
