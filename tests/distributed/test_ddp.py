"""Plugin ddp beyond the one-process oracle (test_plugins.py): SIGKILL-and-resume is exact, a
changed global batch is refused, and torchrun without a data-parallel plugin is refused."""

from __future__ import annotations

import pytest
from conftest import EVAL, export_weights, langgraft, recipe, rows

pytestmark = pytest.mark.timeout(600)


def test_ddp_resume_auto_is_exact(real, straight) -> None:
    ref = straight("ddp")
    run = real["t"] / "ddp-killed"
    cfg = recipe(real, run, acc=2, plugin="ddp")
    # every rank SIGKILLs itself after step 5; the latest checkpoint is step 4 (mid-stage 1)
    p = langgraft("train", "--config", str(cfg), nproc=2, env={"LANGGRAFT_TEST_KILL_AT_STEP": "5"})
    assert p.returncode != 0
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-00000004"
    p = langgraft("train", "--config", str(cfg), "--resume", "auto", nproc=2)
    assert p.returncode == 0, p.stderr[-3000:]
    key = lambda r: (r["step"], r["loss"], r["grad_norm"], r["lr"], r["tokens_seen"])  # noqa: E731
    assert [key(r) for r in rows(run)] == [key(r) for r in rows(ref)]
    # steps 2 (the end of stage 0), 4 and 5 (the end of stage 1): each step evaluated once
    assert rows(run, EVAL) == rows(ref, EVAL)
    assert [r["step"] for r in rows(ref, EVAL)] == [2, 4, 5]
    a, b = export_weights(ref), export_weights(run)
    assert all((a[k] == b[k]).all() for k in a)
    # one process at the same per-rank batch would halve the global batch: refused by name
    p = langgraft("train", "--config", str(cfg), "--resume", "auto")
    assert p.returncode == 2 and "global batch (2 x 2 x 2 rank(s) = 8 -> 2 x 2 x 1 = 4" in p.stderr


def test_world_size_without_ddp_plugin_is_refused(real) -> None:
    out = real["t"] / "noplugin"
    p = langgraft("train", "--config", str(recipe(real, out, acc=2)), nproc=2)
    assert p.returncode != 0
    assert "set plugin: ddp" in p.stderr
