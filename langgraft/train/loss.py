"""Micro-batches, per-document attention and the token-weighted loss.

Packed rows hold several documents (`doc_lens`). Attention must not cross them, and positions
restart at 0 in each. With sdpa/eager the micro-batch is right-padded and an additive float
block-causal mask is passed: a boolean 4-D mask is mis-read by HF's eager path, and relying on
position_ids alone is silently wrong unless use_cache=False (measured on transformers 5.24).
Pads form their own block, so no softmax row is empty (no NaN) and no real token sees them.
With flash attention the rows are concatenated into one unpadded row and the kernel finds the
documents from the position_ids resets (varlen), the efficient path on GPU.

The mask comes from the recorded lengths, never from comparing ids with a pad id: a real EOS
inside a packed row is attended to and trained on (Colossal's pad=eos masks it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from langgraft.data.writer import position_ids_from_doc_lens
from langgraft.train.data import Row


@dataclass
class MicroBatch:
    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    row_index: torch.Tensor
    """Which row (of `categories`) each position belongs to, -1 for pads; per-category loss."""
    categories: list[str]
    real_lengths: torch.Tensor
    """Real (unpadded) tokens of each row."""

    @property
    def num_tokens(self) -> int:
        return int(self.real_lengths.sum())

    @property
    def num_supervised(self) -> int:
        return int((self.labels[:, 1:] != -100).sum())

    def to(self, device: Any) -> MicroBatch:
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return MicroBatch(
            move(self.input_ids),
            move(self.labels),
            move(self.position_ids),
            move(self.attention_mask),
            self.row_index,
            self.categories,
            self.real_lengths,
        )


def block_causal_mask(segments: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive (B, 1, L, L) mask: 0 where query and key are in the same segment and key <= query,
    the dtype's minimum elsewhere. `segments` is (B, L) of segment ids."""
    L = segments.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    allowed = (segments[:, :, None] == segments[:, None, :]) & causal
    mask = torch.zeros(allowed.shape, dtype=dtype)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


def collate(
    rows: list[Row], pad_id: int, packed: bool = False, mask_dtype: torch.dtype = torch.float32
) -> MicroBatch:
    """Rows -> tensors. packed=False: right-pad with `pad_id` + block-causal mask (sdpa, eager).
    packed=True: one concatenated row, no mask, position_ids carry the boundaries (flash)."""
    lens = [len(r.input_ids) for r in rows]
    cats = [r.category for r in rows]
    if packed:
        ids = np.concatenate([r.input_ids for r in rows])[None]
        labels = np.concatenate([r.labels for r in rows])[None]
        pos = np.concatenate([position_ids_from_doc_lens(r.doc_lens) for r in rows])[None]
        row_index = np.repeat(np.arange(len(rows)), lens)[None]
        return MicroBatch(
            torch.from_numpy(ids.astype(np.int64)),
            torch.from_numpy(labels.astype(np.int64)),
            torch.from_numpy(pos.astype(np.int64)),
            None,
            torch.from_numpy(row_index),
            cats,
            torch.tensor(lens),
        )
    width = max(lens)
    B = len(rows)
    ids = np.full((B, width), pad_id, np.int64)
    labels = np.full((B, width), -100, np.int64)
    pos = np.zeros((B, width), np.int64)
    segments = np.full((B, width), -1, np.int64)
    row_index = np.full((B, width), -1, np.int64)
    for b, r in enumerate(rows):
        n = lens[b]
        ids[b, :n] = r.input_ids
        labels[b, :n] = r.labels
        pos[b, :n] = position_ids_from_doc_lens(r.doc_lens)
        segments[b, :n] = np.repeat(np.arange(len(r.doc_lens)), r.doc_lens)
        row_index[b, :n] = b
        pos[b, n:] = np.arange(width - n)
    return MicroBatch(
        torch.from_numpy(ids),
        torch.from_numpy(labels),
        torch.from_numpy(pos),
        block_causal_mask(torch.from_numpy(segments), mask_dtype),
        torch.from_numpy(row_index),
        cats,
        torch.tensor(lens),
    )


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-position negative log-likelihood in fp32, (B, L-1); 0 where the label is -100.

    labels are aligned with input_ids (prepare's convention): position t predicts labels[t+1].
    """
    shifted = labels[:, 1:]
    nll = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]),
        shifted.reshape(-1),
        ignore_index=-100,
        reduction="none",
    )
    return nll.view(shifted.shape)


def category_sums(nll: torch.Tensor, mb: MicroBatch) -> dict[str, tuple[float, int]]:
    """{category: (summed nll, supervised tokens)} of one micro-batch (for logging)."""
    sup = mb.labels[:, 1:].cpu() != -100
    rows = mb.row_index[:, 1:]
    nll = nll.detach().cpu()
    out: dict[str, tuple[float, int]] = {}
    for b, cat in enumerate(mb.categories):
        sel = sup & (rows == b)
        s, n = out.get(cat, (0.0, 0))
        out[cat] = (s + float(nll[sel].sum()), n + int(sel.sum()))
    return out


def model_inputs(mb: MicroBatch) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "input_ids": mb.input_ids,
        "position_ids": mb.position_ids,
        "use_cache": False,
    }
    if mb.attention_mask is not None:
        kw["attention_mask"] = mb.attention_mask
    return kw
