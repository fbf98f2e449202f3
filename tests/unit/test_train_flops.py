"""MFU accounting (train/metrics.py): matmul weights include lm_head (also tied), attention is
counted at the real per-document lengths, and the collated micro-batch carries those pairs."""

from __future__ import annotations

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from langgraft.train.data import Row
from langgraft.train.loss import collate
from langgraft.train.metrics import attention_dim, matmul_params, training_flops


def test_flops_count_lm_head_and_block_causal_pairs() -> None:
    cfg = LlamaConfig(vocab_size=100, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)  # fmt: skip
    model = LlamaForCausalLM(cfg)
    per_layer = 16 * 16 * 2 + 16 * 8 * 2 + 16 * 24 * 3  # q, o; k, v (GQA); gate, up, down
    assert matmul_params(model) == 2 * per_layer + 100 * 16  # the tied lm_head still multiplies
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
