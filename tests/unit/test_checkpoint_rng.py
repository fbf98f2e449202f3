"""The RNG file of a checkpoint holds this rank's own CUDA device state and restores it on a node
with any number of GPUs; checkpoints from before (a list of every visible GPU's state) still
load (distributed/checkpoint.py). CUDA is faked on CPU: torch's own get/set_rng_state run over
stand-in per-device generators, so an out-of-range device index fails as it would on a GPU."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from langgraft.distributed import checkpoint as ckpt


class _Generator:
    """Stands for torch.cuda.default_generators[i]."""

    def __init__(self, i: int) -> None:
        self.state = torch.full((16,), 100 + i, dtype=torch.uint8)

    def get_state(self) -> torch.Tensor:
        return self.state.clone()

    def set_state(self, state: torch.Tensor) -> None:
        self.state = state.clone()


@pytest.fixture
def fake_cuda(monkeypatch):
    """fake_cuda(visible, local): `visible` GPUs, this process on cuda:`local`."""

    def install(visible: int, local: int = 0) -> tuple[_Generator, ...]:
        gens = tuple(_Generator(i) for i in range(visible))
        monkeypatch.setattr(torch.cuda, "is_available", lambda: visible > 0)
        monkeypatch.setattr(torch.cuda, "default_generators", gens)
        for mod in (torch.cuda, torch.cuda.random):
            monkeypatch.setattr(mod, "device_count", lambda: visible)
            monkeypatch.setattr(mod, "current_device", lambda: local)
        monkeypatch.setattr(torch.cuda.random, "_lazy_init", lambda: None)
        monkeypatch.setattr(torch.cuda.random, "_lazy_call", lambda cb, **kw: cb())
        monkeypatch.setattr(torch.cuda.random, "is_initialized", lambda: True)
        return gens

    return install


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def _old_checkpoint(tmp_path: Path, devices: int) -> tuple:
    """rng.pt as a process that saw `devices` GPUs wrote it before: cuda = one state per GPU.
    Returns the host draws that follow the saved state."""
    state = ckpt.rng_state()
    state["cuda"] = [torch.full((16,), i, dtype=torch.uint8) for i in range(devices)]
    torch.save(state, tmp_path / ckpt.rng_file(0))
    return _draws()


def test_old_8_gpu_rng_list_resumes_on_4_or_0_gpus(tmp_path, fake_cuda, monkeypatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    expected = _old_checkpoint(tmp_path, devices=8)
    gens = fake_cuda(visible=4, local=3)
    ckpt.load_rng_state(tmp_path)  # was: IndexError from set_rng_state_all
    assert torch.equal(gens[3].state, torch.full((16,), 3, dtype=torch.uint8))
    assert all(torch.equal(g.state, _Generator(i).state) for i, g in enumerate(gens[:3]))
    assert _draws() == expected  # python, numpy and torch host states restored too
    fake_cuda(visible=0)  # a CPU-only resume of a GPU checkpoint
    ckpt.load_rng_state(tmp_path)
    assert _draws() == expected


def test_old_list_without_the_local_device_keeps_the_seeded_state(
    tmp_path, fake_cuda, monkeypatch, caplog
) -> None:
    monkeypatch.delenv("RANK", raising=False)
    expected = _old_checkpoint(tmp_path, devices=4)
    gens = fake_cuda(visible=8, local=6)
    with caplog.at_level(logging.WARNING, logger=ckpt.__name__):
        ckpt.load_rng_state(tmp_path)
    assert torch.equal(gens[6].state, _Generator(6).state)
    assert "none for cuda:6" in caplog.text
    assert _draws() == expected


def test_saves_and_restores_the_local_device_only(tmp_path, fake_cuda, monkeypatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    gens = fake_cuda(visible=4, local=2)
    gens[2].set_state(torch.arange(16, dtype=torch.uint8))
    state = ckpt.rng_state()
    assert torch.is_tensor(state["cuda"]) and torch.equal(state["cuda"], gens[2].state)
    torch.save(state, tmp_path / ckpt.rng_file(0))
    gens = fake_cuda(visible=8, local=6)  # resumed on a bigger node, another local index
    ckpt.load_rng_state(tmp_path)
    assert torch.equal(gens[6].state, torch.arange(16, dtype=torch.uint8))
    assert all(torch.equal(g.state, _Generator(i).state) for i, g in enumerate(gens) if i != 6)
