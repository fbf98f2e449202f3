"""Nothing a user owns is destroyed by `langgraft train` (issue 15): a fresh run into another
run's directory is refused, --overwrite deletes only run files and never an input, one writer per
out/ (flock), metrics.jsonl survives a kill during its rewrite and a torn last line, a diverging
run stops with its last good checkpoint and exports nothing, and under fp16 a step that
GradScaler skipped does not advance the schedule."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from train_helpers import prepared, tiny_model, write_recipe

from langgraft.__main__ import main
from langgraft.errors import UserError


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    torch.set_num_threads(1)
    t = tmp_path_factory.mktemp("run-safety")
    model = tiny_model(t / "model")
    return {"t": t, "model": model, "data": prepared(t / "data", model, {"en": 40})}


def recipe(setup, out: Path, steps: int = 2, lr: float = 1e-3, model: Path | None = None) -> Path:
    r = {
        "model": str(model or setup["model"]), "out": str(out), "progress": False,
        "tensorboard": False, "checkpoint": {"save_interval": 1, "keep_last": 2},
        "train": {"micro_batch_size": 2, "warmup_steps": 0, "lr": lr},
        "stages": [{"name": "s", "data": [{"path": str(setup["data"])}], "steps": steps}],
    }  # fmt: skip
    return write_recipe(out.parent / f"{out.name}-{steps}-{lr}.yaml", r)


def snapshot(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != ".langgraft-train.lock"
    }


def test_fresh_run_into_a_previous_run_is_refused_and_overwrite_deletes_only_run_files(
    setup, capsys
) -> None:
    out = setup["t"] / "run-a"
    assert main(["train", "--config", str(recipe(setup, out, steps=2))]) == 0
    (out / "thesis.md").write_text("mine")
    before = snapshot(out)
    capsys.readouterr()
    # A different recipe, fresh: refused, nothing touched (old metrics and checkpoints intact).
    other = recipe(setup, out, steps=3)
    assert main(["train", "--config", str(other)]) == 2
    err = capsys.readouterr().err
    assert (
        "holds a previous run (checkpoints, export, metrics.jsonl" in err and "--overwrite" in err
    )
    assert snapshot(out) == before
    # --resume auto must not adopt the other run's leftovers when it has no checkpoint.
    shutil.rmtree(out / "checkpoints")
    before = snapshot(out)
    assert main(["train", "--config", str(other), "--resume", "auto"]) == 2
    assert "found no checkpoint, but the directory holds another run" in capsys.readouterr().err
    assert snapshot(out) == before
    # --overwrite: the old run's files go, the user's file stays, the new run is complete.
    assert main(["train", "--config", str(other), "--overwrite"]) == 0
    assert (out / "thesis.md").read_text() == "mine"
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    ck = sorted(p.name for p in (out / "checkpoints").glob("step-*"))
    assert ck == ["step-00000002", "step-00000003"]


def test_overwrite_never_deletes_an_input_of_the_run(setup, capsys) -> None:
    out = setup["t"] / "run-b"
    assert main(["train", "--config", str(recipe(setup, out, steps=1))]) == 0
    exported = out / "export" / "stage-0-s"
    before = snapshot(out)
    capsys.readouterr()
    cfg = recipe(setup, out, steps=2, model=exported)  # continue from its own export
    assert main(["train", "--config", str(cfg), "--overwrite"]) == 2
    assert f"would delete {out / 'export'}, which holds this run's input" in capsys.readouterr().err
    assert snapshot(out) == before


def test_a_second_train_into_a_locked_run_directory_is_refused(setup, capsys) -> None:
    import os

    from langgraft.train.rundir import RunLock

    out = setup["t"] / "run-c"
    lock = RunLock(out)  # as the first `train` process holds it
    try:
        assert main(["train", "--config", str(recipe(setup, out, steps=1))]) == 2
        err = capsys.readouterr().err
        assert f"another `langgraft train` (pid {os.getpid()}) is writing this run" in err
        assert not (out / "metrics.jsonl").exists() and not (out / "checkpoints").exists()
    finally:
        lock.release()
    assert main(["train", "--config", str(recipe(setup, out, steps=1))]) == 0


def test_prune_never_deletes_the_new_timeline_for_a_stale_later_checkpoint(tmp_path) -> None:
    from langgraft.distributed.checkpoint import _prune

    root = tmp_path / "checkpoints"
    (root / "step-00000010").mkdir(parents=True)  # a timeline abandoned by resuming at step 2
    for step in (2, 3, 4):
        (root / f"step-{step:08d}").mkdir()
        _prune(root, keep_last=2, keep=root / f"step-{step:08d}")
    names = sorted(p.name for p in root.iterdir())
    assert names == ["step-00000003", "step-00000004", "step-00000010"]


def test_metrics_rewrite_on_resume_is_atomic_and_drops_a_torn_last_line(
    tmp_path, monkeypatch
) -> None:
    from langgraft.train.metrics import MetricsLogger

    path = tmp_path / "metrics.jsonl"
    rows = "".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 6))
    path.write_text(rows + '{"step": 6, "lo')  # SIGKILL in the middle of writing step 6
    original = path.read_bytes()

    def killed(*args):  # the process dies after writing the new file, before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", killed)
    with pytest.raises(KeyboardInterrupt):
        MetricsLogger(tmp_path, tensorboard=False, resume_step=3)
    assert path.read_bytes() == original  # the history is intact, never truncated
    monkeypatch.undo()
    m = MetricsLogger(tmp_path, tensorboard=False, resume_step=5)
    m.write({"step": 6, "loss": 0.1})
    m.close()
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
    assert not list(tmp_path.glob(".metrics.jsonl.tmp-*"))
    path.write_text(rows.replace('{"step": 2', '{"step": 2,,', 1))
    with pytest.raises(UserError, match=r"metrics\.jsonl:2: not a JSON metrics row"):
        MetricsLogger(tmp_path, tensorboard=False, resume_step=3)


def test_a_diverging_run_stops_keeps_its_last_good_checkpoint_and_exports_nothing(
    setup, capsys
) -> None:
    out = setup["t"] / "run-nan"
    # lr 100 (sic): step 1 is finite, its update blows the weights up, step 2's gradient is NaN.
    assert main(["train", "--config", str(recipe(setup, out, steps=4, lr=100.0))]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "step 2 (global step 2)" in err and "training diverged" in err
    assert f"Last good checkpoint: {out / 'checkpoints' / 'step-00000001'}" in err
    assert not (out / "export").exists() and not (out / "summary.json").exists()
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-00000001"
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps] == [1] and math.isfinite(steps[0]["loss"])


def test_fp16_a_step_skipped_by_grad_scaler_does_not_advance_the_schedule() -> None:
    from langgraft.train.optim import optimizer_step

    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (step + 1))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    scaler.scale((p * float("inf")).sum()).backward()  # an fp16 overflow: inf gradients
    assert optimizer_step(opt, sched, scaler) is False
    assert sched.last_epoch == 0 and sched.get_last_lr() == [0.1]
    assert torch.equal(p.detach(), torch.ones(3)) and scaler.get_scale() == 2.0**15
    scaler.scale((p * 2.0).sum()).backward()
    assert optimizer_step(opt, sched, scaler) is True
    assert sched.last_epoch == 1 and sched.get_last_lr() == [0.05]
    assert not torch.equal(p.detach(), torch.ones(3))


def test_bf16_on_a_gpu_without_bf16_is_refused_at_start(monkeypatch) -> None:
    from langgraft.train.recipe import recipe_from_dict
    from langgraft.train.setup import pick_device

    r = recipe_from_dict({
        "model": "m", "out": "o", "precision": "bf16", "device": "cuda",
        "stages": [{"data": [{"path": "d"}], "steps": 1}],
    })  # fmt: skip
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla V100")
    with pytest.raises(UserError, match="bf16 needs a GPU with bf16 support, which Tesla V100"):
        pick_device(r)
    r.precision = "fp16"
    assert pick_device(r).type == "cuda"


def test_resume_auto_restarts_over_its_own_first_attempt(setup, capsys) -> None:
    out = setup["t"] / "run-d"
    cfg = recipe(setup, out, steps=2)
    # The first attempt died before its first checkpoint: its recipe.json, a partial metrics
    # file and a half-written save are all that is left.
    assert main(["train", "--config", str(cfg)]) == 0
    shutil.rmtree(out / "checkpoints")
    shutil.rmtree(out / "export")
    (out / "checkpoints" / ".tmp-step-00000001-1").mkdir(parents=True)
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n')
    capsys.readouterr()
    assert main(["train", "--config", str(cfg), "--resume", "auto"]) == 0
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2] and not list((out / "checkpoints").glob(".tmp-*"))


class _Payload:
    """Unpickling this would call print: the kind of object weights_only loading refuses."""

    def __reduce__(self):
        return (print, ("code ran",))


def test_resume_refuses_a_checkpoint_file_that_holds_a_pickle_payload(setup, capsys) -> None:
    out = setup["t"] / "run-e"
    cfg = recipe(setup, out, steps=2)
    assert main(["train", "--config", str(cfg)]) == 0
    # as if killed after step 1 of 2: resume reads that checkpoint's scheduler.pt
    ckpts = sorted((out / "checkpoints").glob("step-*"))
    mid = ckpts[0]
    torch.save({"x": _Payload()}, mid / "scheduler.pt")
    for later in ckpts[1:]:
        shutil.rmtree(later)
    (out / "checkpoints" / "latest").write_text(mid.name + "\n")
    capsys.readouterr()
    assert main(["train", "--config", str(cfg), "--resume", "auto"]) == 2
    captured = capsys.readouterr()
    assert f"refusing to unpickle {mid / 'scheduler.pt'}" in captured.err
    assert "code ran" not in captured.out + captured.err


def test_divergence_between_logging_steps_stops_updates_on_the_device(setup, capsys) -> None:
    """log_interval 3: the host reads nothing on steps 1-2, so the non-finite step 2 is caught
    on the device (its update and every later one skipped by the fused AdamW) and reported at
    step 3 naming step 2."""
    out = setup["t"] / "run-nan-quiet"
    cfg = recipe(setup, out, steps=6, lr=100.0)
    text = cfg.read_text().replace("save_interval: 1", "save_interval: 0")
    cfg.write_text(text + "log_interval: 3\n")
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "(global step 2)" in err and "no update was applied from this step on" in err, err
    assert not (out / "export").exists() and not (out / "checkpoints").exists()


def test_the_guard_keeps_the_weights_of_the_last_good_step() -> None:
    from langgraft.train.step import DivergenceGuard

    p = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.AdamW([p], lr=0.1, fused=True)
    guard = DivergenceGuard(torch.device("cpu"))
    history = []
    for step, scale in enumerate([1.0, float("nan"), 1.0, 1.0], start=1):
        (p * scale).sum().backward()
        norm = torch.nn.utils.get_total_norm([p.grad])
        guard.update(step, norm, torch.zeros(1))
        guard.arm(opt)
        opt.step()
        opt.zero_grad()
        history.append(p.detach().clone())
    assert not torch.equal(history[0], torch.ones(4))  # step 1 applied
    assert all(torch.equal(h, history[0]) for h in history[1:])  # nothing after step 2
    assert int(opt.state[p]["step"]) == 1
    bad = guard.check()
    assert bad is not None and bad[0] == 2 and math.isnan(bad[2])


def test_a_full_disk_during_a_checkpoint_is_one_line_naming_the_last_good_one(
    setup, capsys, monkeypatch
) -> None:
    """ENOSPC inside DCP's writer (wrapped in its CheckpointException, a BaseException): exit 2,
    one line naming the checkpoint being written and the last good one; the partial checkpoint
    is removed and `latest` still names the good one (resume after freeing space is exact)."""
    import errno

    from torch.distributed.checkpoint import FileSystemWriter

    out = setup["t"] / "run-full-disk"
    calls = {"n": 0}
    write = FileSystemWriter.write_data

    def full_on_second(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(self, *args, **kwargs)

    monkeypatch.setattr(FileSystemWriter, "write_data", full_on_second)
    assert main(["train", "--config", str(recipe(setup, out, steps=3))]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert len(err) == 1, err
    assert f"{out / 'checkpoints' / 'step-00000002'}: No space left on device" in err[0]
    assert f"last good checkpoint is {out / 'checkpoints' / 'step-00000001'}" in err[0]
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-00000001"
    assert not list((out / "checkpoints").glob(".tmp-*"))


def test_an_oserror_without_a_file_names_the_output(tmp_path, capsys, monkeypatch) -> None:
    import argparse
    import errno

    from langgraft.__main__ import run_command

    def fails(args):
        raise OSError(errno.ENOSPC, "No space left on device")

    args = argparse.Namespace(func=fails, command="x", out=tmp_path / "o", verbose=False)
    assert run_command(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"langgraft x: error: writing {tmp_path / 'o'}: No space left on device; free " \
        "some space or write elsewhere", err


def test_resume_auto_on_missing_inputs_says_only_the_error(tmp_path, capsys, caplog) -> None:
    """README: `train --config recipes/llama2-7b.yaml --resume auto` without the model printed
    "starting from the beginning" and then the error."""
    root = Path(__file__).resolve().parents[2]
    argv = ["train", "--config", str(root / "recipes" / "llama2-7b.yaml"), "--resume", "auto",
            f"--out={tmp_path / 'run'}", f"--model={tmp_path / 'model'}"]  # fmt: skip
    with caplog.at_level("INFO", logger="langgraft"):
        assert main(argv) == 2
    assert "no such model directory" in capsys.readouterr().err
    assert "starting from the beginning" not in caplog.text
    assert not (tmp_path / "run").exists()
