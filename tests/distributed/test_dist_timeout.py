"""A frozen rank fails the job within the recipe's `dist_timeout_s` (the process-group timeout),
not torch's default 30 min (gloo) / 10 min (NCCL): rank 1 of a 2-rank ddp run SIGSTOPs itself
after step 2; rank 0 waits in the next collective, times out after 20 s and fails with a one-line
error naming itself and the key; torchrun then SIGKILLs the stopped rank after its 30 s SIGTERM
grace. The whole process group is killed in the end whatever happens."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, free_port, recipe

pytestmark = pytest.mark.timeout(400)

TIMEOUT_S = 20
TORCHRUN_GRACE_S = 30  # torchrun's SIGTERM -> SIGKILL wait for a rank that does not exit


def _logged_step(out: Path, step: int) -> bool:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return False
    lines = path.read_text().splitlines()
    return any(json.loads(x).get("step") == step for x in lines if x.strip().endswith("}"))


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_frozen_rank_fails_the_job_within_dist_timeout(real, tmp_path) -> None:
    out = tmp_path / "frozen"
    cfg = recipe(real, out, acc=2, plugin="ddp", dist_timeout_s=TIMEOUT_S)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
           "LANGGRAFT_TEST_KILL_AT_STEP": "2", "LANGGRAFT_TEST_KILL_RANK": "1",
           "LANGGRAFT_TEST_KILL_SIGNAL": "SIGSTOP"}  # fmt: skip
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "-m", "langgraft", "train", "--config", str(cfg)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not _logged_step(out, 2):  # rank 1 stops right after this row's step
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "step 2 was never logged"
            time.sleep(0.2)
        stopped = time.monotonic()
        output, _ = proc.communicate(timeout=TIMEOUT_S + TORCHRUN_GRACE_S + 120)
        failed_after = time.monotonic() - stopped
        assert proc.returncode != 0, output[-3000:]
        # rank 0 names itself, the timeout and the key; torchrun names the ranks' exits
        assert "rank 0: a collective waited longer than the process-group timeout" in output, (
            output[-3000:]
        )
        assert "dist_timeout_s" in output and f"Timed out waiting {TIMEOUT_S * 1000}ms" in output
        assert "local_rank: 0" in output
        # the timeout governed: not before it, and well before torch's default 30 min
        assert TIMEOUT_S - 2 <= failed_after <= TIMEOUT_S + TORCHRUN_GRACE_S + 40, failed_after
        deadline = time.monotonic() + 10
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _group_alive(proc.pid), "a rank outlived torchrun"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
