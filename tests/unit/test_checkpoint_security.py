"""No code runs from a checkpoint (issue 23, item 1).

DCP unpickles `dcp/.metadata` with plain `pickle.load` and every non-tensor state value with
`torch.load(weights_only=False)`; a checkpoint directory from someone else could run code through
either. Each payload below touches a marker file when unpickled: the marker must never appear,
every entry point (`--init-from`, `--resume PATH`, `--resume auto`, an export directory dressed as
a checkpoint) exits 2 naming the file, and a genuine checkpoint still loads."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from train_helpers import prepared, tiny_model, write_recipe

from langgraft.__main__ import main
from langgraft.distributed import safe_dcp
from langgraft.errors import UserError


class Payload:
    """Unpickling this runs `touch MARKER` (harmless; it proves code ran)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Path]:
    torch.set_num_threads(1)
    t = tmp_path_factory.mktemp("ckpt-security")
    model = tiny_model(t / "model")
    data = prepared(t / "data", model, {"en": 24})
    out = t / "run"
    r = {
        "model": str(model), "out": str(out), "progress": False, "tensorboard": False,
        "checkpoint": {"save_interval": 1, "keep_last": 3},
        "train": {"micro_batch_size": 2, "warmup_steps": 0, "lr": 1e-3},
        "stages": [{"name": "s", "data": [{"path": str(data)}], "steps": 2}],
    }  # fmt: skip
    cfg = write_recipe(t / "recipe.yaml", r)
    assert main(["train", "--config", str(cfg)]) == 0
    return {"t": t, "cfg": cfg, "out": out, "ckpt": out / "checkpoints" / "step-00000002"}


def poisoned(run, name: str, marker: Path) -> Path:
    """A copy of the run's last checkpoint whose dcp/.metadata is the payload."""
    evil = run["t"] / name
    shutil.copytree(run["ckpt"], evil)
    (evil / "dcp" / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    return evil


def fresh_recipe(run, out: Path) -> Path:
    text = run["cfg"].read_text().replace(str(run["out"]), str(out))
    p = out.parent / f"{out.name}.yaml"
    p.write_text(text)
    return p


def expect_refusal(capsys, argv: list[str], marker: Path) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert not marker.exists(), "the checkpoint's pickle ran code"
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "dcp/.metadata" in errors[0] and "refusing" in errors[0], err


def test_init_from_a_poisoned_checkpoint_runs_nothing(run, capsys) -> None:
    marker = run["t"] / "MARKER-init"
    evil = poisoned(run, "evil-init", marker)
    cfg = fresh_recipe(run, run["t"] / "run-init")
    expect_refusal(capsys, ["train", "--config", str(cfg), "--init-from", str(evil),
                            "--dry-run"], marker)  # fmt: skip


def test_resume_path_and_resume_auto_run_nothing(run, capsys) -> None:
    marker = run["t"] / "MARKER-resume"
    evil = poisoned(run, "evil-resume", marker)
    cfg = fresh_recipe(run, run["t"] / "run-resume")
    expect_refusal(capsys, ["train", "--config", str(cfg), "--resume", str(evil)], marker)
    # --resume auto: the run's own latest checkpoint was replaced by someone else's
    out = run["t"] / "run-auto"
    shutil.copytree(run["out"], out)
    latest = out / "checkpoints" / (out / "checkpoints" / "latest").read_text().strip()
    (latest / "dcp" / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    cfg = fresh_recipe(run, out)
    expect_refusal(capsys, ["train", "--config", str(cfg), "--resume", "auto"], marker)


def test_export_directory_dressed_as_a_checkpoint_runs_nothing(run, capsys) -> None:
    marker = run["t"] / "MARKER-export"
    evil = run["t"] / "evil-export"
    shutil.copytree(run["out"] / "export", evil)
    shutil.copy(run["ckpt"] / "trainer_state.json", evil / "trainer_state.json")
    (evil / "dcp").mkdir()
    (evil / "dcp" / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    cfg = fresh_recipe(run, run["t"] / "run-export")
    expect_refusal(capsys, ["train", "--config", str(cfg), "--init-from", str(evil),
                            "--dry-run"], marker)  # fmt: skip


def test_damaged_metadata_is_one_line_naming_the_file(run, capsys) -> None:
    evil = run["t"] / "evil-damaged"
    shutil.copytree(run["ckpt"], evil)
    data = (evil / "dcp" / ".metadata").read_bytes()
    (evil / "dcp" / ".metadata").write_bytes(data[: len(data) // 2])
    cfg = fresh_recipe(run, run["t"] / "run-damaged")
    capsys.readouterr()
    assert main(["train", "--config", str(cfg), "--init-from", str(evil), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "dcp/.metadata" in err and "damaged" in err, err


def test_genuine_metadata_reads_and_foreign_classes_are_refused(run, tmp_path) -> None:
    mid = run["out"] / "checkpoints" / "step-00000001"  # mid-stage: model and AdamW state
    md = safe_dcp.read_metadata(mid / "dcp" / ".metadata")
    assert any(k.startswith("model.") for k in md.state_dict_metadata)
    assert any(k.startswith("optim.") for k in md.state_dict_metadata)
    # A class that is harmless but not DCP metadata is refused as well: an allow-list.
    f = tmp_path / "m"
    f.write_bytes(pickle.dumps({"x": torch.nn.Linear}))
    with pytest.raises(UserError, match="torch.nn.modules.linear.Linear"):
        safe_dcp.read_metadata(f)


def test_genuine_checkpoint_resumes_through_the_safe_reader(run, capsys) -> None:
    """A real mid-stage checkpoint (model, AdamW, param_groups' plain values) resumes and ends
    where the uninterrupted run ended (the resume oracle itself: tests/integration)."""
    out = run["t"] / "run-genuine"
    shutil.copytree(run["out"], out)
    (out / "checkpoints" / "latest").write_text("step-00000001\n")
    cfg = fresh_recipe(run, out)
    capsys.readouterr()
    assert main(["train", "--config", str(cfg), "--resume", "auto"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "s: 2 steps, final loss 6.1946"


def test_non_tensor_values_are_read_weights_only(tmp_path) -> None:
    """The second pickle DCP reads: a non-tensor state value. DCP's own planner runs it (the
    hole this test proves exists); ours refuses and the marker stays absent."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    from langgraft.distributed.checkpoint import _dcp_load

    marker = tmp_path / "MARKER-bytes"
    ck = tmp_path / "dcp"
    dcp.save({"w": torch.ones(2), "extra": Payload(marker)}, checkpoint_id=str(ck))
    with pytest.raises(CheckpointException) as raised:  # DCP wraps every per-rank failure
        dcp.load({"w": torch.zeros(2), "extra": None}, storage_reader=safe_dcp.reader(ck),
                 planner=safe_dcp.planner())  # fmt: skip
    assert "refusing to unpickle the checkpoint value 'extra'" in str(raised.value)
    assert not marker.exists()
    # Through langgraft's loader: one UserError naming the checkpoint.
    (tmp_path / "trainer_state.json").write_text("{}")  # ck = tmp_path / "dcp"
    with pytest.raises(UserError, match=r"dcp: refusing to unpickle the checkpoint value 'extra'"):
        _dcp_load(tmp_path, {"w": torch.zeros(2), "extra": None})
    assert not marker.exists()
    # Plain values (what an optimizer's param_groups hold) still load.
    ok = tmp_path / "ok"
    dcp.save({"w": torch.ones(2), "lr": 3e-4, "betas": (0.9, 0.95), "name": "s"},
             checkpoint_id=str(ok))  # fmt: skip
    state = {"w": torch.zeros(2), "lr": None, "betas": None, "name": None}
    dcp.load(state, storage_reader=safe_dcp.reader(ok), planner=safe_dcp.planner())
    assert state["lr"] == 3e-4 and tuple(state["betas"]) == (0.9, 0.95) and state["name"] == "s"
    assert torch.equal(state["w"], torch.ones(2))
    # The oracle: DCP's default planner does run the payload.
    dcp.load({"w": torch.zeros(2), "extra": None}, checkpoint_id=str(ck))
    assert marker.exists()
