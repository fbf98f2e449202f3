"""`--plan` against measured memory: the estimate for one process (fp32, sdpa) must be within
25 % of the peak of live tensor bytes that torch's MemTracker measures over real training steps
on CPU (the trainer's own `accumulate` + AdamW), with and without activation checkpointing. On
CUDA bench/bench_plugins.py compares it with torch.cuda.max_memory_allocated."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from langgraft.distributed.dims import ParallelDims
from langgraft.distributed.plan import plan_memory
from langgraft.train.data import Row
from langgraft.train.loss import collate
from langgraft.train.optim import build_optimizer
from langgraft.train.recipe import recipe_from_dict
from langgraft.train.step import accumulate

pytestmark = pytest.mark.timeout(300)
TOLERANCE = 0.25


def cfg():
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=641, hidden_size=256, intermediate_size=688,
                       num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=256, tie_word_embeddings=False)  # fmt: skip


def measured_peak(grad_checkpoint: bool, batch: int, seq: int, acc: int) -> float:
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg())
    model.config._attn_implementation = "sdpa"
    if grad_checkpoint:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    rec = recipe_from_dict(_recipe(grad_checkpoint, batch, seq, acc))
    opt, sched = build_optimizer(model, rec.stages[0], total_steps=4)
    rng = np.random.default_rng(0)
    rows = [Row(rng.integers(3, 641, seq).astype(np.int32), rng.integers(3, 641, seq).astype(
        np.int32), np.array([seq // 2, seq - seq // 2]), "x") for _ in range(batch * acc)]  # fmt: skip
    micro = [collate(rows[i : i + batch], 0) for i in range(0, len(rows), batch)]
    no_autocast = lambda: torch.autocast("cpu", enabled=False)  # noqa: E731

    def step() -> None:
        accumulate(model, micro, torch.device("cpu"), no_autocast)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # AdamW state exists from here on, as in every step but the first
    inputs = [t for mb in micro for t in vars(mb).values() if isinstance(t, torch.Tensor)]
    state = [t for s in opt.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    tracker = LiveBytes([*model.parameters(), *model.buffers(), *state, *inputs])
    with tracker:
        step()
    return float(tracker.peak)


class LiveBytes(TorchDispatchMode):
    """Peak bytes of live tensor storages: the given tensors plus every storage an op creates,
    released when its storage is freed (what a caching allocator would have to hold)."""

    def __init__(self, existing: list[torch.Tensor]) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        for t in existing:
            self._add(t.untyped_storage())
        self.peak = self.now = sum(self.live.values())

    def _add(self, st: torch.UntypedStorage) -> None:
        key = st._cdata
        if key in self.live or st.nbytes() == 0:
            return
        self.live[key] = st.nbytes()
        weakref.finalize(st, self.live.pop, key, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._add(t.untyped_storage())
        self.peak = max(self.peak, sum(self.live.values()))
        return out


def _recipe(grad_checkpoint: bool, batch: int, seq: int, acc: int) -> dict:
    return {"model": "m", "out": "o", "precision": "fp32", "grad_checkpoint": grad_checkpoint,
            "max_length": seq, "train": {"micro_batch_size": batch, "accumulation_steps": acc},
            "stages": [{"name": "a", "data": [{"path": "d"}], "steps": 4}]}  # fmt: skip


@pytest.mark.parametrize("grad_checkpoint, acc", [(False, 1), (True, 1)])
def test_plan_is_within_tolerance_of_measured_peak(grad_checkpoint: bool, acc: int) -> None:
    batch, seq = 4, 128
    rec = recipe_from_dict(_recipe(grad_checkpoint, batch, seq, acc))
    est = plan_memory(rec, ParallelDims("none", 1), cfg()).peak
    got = measured_peak(grad_checkpoint, batch, seq, acc)
    assert abs(est - got) / got < TOLERANCE, (est / 2**20, got / 2**20)


def test_sharding_divides_the_state() -> None:
    rec = recipe_from_dict(_recipe(True, 1, 64, 1))
    one = plan_memory(rec, ParallelDims("none", 1), cfg()).rows
    four = plan_memory(rec, ParallelDims("gemini", 4), cfg()).rows
    for k in ("parameters (fp32)", "gradients (fp32)", "AdamW state (fp32 m, v)"):
        assert four[k] == pytest.approx(one[k] / 4)
    off = plan_memory(rec, ParallelDims("gemini_auto", 4), cfg())
    assert off.rows["AdamW state (fp32 m, v)"] == 0 and off.host == pytest.approx(
        sum(four[k] for k in ("parameters (fp32)", "gradients (fp32)", "AdamW state (fp32 m, v)"))
    )
