"""A recipe whose inputs another command builds names that command when an input is missing
(the README's `langgraft train --config recipes/demo-stories260k.yaml` before
scripts/train_demo.sh said only "out/demo/model: no such model directory")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _train(config: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "langgraft", "train", "--config", str(config)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip


def test_shipped_demo_recipe_names_its_builder_when_inputs_are_missing(tmp_path: Path) -> None:
    r = _train(ROOT / "recipes" / "demo-stories260k.yaml", tmp_path)  # out/demo/* absent here
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "out/demo/model" in lines[0] and "scripts/train_demo.sh" in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_missing_stage_dataset_is_named_with_the_builder(tmp_path: Path, stories: Path) -> None:
    cfg = tmp_path / "r.yaml"
    cfg.write_text(
        f"model: {stories}\nout: {tmp_path / 'run'}\ninputs_built_by: make data\n"
        "train: {micro_batch_size: 1}\n"
        f"stages: [{{name: s, data: [{{path: {tmp_path / 'nope'}}}], steps: 1}}]\n"
    )
    r = _train(cfg, tmp_path)
    assert r.returncode == 2, r.stderr
    assert str(tmp_path / "nope") in r.stderr and "`make data`" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()
