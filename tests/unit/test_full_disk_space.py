"""Issue 22: a checkpoint that fills the disk says how much space it needs (the size of the last
good checkpoint, which holds the same tensors) and how much is free, besides the path and the
last good checkpoint that tests/unit/test_train_run_safety.py already checks."""

from __future__ import annotations

import errno
import re
import shutil
from pathlib import Path

import pytest
import torch
from train_helpers import prepared, tiny_model, write_recipe

from langgraft.__main__ import main

pytestmark = pytest.mark.timeout(120)


def test_a_full_disk_checkpoint_says_the_space_it_needs(tmp_path, capsys, monkeypatch) -> None:
    from torch.distributed.checkpoint import FileSystemWriter

    torch.set_num_threads(1)
    model = tiny_model(tmp_path / "model")
    data = prepared(tmp_path / "data", model, {"en": 40})
    out = tmp_path / "run"
    cfg = write_recipe(tmp_path / "r.yaml", {
        "model": str(model), "out": str(out), "progress": False, "tensorboard": False,
        "checkpoint": {"save_interval": 1, "keep_last": 2},
        "train": {"micro_batch_size": 2, "warmup_steps": 0, "lr": 1e-3},
        "stages": [{"name": "s", "data": [{"path": str(data)}], "steps": 3}],
    })  # fmt: skip
    write, calls = FileSystemWriter.write_data, {"n": 0}

    def full_on_second(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(self, *args, **kwargs)

    monkeypatch.setattr(FileSystemWriter, "write_data", full_on_second)
    assert main(["train", "--config", str(cfg)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert len(err) == 1, err
    good = out / "checkpoints" / "step-00000001"
    size = sum(f.stat().st_size for f in good.rglob("*") if f.is_file())
    assert size > 0
    found = re.search(r"\(it needs about ([0-9.]+) (KiB|MiB|GiB) \(the last one's size\), "
                      r"([0-9.]+) (KiB|MiB|GiB) free\)", err[0])  # fmt: skip
    assert found, err
    units = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
    need = float(found[1]) * units[found[2]]
    assert abs(need - size) <= 0.05 * units[found[2]], (need, size)
    free = float(found[3]) * units[found[4]]
    assert abs(free - shutil.disk_usage(out).free) < 2**30, free
    assert f"the last good checkpoint is {good}" in err[0]


def test_import_llama2c_full_disk_says_the_space_it_needs(shared_data: Path, tmp_path: Path, monkeypatch, capsys) -> None:  # fmt: skip
    """The import's one line (tests/unit/test_small_faults.py) also says how much the weights
    need and what is free, like a checkpoint's."""
    from safetensors import SafetensorError
    from transformers import LlamaForCausalLM

    def full(self, *a, **k) -> None:  # noqa: ANN001, ANN002, ANN003
        raise SafetensorError('IoError(Os { code: 28, kind: StorageFull, message: "No space" })')

    monkeypatch.setattr(LlamaForCausalLM, "save_pretrained", full)
    d = shared_data / "models" / "stories260K"
    argv = ["model", "import-llama2c", "--checkpoint", str(d / "stories260K.bin"),
            "--tokenizer", str(d / "tok512.model"), "--out", str(tmp_path / "m")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    # stories260K: 260,032 fp32 parameters, the classifier tied to the embedding.
    assert "model.safetensors: No space left on device" in err
    assert "needs about 1015.8 KiB" in err and " free)" in err, err
