"""Every command's torch threads are chosen in one place (langgraft/__main__.py): --threads, then
$OMP_NUM_THREADS, then a default that leaves busy cores alone."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import langgraft.__main__ as cli
from langgraft.__main__ import chosen_threads, default_threads, runnable_now
from langgraft.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


def _env(**set_: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "LOCAL_WORLD_SIZE")
    }
    return {**env, "PYTHONPATH": str(ROOT), **set_}


def _langgraft(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "langgraft", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("cores", "ranks", "load", "want"),
    [
        (2, 1, 0.2, 2),  # idle: every core
        (2, 1, 1.3, 1),  # one busy process beside: the free core only
        (2, 1, 9.0, 1),  # never 0
        (16, 4, 0.0, 4),  # a node's ranks share its cores
        (16, 4, 8.5, 2),  # ... the free ones
        (2, 4, 0.0, 1),
    ],
)
def test_default_threads(cores, ranks, load, want):
    assert default_threads(cores, ranks, load) == want
    assert default_threads(cores, ranks, load, host_cores=cores) == want


@pytest.mark.parametrize(
    ("cores", "host", "load", "want"),
    [
        (16, 128, 100.0, 16),  # the host's other 112 cores hold the 100 busy threads
        (16, 128, 120.0, 8),  # 8 of them must be on ours
        (16, 128, 200.0, 1),
        (2, 2, 1.0, 1),  # a whole machine: everything counts
    ],
)
def test_a_container_counts_only_what_the_host_cannot_hold_elsewhere(cores, host, load, want):
    assert default_threads(cores, 1, load, host_cores=host) == want


def test_runnable_now_is_the_mean_snapshot_less_the_reader():
    snaps = iter(["0.10 0.20 0.30 3/120 999", "0.10 0.20 0.30 2/120 999"] * 5)
    assert runnable_now(read=lambda: next(snaps)) == 1.5
    assert runnable_now(read=lambda: "1.00 1.00 1.00 1/80 7", samples=2) == 0.0

    def missing() -> str:
        raise FileNotFoundError("/proc/loadavg")

    assert runnable_now(read=missing) is None
    assert runnable_now(read=lambda: "garbage") is None


def test_a_job_that_just_ended_leaves_its_cores_free(monkeypatch):
    """The 1-minute average still counts a job for a minute after it ends (an eval started right
    after lm-eval took 1 thread of an idle 2-core machine); one process reads the cores busy now."""
    monkeypatch.setattr(cli.os, "getloadavg", lambda: (1.9, 1.5, 1.2))
    monkeypatch.setattr(cli, "runnable_now", lambda read=None, samples=10: runnable_now(
        read=lambda: "1.90 1.50 1.20 1/100 4242", samples=2))  # fmt: skip
    ns = argparse.Namespace(command="eval", threads=None)
    cores = len(os.sched_getaffinity(0))
    n, source = chosen_threads(ns, {})
    assert n == cores and "runnable now 0.0" in source
    # A node's ranks start together and would count each other: they keep the 1-minute average.
    n, source = chosen_threads(ns, {"LOCAL_WORLD_SIZE": "2"})
    assert "load 1.9" in source and n == default_threads(cores, 2, 1.9)


def test_a_busy_process_beside_is_counted():
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert runnable_now() >= 0.8
    finally:
        hog.kill()
        hog.wait()


def test_flag_beats_env_and_bad_values_are_refused():
    ns = argparse.Namespace(command="eval", threads=3)
    assert chosen_threads(ns, {"OMP_NUM_THREADS": "1"}) == (3, "--threads")
    ns.threads = None
    assert chosen_threads(ns, {"OMP_NUM_THREADS": "5"}) == (5, "OMP_NUM_THREADS")
    assert chosen_threads(ns, {"OMP_NUM_THREADS": "4,2"})[0] == 4
    for bad in ("0", "two", "-1"):
        with pytest.raises(UserError, match="OMP_NUM_THREADS"):
            chosen_threads(ns, {"OMP_NUM_THREADS": bad})
    ns.threads = 0
    with pytest.raises(UserError, match="--threads 0"):
        chosen_threads(ns, {})


def test_torchrun_rank_default_divides_the_cores():
    ns = argparse.Namespace(command="train", threads=None)
    cores = len(os.sched_getaffinity(0))
    n, source = chosen_threads(ns, {"LOCAL_WORLD_SIZE": str(cores * 2)})
    assert n == 1 and "rank(s) per node" in source


def test_command_runs_torch_with_the_chosen_threads(stories):
    """The real command: what main chose is what torch ran with, for --threads, the environment
    and the default. --threads 1 / OMP 1 differ from the 2-core default only when idle, so the
    flag is checked against a contradicting environment."""
    gen = ["generate", "--model", str(stories), "--prompt", "", "--max-new-tokens", "1", "--greedy"]
    cases = [
        (["--threads", "1"], _env(OMP_NUM_THREADS="2"), "--threads", 1),
        ([], _env(OMP_NUM_THREADS="1"), "OMP_NUM_THREADS", 1),
        ([], _env(), "default", None),
    ]
    for flags, env, source, want in cases:
        r = _langgraft(["-v", *flags, *gen], env)
        assert r.returncode == 0, r.stderr
        chose = re.search(r"^threads: (\d+) \(([-\w]+)", r.stderr, re.M)
        ran = re.search(r"^torch ran with (\d+) intra-op threads", r.stderr, re.M)
        assert chose and ran, r.stderr
        assert chose.group(2) == source
        assert int(ran.group(1)) == int(chose.group(1))
        if want is not None:
            assert int(ran.group(1)) == want


def test_launch_gives_each_rank_its_share(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("localhost\n")
    job = ["launch", "--hostfile", str(hosts), "--dry-run", "--"]
    job += ["generate", "--model", "m", "--prompt", "x"]
    cores = len(os.sched_getaffinity(0))
    r = _langgraft(["--threads", "3", *job[:3], "--nproc-per-node", "2", *job[3:]], _env())
    assert r.returncode == 0, r.stderr
    assert "OMP_NUM_THREADS=3" in r.stdout
    r = _langgraft([*job[:3], "--nproc-per-node", str(2 * cores), *job[3:]], _env())
    assert r.returncode == 0, r.stderr
    assert "OMP_NUM_THREADS=1 " in r.stdout


def test_bad_thread_count_is_one_line_exit_2():
    r = _langgraft(["--threads", "0", "generate", "--model", "m", "--prompt", "x"], _env())
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "--threads 0: must be >= 1" in r.stderr
