"""NEFTune noise is Uniform(+-alpha/sqrt(L*d)) with L each row's own real length, on the padded
path and on the packed (flash) path, where the rows are concatenated into one."""

from __future__ import annotations

import math

import torch

from langgraft.train.setup import NeftHook


def noise(lengths: list[int], packed: bool, d: int = 256, alpha: float = 5.0) -> torch.Tensor:
    torch.manual_seed(0)
    emb = torch.nn.Embedding(8, d)
    torch.nn.init.zeros_(emb.weight)  # the output is the noise alone
    hook = NeftHook(emb, alpha)
    hook.lengths = torch.tensor(lengths)
    if packed:
        ids = torch.zeros(1, sum(lengths), dtype=torch.long)
    else:
        ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    with torch.no_grad():
        return emb(ids)


def bound(n: int, d: int = 256, alpha: float = 5.0) -> float:
    return alpha / math.sqrt(n * d)


def test_packed_rows_are_scaled_by_their_own_length() -> None:
    out = noise([4, 60], packed=True)[0].abs()
    first, second = out[:4].max().item(), out[4:].max().item()
    # 4 x 256 uniform draws come within 1 % of their bound; the total length (64) would cap
    # the first row at a quarter of it.
    assert 0.99 * bound(4) < first <= bound(4)
    assert 0.99 * bound(60) < second <= bound(60)


def test_padded_rows_are_scaled_by_their_real_length() -> None:
    out = noise([4, 60], packed=False).abs()
    assert 0.99 * bound(4) < out[0].max().item() <= bound(4)
    assert 0.99 * bound(60) < out[1].max().item() <= bound(60)


def test_eval_mode_adds_no_noise() -> None:
    emb = torch.nn.Embedding(8, 16)
    NeftHook(emb, 5.0)
    emb.eval()
    ids = torch.arange(8)[None]
    assert torch.equal(emb(ids), emb.weight[None])
