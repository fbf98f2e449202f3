"""Issue 22: a bad parallel layout (tp with plugin ddp, zero 5, tp 3 on 2 ranks) is refused by
`langgraft launch` before any rank starts (one line, exit 2, no torchrun and no failure
summary), and under a torchrun started by hand only local rank 0 of a node prints it (the other
ranks exit 2 silently). No process is started: the launch's node runner is a tripwire."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_helpers import write_recipe

from langgraft.__main__ import main

pytestmark = pytest.mark.timeout(60)

# (recipe keys, override options, world = hosts x nproc, message)
LAYOUTS = {
    "tp with plugin ddp": ({"plugin": "ddp", "tp": 2}, [], 2, "tp: 2 needs plugin: 3d"),
    "tp from an override": ({"plugin": "ddp"}, ["--tp=2"], 2, "tp: 2 needs plugin: 3d"),
    "zero 5": ({"plugin": "3d", "zero": 5}, [], 2, "zero: 5: use 2"),
    "tp 3 on 2 ranks": ({"plugin": "3d", "tp": 3}, [], 2, "tp: 3 must divide the world size 2"),
    "plugin none on 4 ranks": ({}, [], 4, "WORLD_SIZE=4 (torchrun) but plugin is 'none'"),
}


def bad_recipe(tmp_path: Path, keys: dict) -> Path:
    return write_recipe(tmp_path / "r.yaml", {
        "model": str(tmp_path / "model"), "out": str(tmp_path / "run"), **keys,
        "stages": [{"name": "s", "data": [{"path": str(tmp_path / "data")}], "steps": 2}],
    })  # fmt: skip


@pytest.fixture
def no_start(monkeypatch) -> None:
    def tripwire(*args, **kwargs):
        raise AssertionError("a node was started")

    monkeypatch.setattr("langgraft.distributed.launch.run_nodes", tripwire)
    monkeypatch.setattr("subprocess.Popen", tripwire)


@pytest.mark.parametrize("dry_run", [False, True], ids=["launch", "dry-run"])
@pytest.mark.parametrize("case", list(LAYOUTS))
def test_launch_refuses_a_bad_layout_before_any_rank(case, dry_run, tmp_path, no_start, capsys) -> None:  # fmt: skip
    keys, extra, world, message = LAYOUTS[case]
    cfg = bad_recipe(tmp_path, keys)
    hosts = tmp_path / "hosts"
    hosts.write_text("localhost\n" * (world // 2))
    argv = ["launch", "--hostfile", str(hosts), "--nproc-per-node", "2",
            *(["--dry-run"] if dry_run else []), "--", "train", "--config", str(cfg), *extra]  # fmt: skip
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no node command printed either
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"langgraft launch: error: {cfg}: ") or "WORLD_SIZE" in lines[0]
    assert message in lines[0], lines[0]


def test_launch_names_train_options_that_do_not_parse(tmp_path, no_start, capsys) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("localhost\n")
    assert main(["launch", "--hostfile", str(hosts), "--", "train", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("langgraft launch: error: the command after --: "
                                               "train: "), err  # fmt: skip


def test_a_good_layout_still_launches(tmp_path, capsys) -> None:
    cfg = bad_recipe(tmp_path, {"plugin": "ddp"})
    hosts = tmp_path / "hosts"
    hosts.write_text("localhost\n")
    argv = ["launch", "--hostfile", str(hosts), "--nproc-per-node", "2", "--dry-run", "--",
            "train", "--config", str(cfg)]  # fmt: skip
    assert main(argv) == 0
    assert "torch.distributed.run" in capsys.readouterr().out


@pytest.mark.parametrize(("local_rank", "printed"), [("0", 1), ("1", 0)])
def test_under_torchrun_only_local_rank_0_prints_the_refusal(local_rank, printed, tmp_path, monkeypatch, capsys) -> None:  # fmt: skip
    cfg = bad_recipe(tmp_path, {"plugin": "ddp", "tp": 2})
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", local_rank)
    monkeypatch.setenv("LOCAL_RANK", local_rank)
    import langgraft.train.cli as train_cli

    waits: list[float] = []  # a quiet rank waits for torchrun to end it after rank 0 printed
    monkeypatch.setattr(train_cli.time, "sleep", waits.append)
    try:
        rc = main(["train", "--config", str(cfg)])
    except SystemExit as e:
        rc = e.code
    assert rc == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == printed, lines
    assert waits == ([] if printed else [train_cli._QUIET_RANK_WAIT_S])
    assert all("tp: 2 needs plugin: 3d" in ln for ln in lines)
    assert not (tmp_path / "run").exists()
