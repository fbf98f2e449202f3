"""Data parallel `langgraft train` under torchrun (plugin ddp, gloo on CPU), checked against an
oracle: one process with twice the accumulation steps.

Why the two are the same computation: both consume the same global rows per step from the
same seeded, bucket-ordered sequence (data.py `next_step_rows`: rank r takes the r-th contiguous
share, so with micro-batch 2 rank 0 runs micro-batches 0-1 of the oracle's step and rank 1 runs
2-3, with identical padding). The oracle's gradient is sum over its 4 micro-batches of
grad(sum nll) / N; each rank forms 2 * (its 2 micro-batches' share) / N with N all-reduced, and
DDP averages the two ranks, which gives the same sum (only float summation order differs). The
optimizer then sees the same gradient on every rank and in the oracle.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from train_helpers import two_languages, write_recipe  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    return two_languages(tmp_path_factory.mktemp("train-ddp"))


def recipe(setup: dict[str, Path], out: Path, accumulation_steps: int) -> Path:
    r = {
        "model": str(setup["model"]),
        "out": str(out),
        "progress": False,
        "tensorboard": False,
        "train": {"micro_batch_size": 2, "accumulation_steps": accumulation_steps, "lr": 3e-3},
        "checkpoint": {"save_interval": 3, "keep_last": 2},
        # eval on rank 0 only, mid-stage and at stage ends: must not deadlock the other rank
        "eval": {"interval": 4, "data": [str(setup["en"])], "max_rows": 8},
        "stages": [
            {"name": "warm", "data": [{"path": str(setup["zh"])}], "steps": 3,
             "freeze_non_embeds_params": True, "lr": 1e-2},
            {"name": "mix", "data": [{"path": str(setup["zh"])},
                                     {"path": str(setup["en"]), "weight": 0.5}], "steps": 5},
        ],
    }  # fmt: skip
    return write_recipe(out.parent / f"{out.name}.yaml", r)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(config: Path, *args: str, nproc: int = 1, env: dict[str, str] | None = None):
    e = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", **(env or {})}
    if nproc == 1:
        launcher = [sys.executable, "-m", "langgraft"]
    else:
        launcher = [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "langgraft",
        ]  # fmt: skip
    cmd = [*launcher, "train", "--config", str(config), *args]
    return subprocess.run(cmd, cwd=ROOT, env=e, capture_output=True, text=True, timeout=300)


def rows(out: Path, kind: str = "loss") -> list[dict]:
    """Training rows (kind "loss") or eval rows (kind "eval/en/loss") of metrics.jsonl."""
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if kind in r]


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "export" / "stage-1-mix" / "model.safetensors"))


def test_ddp_equals_one_process_with_double_accumulation(setup) -> None:
    t = setup["t"]
    oracle = t / "oracle"
    p = train(recipe(setup, oracle, accumulation_steps=4))
    assert p.returncode == 0, p.stderr[-3000:]
    ddp = t / "ddp"
    p = train(recipe(setup, ddp, accumulation_steps=2), "--plugin=ddp", nproc=2)
    assert p.returncode == 0, p.stderr[-3000:]

    a, b = rows(oracle), rows(ddp)
    assert [r["step"] for r in b] == list(range(1, 9))
    for ra, rb in zip(a, b, strict=True):
        # the same global rows: identical token counts, losses equal to fp32 rounding
        assert (ra["supervised_tokens"], ra["tokens_seen"]) == (rb["supervised_tokens"],
                                                                rb["tokens_seen"])  # fmt: skip
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5)
        assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=1e-4)
        assert rb["lr"] == ra["lr"]
    ea, eb = rows(oracle, "eval/en/loss"), rows(ddp, "eval/en/loss")
    # rank 0 only: the same eval rows as the oracle's (interval 4 and stage ends), not one per rank
    assert [r["step"] for r in eb] == [r["step"] for r in ea] and len(eb) >= 3
    for ra, rb in zip(ea, eb, strict=True):
        assert rb["eval/en/loss"] == pytest.approx(ra["eval/en/loss"], rel=1e-5)
    wa, wb = weights(oracle), weights(ddp)
    assert wa.keys() == wb.keys()
    for k in wa:
        # AdamW divides by sqrt(v): a near-zero gradient's float summation-order difference
        # shows up as ~1e-6 in a weight after 8 steps (measured 1.6e-6 with the chunked loss)
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=5e-6)
    # rank 0 wrote the shared state, each rank its own RNG
    ck = ddp / "checkpoints" / (ddp / "checkpoints" / "latest").read_text().strip()
    assert (ck / "rng.pt").is_file() and (ck / "rng-rank1.pt").is_file()
    assert json.loads((ck / "trainer_state.json").read_text())["world_size"] == 2
    assert not list((ddp / "checkpoints").glob(".tmp-*"))


def test_ddp_resume_auto_is_exact(setup) -> None:
    t = setup["t"]
    straight = t / "ddp"
    if not (straight / "metrics.jsonl").exists():  # when run alone
        p = train(recipe(setup, straight, accumulation_steps=2), "--plugin=ddp", nproc=2)
        assert p.returncode == 0, p.stderr[-3000:]
    run = t / "ddp-killed"
    cfg = recipe(setup, run, accumulation_steps=2)
    # every rank SIGKILLs itself after step 7; the latest checkpoint is step 6 (mid-stage 1)
    p = train(cfg, "--plugin=ddp", nproc=2, env={"LANGGRAFT_TEST_KILL_AT_STEP": "7"})
    assert p.returncode != 0
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-00000006"
    p = train(cfg, "--plugin=ddp", "--resume", "auto", nproc=2)
    assert p.returncode == 0, p.stderr[-3000:]
    key = lambda r: (r["step"], r["loss"], r["grad_norm"], r["lr"], r["tokens_seen"])  # noqa: E731
    assert [key(r) for r in rows(run)] == [key(r) for r in rows(straight)]
    assert rows(run, "eval/en/loss") == rows(straight, "eval/en/loss")
    wa, wb = weights(straight), weights(run)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # a different process count at the same per-rank batch changes the global batch: refused
    p = train(cfg, "--resume", "auto")
    assert p.returncode == 2 and "global batch (2 x 2 x 2 rank(s) = 8 -> 2 x 2 x 1 = 4" in p.stderr


def test_world_size_without_ddp_plugin_is_refused(setup) -> None:
    out = setup["t"] / "noplugin"
    p = train(recipe(setup, out, accumulation_steps=2), nproc=2)
    assert p.returncode != 0
    assert "set plugin: ddp" in p.stderr
