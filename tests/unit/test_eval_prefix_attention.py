"""The split prefix attention of the shared-prefix scorer (issue 22, eval speed): the same
log-probabilities as one plain forward pass over each whole prompt, without a per-row copy of the
prefix keys/values, and the model's own attention given back afterwards."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from eval_helpers import tiny_model

from langgraft.eval import scorer
from langgraft.eval.scorer import Request, score_naive, score_shared_prefix


def _requests(seed: int = 3) -> list[Request]:
    """A shared 60-token prefix, suffixes of skewed lengths (so batches are padded), one or two
    reads each, some reading several ids and some reading inside the suffix."""
    g = torch.Generator().manual_seed(seed)
    prefix = [1, *torch.randint(3, 30000, (59,), generator=g).tolist()]
    reqs = []
    for n in (1, 2, 7, 30, 4, 13, 29, 5, 1, 16):
        ids = prefix + torch.randint(3, 30000, (n,), generator=g).tolist()
        reads = [(len(ids) - 1, [5, 6, 7, 8])]
        if n > 3:
            reads.insert(0, (len(ids) - 3, [int(ids[-2])]))
        reqs.append(Request(ids, reads))
    return reqs


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    calls: list[dict] = []
    real = scorer.prefix_attention

    def spy(module, query, key, value, attention_mask, **kw):
        out, weights = real(module, query, key, value, attention_mask, **kw)
        rows = torch.arange(out.shape[0])[:, None]
        computed = torch.zeros(out.shape[:2], dtype=torch.bool)
        computed[rows, kw["langgraft_reads"]] = True
        calls.append(
            {
                "layer": module.layer_idx,
                "prefix_rows": kw["langgraft_prefix"][module.layer_idx][0].shape[0],
                "width": out.shape[1],
                "unread_zero": bool((out[~computed] == 0).all()),
                "any_unread": bool((~computed).any()),
            }
        )
        return out, weights

    monkeypatch.setattr(scorer, "prefix_attention", spy)
    return calls


@pytest.mark.parametrize("batch_size", [3, None])
def test_split_prefix_attention_equals_plain_forward(monkeypatch, batch_size) -> None:
    model = tiny_model()
    reqs = _requests()
    calls = _spy(monkeypatch)
    got = score_shared_prefix(model, reqs, batch_size=batch_size)
    want = score_naive(model, reqs)  # one forward pass over each whole prompt
    for ra, rb in zip(got, want, strict=True):
        assert len(ra) == len(rb)
        for x, y in zip(ra, rb, strict=True):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-6)
    assert calls, "the split path did not run"
    # The prefix keys/values are shared by every row, never copied per row.
    assert {c["prefix_rows"] for c in calls} == {1}
    # The last layer computes only the positions read (the others stay zero, never read); the
    # layers before compute every position.
    last = [c for c in calls if c["layer"] == max(d["layer"] for d in calls)]
    assert any(c["any_unread"] for c in last) and all(c["unread_zero"] for c in last)
    assert not all(c["unread_zero"] for c in calls if c not in last and c["any_unread"])
    assert model.config._attn_implementation == "sdpa"


def test_split_path_agrees_with_the_cache_path_and_restores_attention(monkeypatch) -> None:
    model = tiny_model()
    reqs = _requests(seed=5)
    split = score_shared_prefix(model, reqs, batch_size=4, split=True)
    cached = score_shared_prefix(model, reqs, batch_size=4, split=False)
    for ra, rb in zip(split, cached, strict=True):
        for x, y in zip(ra, rb, strict=True):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-6)

    def broken(*args, **kwargs):
        raise RuntimeError("kernel failed")

    monkeypatch.setattr(scorer, "prefix_attention", broken)
    with pytest.raises(RuntimeError, match="kernel failed"):
        score_shared_prefix(model, reqs, batch_size=4, split=True)
    assert model.config._attn_implementation == "sdpa"


def test_split_path_only_where_it_is_exact() -> None:
    def fake(device: str, model_type: str) -> SimpleNamespace:
        return SimpleNamespace(
            device=torch.device(device), config=SimpleNamespace(model_type=model_type)
        )

    assert scorer._split_attention_ok(fake("cpu", "llama"))
    # Mistral/Qwen2 may slide their window, Gemma caps its scores: the plain path handles them.
    assert not scorer._split_attention_ok(fake("cpu", "mistral"))
    assert not scorer._split_attention_ok(fake("meta", "llama"))
