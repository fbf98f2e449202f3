"""Attention metadata once per micro-batch (issue 20, item 4).

Flash varlen cannot run on CPU, so a stand-in kernel registered with transformers' attention
interface receives exactly what a flash kernel would (the model's config names it, so transformers
builds no mask and passes our kwargs through): it records the kwargs and runs a per-document
causal (windowed) attention from `cu_seq_lens_q` alone. The kwargs must equal those derived from
the rows' `doc_lens`, and the loss computed through them must equal the model's own forward over
each document (so boundaries that were off by one, or a missing window, would fail)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_families import config, doc, packed_row, separate_nll
from transformers import AttentionInterface, AutoModelForCausalLM

from langgraft.model.families import attention_groups
from langgraft.train.loss import collate, forward_nll, model_inputs

torch.set_num_threads(1)
SEEN: list[dict] = []


def varlen_standin(module, query, key, value, attention_mask, scaling=None, sliding_window=None,
                   **kwargs):  # fmt: skip
    """(B=1, H, T, D) packed row -> per-document causal attention from cu_seq_lens_q."""
    SEEN.append({"mask": attention_mask, "window": sliding_window, **kwargs})
    cu = kwargs["cu_seq_lens_q"].tolist()
    rep = query.shape[1] // key.shape[1]
    k, v = key.repeat_interleave(rep, 1), value.repeat_interleave(rep, 1)
    out = torch.empty_like(query)
    for a, b in zip(cu[:-1], cu[1:], strict=True):
        n = b - a
        i = torch.arange(n)
        allowed = i[:, None] >= i[None, :]
        if sliding_window is not None:
            allowed &= (i[:, None] - i[None, :]) < sliding_window
        out[:, :, a:b] = F.scaled_dot_product_attention(
            query[:, :, a:b], k[:, :, a:b], v[:, :, a:b], attn_mask=allowed, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register("langgraft_varlen_standin", varlen_standin)


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2"])
def test_flash_kwargs_come_from_doc_lens_and_give_the_per_document_loss(model_type) -> None:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config(model_type, "langgraft_varlen_standin")).eval()
    ref = AutoModelForCausalLM.from_config(config(model_type, "eager")).eval()
    ref.load_state_dict(model.state_dict())
    rng = np.random.default_rng(3)
    docs = [[doc(rng, n) for n in (15, 4, 11)], [doc(rng, n) for n in (9, 13)]]
    mb = collate([packed_row(d) for d in docs], 0, "flash_attention_2",
                 windows=tuple(attention_groups(model.config).items()))  # fmt: skip
    lens = [len(d) for ds in docs for d in ds]
    want_cu = np.concatenate([[0], np.cumsum(lens)])
    assert mb.cu_seqlens.dtype == torch.int32 and mb.cu_seqlens.tolist() == want_cu.tolist()
    assert mb.max_seqlen == max(lens) and isinstance(mb.max_seqlen, int)
    kw = model_inputs(mb)
    assert kw["max_length_q"] == kw["max_length_k"] == max(lens)
    assert "attention_mask" not in kw
    SEEN.clear()
    with torch.no_grad():
        got = float(forward_nll(model, mb).sum())
        want = separate_nll(ref, [d for ds in docs for d in ds])
    assert len(SEEN) == model.config.num_hidden_layers  # once per layer, same tensors
    assert all(s["cu_seq_lens_q"] is SEEN[0]["cu_seq_lens_q"] for s in SEEN)
    assert all(s["mask"] is None for s in SEEN)
    assert abs(got - want) / want < 1e-5, (got, want)


def test_single_document_rows_pass_no_positions_or_mask() -> None:
    """transformers inspects position_ids for packing (a host sync) when no mask is given;
    rows of one document each have the default positions, so none are passed."""
    rng = np.random.default_rng(4)
    mb = collate([packed_row([doc(rng, 12)]), packed_row([doc(rng, 12)])], 0)
    kw = model_inputs(mb)
    assert mb.causal_is_exact and "position_ids" not in kw and "attention_mask" not in kw
    assert torch.equal(mb.position_ids, torch.arange(12).expand(2, 12))
