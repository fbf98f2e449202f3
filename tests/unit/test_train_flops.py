"""MFU accounting (train/metrics.py): matmul weights include lm_head (also tied), frozen weights
cost forward + input gradient only, attention is counted at the real per-document lengths, the
collated micro-batch carries those pairs, and one peak table tells the device variants apart."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import LlamaConfig, LlamaForCausalLM

from langgraft.train import metrics
from langgraft.train.data import Row
from langgraft.train.loss import collate
from langgraft.train.metrics import (
    PEAK_BF16_DENSE,
    MatmulWeights,
    attention_dim,
    device_peak_flops,
    matmul_params,
    mfu,
    peak_flops,
    training_flops,
)
from langgraft.train.recipe import StageConfig
from langgraft.train.setup import configure_trainable


def _tiny(tie: bool = True) -> tuple[LlamaConfig, LlamaForCausalLM]:
    cfg = LlamaConfig(vocab_size=100, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tie)  # fmt: skip
    torch.manual_seed(0)
    return cfg, LlamaForCausalLM(cfg)


def test_flops_count_lm_head_and_block_causal_pairs() -> None:
    cfg, model = _tiny()
    per_layer = 16 * 16 * 2 + 16 * 8 * 2 + 16 * 24 * 3  # q, o; k, v (GQA); gate, up, down
    # the tied lm_head still multiplies
    assert matmul_params(model) == MatmulWeights(2 * per_layer + 100 * 16, 0)
    assert attention_dim(cfg) == 16
    ids = np.arange(1, 6, dtype=np.int32)
    rows = [Row(ids, ids.copy(), np.array([3, 2], np.int32), "c"),
            Row(ids[:4], ids[:4].copy(), np.array([4], np.int32), "c")]  # fmt: skip
    mb = collate(rows, pad_id=0)
    assert mb.causal_pairs == (6 + 3) + 10  # pads (row 2) are not counted
    flops = training_flops(matmul_params(model), mb.num_tokens, mb.causal_pairs, 2, 16)
    assert flops == 6 * (2 * per_layer + 1600) * 9 + 12 * 2 * 16 * 19
    # the same tokens as one 9-token document would cost more attention
    assert training_flops(1, 9, 45, 2, 16) > training_flops(1, 9, mb.causal_pairs, 2, 16)
    assert torch.is_tensor(mb.segments) and mb.segments.dtype == torch.int32


def _measured_train_flops(model: LlamaForCausalLM, ids: torch.Tensor) -> int:
    """FLOPs torch really dispatches for one forward + backward (eager attention: the full
    n x n scores), without the rotary embedding's tiny inv_freq x positions product."""
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, labels=ids).loss.backward()
    by_module = counter.get_flop_counts()
    rotary = sum(sum(v.values()) for k, v in by_module.items() if k.endswith("rotary_emb"))
    return counter.get_total_flops() - rotary


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("embeddings_only", [False, True])
def test_formula_equals_the_flops_torch_dispatches(tie: bool, embeddings_only: bool) -> None:
    """6 per trainable matmul weight and token, 4 per frozen one (no weight gradient), 12 L d
    per attention pair: checked against torch's own FLOP counter on full (square) attention,
    which is what eager computes; the convention then counts causal pairs instead."""
    cfg, model = _tiny(tie)
    cfg._attn_implementation = "eager"
    stage = StageConfig(freeze_non_embeds_params=embeddings_only)
    model = configure_trainable(model, stage)
    weights = matmul_params(model)
    if embeddings_only:  # only lm_head (tied or not) trains among the matmuls
        assert weights.trainable == 100 * 16 and weights.frozen > 0
    else:
        assert weights.frozen == 0
    rows, n = 3, 8
    ids = torch.randint(3, 100, (rows, n))
    measured = _measured_train_flops(model, ids)
    square_pairs = rows * n * n
    assert measured == training_flops(weights, rows * n, square_pairs, 2, attention_dim(cfg))
    # an embeddings-only stage is cheaper than 6N (today's accounting counted it as full)
    if embeddings_only:
        assert measured < training_flops(weights.total, rows * n, square_pairs, 2, 16)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 SXM5 80GB", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H100 NVL", "H100 NVL"),
        ("NVIDIA H200", "H200 SXM"),
        ("NVIDIA H200 NVL", "H200 NVL"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA A100-PCIE-40GB", "A100"),
        ("NVIDIA A100 80GB PCIe", "A100"),
        ("NVIDIA A800-SXM4-80GB", "A800"),
        ("NVIDIA A800 80GB PCIe", "A800"),
        ("NVIDIA L40S", "L40S"),
        ("AMD Instinct MI300X", "MI300X"),
        ("AMD Instinct MI300X VF", "MI300X"),
    ],
)
def test_peak_by_device_name(name: str, key: str) -> None:
    assert device_peak_flops(name) == PEAK_BF16_DENSE[key]


def test_peak_table_holds_the_datasheets_dense_figures() -> None:
    # dense = half the "with sparsity" figure of each datasheet (H100 / H200 / L40S / MI300X)
    assert PEAK_BF16_DENSE["H100 SXM"] == PEAK_BF16_DENSE["H200 SXM"] == 989.5e12
    assert PEAK_BF16_DENSE["H100 PCIe"] == 756.5e12
    assert PEAK_BF16_DENSE["H100 NVL"] == PEAK_BF16_DENSE["H200 NVL"] == 835.5e12
    assert PEAK_BF16_DENSE["L40S"] == 362.05e12  # not 181: that is the L40 (no S)
    assert PEAK_BF16_DENSE["A100"] == PEAK_BF16_DENSE["A800"] == 312e12
    assert PEAK_BF16_DENSE["MI300X"] == 1307.4e12


@pytest.mark.parametrize(
    "name",
    ["NVIDIA H100", "NVIDIA L40", "NVIDIA GeForce RTX 4090", "NVIDIA H100 80GB HBM3 MIG 1g.10gb",
     "NVIDIA A10G", "Tesla V100-SXM2-16GB"],
)  # fmt: skip
def test_unknown_device_gives_no_mfu(name: str, monkeypatch, caplog) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    metrics.device_peak_flops.cache_clear()
    with caplog.at_level(logging.WARNING, logger=metrics.__name__):
        assert peak_flops(torch.device("cuda")) is None
        assert mfu(400e12, torch.device("cuda")) is None
    assert name in caplog.text


def test_mfu_of_a_known_device(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 PCIe")
    assert mfu(378.25e12, torch.device("cuda", 0)) == pytest.approx(0.5)
    assert mfu(378.25e12, torch.device("cpu")) is None
