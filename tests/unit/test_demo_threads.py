"""The demo's two training processes run one torch thread each unless the user chose a count
(--threads, then $OMP_NUM_THREADS, as every command): the user's choice reaches them. Checked
on the environment each process is started with; nothing is trained."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import langgraft.demo.cli as demo_cli
from langgraft.__main__ import main
from langgraft.demo.recipe import train_together

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS", "OMP_WAIT_POLICY")


@pytest.mark.parametrize(
    ("flags", "omp", "want"),
    [
        (["--threads", "3"], "2", 3),  # the flag wins, as for every command
        ([], "2", 2),  # the environment
        ([], None, None),  # nobody chose: the demo's own split (one thread per training)
    ],
)
def test_demo_passes_the_users_threads(flags, omp, want, monkeypatch, tmp_path) -> None:
    import torch

    for k in THREAD_VARS:  # main() sets these in this process: restored after the test
        monkeypatch.delenv(k, raising=False)
    if omp is not None:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    seen = {}

    def fake_run_demo(cfg, threads=None):
        seen["threads"] = threads
        return {"bits_per_char": {}, "total_seconds": 0.0}

    monkeypatch.setattr(demo_cli, "run_demo", fake_run_demo)
    before = torch.get_num_threads()
    try:
        assert main([*flags, "demo", "--quick", "--out", str(tmp_path / "d")]) == 0
    finally:
        torch.set_num_threads(before)
    assert seen == {"threads": want}


class FakePopen:
    envs: list[dict] = []

    def __init__(self, argv, env, stdout=None, stderr=None):
        FakePopen.envs.append(env)
        self.returncode = 0

    def poll(self):
        return 0


@pytest.mark.parametrize(("threads", "want"), [(None, "1"), (1, "1"), (3, "3")])
def test_each_training_process_gets_the_threads(threads, want, monkeypatch, tmp_path: Path):
    FakePopen.envs = []
    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # the demo process's own count is not inherited
    jobs = {"run": ({"a": 1}, tmp_path / "a.yaml"), "control": ({"b": 2}, tmp_path / "b.yaml")}
    train_together(jobs, tmp_path, timeout=10, threads=threads)
    assert len(FakePopen.envs) == 2
    for env in FakePopen.envs:
        assert env["OMP_NUM_THREADS"] == want and env["MKL_NUM_THREADS"] == want


def test_time_target_states_the_load_and_threads() -> None:
    """A wall time on a shared machine says the load it ran at (issue 22): each step's row keeps
    the 1-min load average at its end, and the time target names their range and the threads."""
    from langgraft.demo.report import targets
    from langgraft.demo.steps import Timeline

    clock = Timeline(1)
    with clock.step("split", "nothing"):
        pass
    assert isinstance(clock.rows[0]["load_1min"], float)
    f = {"imported": 10.0, "trained": 1.0, "no-replay": 1.0, "expanded": 10.0}
    summary = {
        "quick": True, "total_seconds": 60.0, "threads": {"demo": 1, "training": 1},
        "bits_per_char": {"zh-modern": f, "zh-classical": f, "en-original": f},
        "timeline": [dict(clock.rows[0], load_1min=2.4), dict(clock.rows[0], load_1min=3.1)],
    }  # fmt: skip
    row = targets(summary)[-1]
    assert row["target"] == "total under 2 minutes" and row["met"] is True
    assert "load 2.4-3.1" in row["measured"]
    assert "1 thread(s) per training process" in row["measured"]


def test_a_model_that_got_worse_is_not_reported_lower() -> None:
    """SmolLM2's demo run: modern Chinese 2.361 -> 2.810 bits/char was printed "-19.0% lower"."""
    from langgraft.demo.report import targets

    worse = {"imported": 2.361, "trained": 2.810, "no-replay": 2.9, "expanded": 2.8}
    better = {"imported": 40.997, "trained": 5.752, "no-replay": 5.3, "expanded": 40.0}
    summary = {
        "quick": False, "total_seconds": 60.0, "timeline": [],
        "bits_per_char": {"zh-modern": worse, "zh-classical": better, "en-original": better},
    }  # fmt: skip
    modern, classical = targets(summary)[:2]
    assert modern["measured"] == "2.361 -> 2.810 (19.0% higher)" and modern["met"] is False
    assert classical["measured"] == "40.997 -> 5.752 (86.0% lower)" and classical["met"] is True
