"""Per-document attention (packed == separate), token-weighted accumulation, a real pad id,
the optimizer's decay groups and the warm-up + cosine schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from langgraft.errors import UserError
from langgraft.train.attention import additive_mask, check_implementation
from langgraft.train.data import Row
from langgraft.train.loss import (
    category_sums,
    category_totals,
    chunked_nll,
    collate,
    forward_nll,
    model_inputs,
    row_sums,
    token_nll,
)
from langgraft.train.optim import lr_at, param_groups, warmup_steps_for
from langgraft.train.recipe import StageConfig
from langgraft.train.setup import pad_token_id
from langgraft.train.step import accumulate, step_totals

torch.set_num_threads(1)


def tiny(impl: str, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        attn_implementation=impl,
    )  # fmt: skip
    return LlamaForCausalLM(cfg).float()


def doc(rng: np.random.Generator, n: int, eos: int = 2) -> np.ndarray:
    ids = rng.integers(3, 97, n).astype(np.int32)
    ids[0], ids[-1] = 1, eos  # BOS ... EOS, as prepare writes documents
    return ids


def packed_row(docs: list[np.ndarray], category: str = "c") -> Row:
    """prepare's layout: labels = ids, -100 at the first token of each document."""
    ids = np.concatenate(docs)
    labels = ids.copy()
    starts = np.cumsum([0] + [len(d) for d in docs[:-1]])
    labels[starts] = -100
    return Row(ids, labels.astype(np.int32), np.array([len(d) for d in docs], np.int32), category)


def separate_nll(model, docs: list[np.ndarray]) -> float:
    total = 0.0
    for d in docs:
        ids = torch.from_numpy(d.astype(np.int64))[None]
        logits = model(input_ids=ids, use_cache=False).logits
        total += float(
            torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum")
        )
    return total


@pytest.mark.parametrize("impl", ["eager", "sdpa", "flex_attention"])
def test_packed_loss_equals_sum_of_separate_documents(impl: str) -> None:
    model = tiny(impl).eval()
    ref = tiny("sdpa").eval()  # the same weights: documents scored one at a time (one flex compile)
    rng = np.random.default_rng(0)
    docs = [doc(rng, n) for n in (9, 17, 5)]
    other = [doc(rng, n) for n in (30, 4)]
    # Two rows of different lengths in one micro-batch: the short one is padded.
    mb = collate([packed_row(docs), packed_row(other)], pad_id=0, attn_implementation=impl)
    with torch.no_grad():
        nll = forward_nll(model, mb)
        per_row = row_sums(nll, mb)
        want0, want1 = separate_nll(ref, docs), separate_nll(ref, other)
        full = token_nll(model(**model_inputs(mb)).logits, mb.labels)  # the logits path agrees
    assert mb.input_ids.shape == (2, 34)
    assert float(per_row[0]) == pytest.approx(want0, rel=1e-5)
    assert float(per_row[1]) == pytest.approx(want1, rel=1e-5)
    assert category_sums(full, mb)["c"][0] == pytest.approx(want0 + want1, rel=1e-5)
    assert category_totals(per_row, mb) == {"c": (pytest.approx(want0 + want1, rel=1e-5), 60)}
    # Without the document mask the packed loss is different: the test can fail.
    with torch.no_grad():
        crossing = ref(input_ids=mb.input_ids[:1], use_cache=False).logits
        bad = float(token_nll(crossing, mb.labels[:1]).sum())
    assert abs(bad - want0) > 1e-3


def test_one_document_per_row_needs_no_mask() -> None:
    rng = np.random.default_rng(3)
    rows = [packed_row([doc(rng, 12)]), packed_row([doc(rng, 12)])]
    mb = collate(rows, pad_id=0)
    assert mb.causal_is_exact and "attention_mask" not in model_inputs(mb)
    model = tiny("sdpa").eval()
    with torch.no_grad():
        got = float(forward_nll(model, mb).sum())
    assert got == pytest.approx(separate_nll(model, [rows[0].input_ids, rows[1].input_ids]))
    # a pad or a second document brings the mask back
    assert "attention_mask" in model_inputs(collate(rows[:1] + [packed_row([doc(rng, 5)])], 0))


def test_fixed_width_padding_changes_nothing_but_the_shape() -> None:
    rng = np.random.default_rng(5)
    rows = [packed_row([doc(rng, 9), doc(rng, 6)]), packed_row([doc(rng, 11)])]
    model = tiny("sdpa").eval()
    with torch.no_grad():
        a, b = collate(rows, 0), collate(rows, 0, pad_to=24)
        assert a.input_ids.shape == (2, 15) and b.input_ids.shape == (2, 24)
        torch.testing.assert_close(forward_nll(model, b), forward_nll(model, a))


def test_flash_rows_are_concatenated_and_kernels_are_never_swapped_silently() -> None:
    rng = np.random.default_rng(4)
    rows = [packed_row([doc(rng, 7), doc(rng, 3)]), packed_row([doc(rng, 5)])]
    mb = collate(rows, pad_id=0, attn_implementation="flash_attention_2")
    assert mb.input_ids.shape == (1, 15) and "attention_mask" not in model_inputs(mb)
    assert mb.position_ids[0].tolist() == [0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 0, 1, 2, 3, 4]
    assert mb.target_row.tolist() == [0] * 8 + [1] * 4  # no target crosses a row
    cpu = torch.device("cpu")
    for impl, match in (("flash_attention_2", "needs a CUDA device"),
                        ("flex_attention", "no backward pass on CPU")):  # fmt: skip
        with pytest.raises(UserError, match=match):
            check_implementation(impl, cpu)
    check_implementation("flex_attention", cpu, training=False)  # forward-only is fine


def test_chunked_loss_equals_full_loss_with_gradients() -> None:
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    h = torch.randn(37, 16, requires_grad=True)
    t = torch.randint(0, 50, (37,))
    full = torch.nn.functional.cross_entropy(head(h), t, reduction="none")
    g_full = torch.autograd.grad(full.sum(), [h, head.weight])
    # 10 targets of fp32 logits per chunk: four chunks, each recomputed in backward
    chunked = chunked_nll(h, head, t, 50, chunk_bytes=10 * 50 * 4)
    g_chunk = torch.autograd.grad(chunked.sum(), [h, head.weight])
    torch.testing.assert_close(chunked, full)
    for a, b in zip(g_full, g_chunk, strict=True):
        torch.testing.assert_close(a, b)


def test_real_eos_inside_a_packed_row_is_attended_and_trained() -> None:
    rng = np.random.default_rng(1)
    row = packed_row([doc(rng, 6), doc(rng, 6)])
    mb = collate([row, packed_row([doc(rng, 3)])], pad_id=0)
    eos_positions = (mb.input_ids[0] == 2).nonzero().flatten().tolist()
    assert eos_positions == [5, 11]
    assert mb.labels[0, 5] == 2 and mb.labels[0, 11] == 2  # EOS is a target
    mask = additive_mask(mb.segments, torch.float32)[0, 0]
    assert mask[8, 5] < -1e30  # the second document does not see the first one's EOS
    assert mask[4, 2] == 0 and mask[5, 5] == 0  # within a document, causal
    assert (mb.labels[1, 3:] == -100).all()  # pads are never trained


def test_pad_id_is_never_eos() -> None:
    class Tok:
        pad_token_id, unk_token_id, eos_token_id = 2, 0, 2

    assert pad_token_id(Tok()) == 0
    Tok.pad_token_id = None
    assert pad_token_id(Tok()) == 0
    Tok.unk_token_id = None
    assert pad_token_id(Tok()) not in (2, None)


def _grads(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_loss_is_token_weighted_across_accumulated_micro_batches() -> None:
    rng = np.random.default_rng(2)
    rows = [packed_row([doc(rng, 40)]), packed_row([doc(rng, 5)])]  # 39 vs 4 supervised
    ctx = __import__("contextlib").nullcontext
    a = tiny("sdpa")
    cpu = torch.device("cpu")
    res_a = accumulate(a, [collate(rows[:1], 0), collate(rows[1:], 0)], cpu, ctx)
    loss_a, n_a, _, _ = step_totals(res_a, cpu)
    b = tiny("sdpa")
    loss_b, n_b, _, _ = step_totals(accumulate(b, [collate(rows, 0)], cpu, ctx), cpu)
    assert n_a == n_b == 43
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    torch.testing.assert_close(_grads(a), _grads(b), rtol=1e-5, atol=1e-7)
    # ... and it is not the mean of the two micro-batch means.
    c = tiny("sdpa").eval()
    with torch.no_grad():
        means = [
            float(token_nll(c(**model_inputs(m)).logits, m.labels).sum()) / m.num_supervised
            for m in (collate(rows[:1], 0), collate(rows[1:], 0))
        ]
    assert abs(sum(means) / 2 - loss_a) > 1e-3


def test_no_weight_decay_on_norms_unless_asked() -> None:
    model = tiny("sdpa")
    groups = param_groups(model, StageConfig(weight_decay=0.1))
    decayed = {id(p) for p in groups[0]["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decayed) == ("norm" not in name), name
    assert groups[1]["weight_decay"] == 0.0
    groups = param_groups(model, StageConfig(weight_decay=0.1, decay_norms_and_biases=True))
    assert len(groups) == 1


def test_warmup_cosine_to_floor() -> None:
    stage = StageConfig(lr=1.0)
    total = 400
    warm = warmup_steps_for(stage, total)
    assert warm == 10  # 2.5% default
    lrs = [lr_at(s, 1.0, total, warm, 0.1) for s in range(total)]
    assert lrs[0] == pytest.approx(0.1) and lrs[warm - 1] == pytest.approx(1.0)
    assert lrs[warm] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.1)
    assert all(x >= y for x, y in zip(lrs[warm:], lrs[warm + 1 :], strict=False))
    mid = warm + (total - warm - 1) // 2
    assert lrs[mid] == pytest.approx(0.55, abs=0.01)
    assert warmup_steps_for(StageConfig(warmup_steps=7), total) == 7
    assert not math.isnan(lr_at(0, 1.0, 1, 0, 0.1))
