"""Micro-batches (collation), per-document attention inputs and the token-weighted loss.

One collation API serves training and evaluation, so both see the same rows, pads and masks:

    collate = Collator(pad_id, attn_implementation, compute_dtype)
    mb = collate(rows).to(device)          # host tensors only; the mask is built on the device
    nll = forward_nll(model, mb)           # (N,) fp32 nll of the N supervised targets
    sums = category_totals(row_sums(nll, mb), mb)   # {category: (summed nll, tokens)}

The attention pattern comes from the recorded document lengths (train/attention.py), never from
comparing ids with a pad id: a real EOS inside a packed row is attended to and trained on
(Colossal's pad=eos masks it).

The loss never holds the logits of the whole micro-batch in fp32: the model returns its final
hidden states (`logits_to_keep` selects no position), and the lm_head + cross-entropy run over
the supervised positions only, in chunks of at most `LOSS_CHUNK_BYTES` of fp32 logits, each
chunk recomputed in the backward pass (activation checkpointing) instead of being stored. Cost:
one extra lm_head forward per step (~1% of a 7B step); the peak memory of the loss is measured
by `bench/bench_train.py --loss-memory-only` (README, performance). Targets are gathered with indices
computed on the host at collation, so the step needs no device-to-host sync.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from langgraft.data.writer import position_ids_from_doc_lens
from langgraft.train.attention import document_attention, packs_rows
from langgraft.train.data import Row

LOSS_CHUNK_BYTES = 128 * 2**20
"""fp32 logits per loss chunk; a micro-batch whose logits fit is scored in one piece."""

_NO_POSITIONS = torch.zeros(0, dtype=torch.long)


@dataclass
class MicroBatch:
    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    segments: torch.Tensor
    """(B, L) int32 document index of every position, -1 for pads (the attention pattern)."""
    target_pos: torch.Tensor
    """(N,) flat index into the (B*(L-1)) predicting positions of each supervised target."""
    target_ids: torch.Tensor
    """(N,) the token each of those positions must predict."""
    target_row: torch.Tensor
    """(N,) which row (of `categories`) each target belongs to."""
    categories: list[str]
    real_lengths: torch.Tensor
    """Real (unpadded) tokens of each row."""
    attn_implementation: str = "sdpa"
    mask_dtype: torch.dtype = torch.float32
    causal_is_exact: bool = False
    """Every row is one document without pads: plain causal attention needs no mask."""
    causal_pairs: int = 0
    """(query, key) pairs of block-causal attention, sum of n(n+1)/2 over documents (MFU)."""
    windows: tuple[tuple[str, int | None], ...] = (("all", None),)
    """The model's distinct attention patterns (model/families.py `attention_groups`)."""
    cu_seqlens: torch.Tensor | None = None
    """Flash varlen only: (documents + 1,) int32 document starts in the one packed row."""
    max_seqlen: int = 0
    """Flash varlen only: the longest document (a host int: the kernel needs no sync)."""

    @property
    def num_tokens(self) -> int:
        return int(self.real_lengths.numpy().sum())  # host-side lengths: never a device read

    @property
    def num_supervised(self) -> int:
        return len(self.target_pos)

    def _map(self, fn: Any) -> MicroBatch:
        kw = {}
        for f in fields(self):
            v = getattr(self, f.name)
            moving = isinstance(v, torch.Tensor) and f.name != "real_lengths"
            kw[f.name] = fn(v) if moving else v
        return MicroBatch(**kw)

    def to(self, device: Any) -> MicroBatch:
        return self._map(lambda t: t.to(device, non_blocking=True))

    def pin_memory(self) -> MicroBatch:
        """Page-locked copies, so `to(cuda)` is an asynchronous copy (the loader thread)."""
        return self._map(lambda t: t.pin_memory())


class Collator:
    """Rows -> MicroBatch for one attention implementation (see `collate`)."""

    def __init__(
        self,
        pad_id: int,
        attn_implementation: str = "sdpa",
        mask_dtype: Any = torch.float32,
        pad_to: int | None = None,
        windows: tuple[tuple[str, int | None], ...] = (("all", None),),
    ) -> None:
        self.pad_id, self.impl, self.mask_dtype = pad_id, attn_implementation, mask_dtype
        self.pad_to, self.windows = pad_to, windows

    def __call__(self, rows: list[Row]) -> MicroBatch:
        return collate(rows, self.pad_id, self.impl, self.mask_dtype, self.pad_to, self.windows)


def collate(
    rows: list[Row],
    pad_id: int,
    attn_implementation: str = "sdpa",
    mask_dtype: torch.dtype = torch.float32,
    pad_to: int | None = None,
    windows: tuple[tuple[str, int | None], ...] = (("all", None),),
) -> MicroBatch:
    """Rows -> host tensors. Flash kernels get one concatenated row (varlen from position_ids);
    the others get right-padded rows with segment ids for their mask, at least `pad_to` wide
    (a compiled model then sees one shape and never recompiles)."""
    lens = [len(r.input_ids) for r in rows]
    if packs_rows(attn_implementation):
        groups = [np.arange(len(rows))]
        width, B = sum(lens), 1
    else:
        groups = [np.array([b]) for b in range(len(rows))]
        width, B = max(max(lens), pad_to or 0), len(rows)
    ids = np.full((B, width), pad_id, np.int64)
    labels = np.full((B, width), -100, np.int64)
    pos = np.zeros((B, width), np.int64)
    segments = np.full((B, width), -1, np.int32)
    row_index = np.full((B, width), -1, np.int64)
    for b, members in enumerate(groups):
        start, first_doc = 0, 0
        for r in members.tolist():
            row, n = rows[r], lens[r]
            end = start + n
            ids[b, start:end] = row.input_ids
            labels[b, start:end] = row.labels
            pos[b, start:end] = position_ids_from_doc_lens(row.doc_lens)
            segments[b, start:end] = first_doc + np.repeat(
                np.arange(len(row.doc_lens)), row.doc_lens
            )
            row_index[b, start:end] = r
            first_doc += len(row.doc_lens)
            start = end
        pos[b, start:] = np.arange(width - start)  # pads: their own block, any positions
    # Position t predicts labels[t + 1]; only supervised targets are scored.
    sup = labels[:, 1:] != -100
    target_pos = np.flatnonzero(sup)
    target_ids = labels[:, 1:].reshape(-1)[target_pos]
    target_row = row_index[:, :-1].reshape(-1)[target_pos]
    single = all(len(r.doc_lens) == 1 for r in rows) and min(lens) == width
    return MicroBatch(
        torch.from_numpy(ids),
        torch.from_numpy(labels),
        torch.from_numpy(pos),
        torch.from_numpy(segments),
        torch.from_numpy(target_pos),
        torch.from_numpy(target_ids),
        torch.from_numpy(target_row),
        [r.category for r in rows],
        torch.tensor(lens),
        attn_implementation,
        mask_dtype,
        causal_is_exact=single and not packs_rows(attn_implementation),
        causal_pairs=int(
            sum((d * (d + 1) // 2).sum() for d in (r.doc_lens.astype(np.int64) for r in rows))
        ),
        windows=windows,
        **_varlen(rows, attn_implementation),
    )


def _varlen(rows: list[Row], impl: str) -> dict[str, Any]:
    """Flash kernels: the document boundaries of the packed row, computed once per micro-batch
    on the host, so no layer derives them from position_ids (transformers does that with a
    nonzero() and two item() per layer when they are missing)."""
    if not packs_rows(impl):
        return {}
    lens = np.concatenate([r.doc_lens for r in rows]).astype(np.int64)
    cu = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    return {"cu_seqlens": torch.from_numpy(cu), "max_seqlen": int(lens.max())}


def model_inputs(mb: MicroBatch) -> dict[str, Any]:
    """Keyword arguments of a HF causal LM for `mb` (the attention mask built on its device)."""
    kw: dict[str, Any] = {
        "input_ids": mb.input_ids,
        "position_ids": mb.position_ids,
        "use_cache": False,
    }
    if mb.causal_is_exact:
        # Positions are 0..L-1, the model's default; passing them would make transformers
        # inspect them for packing (a host sync per forward).
        del kw["position_ids"]
    if mb.cu_seqlens is not None:
        kw.update(cu_seq_lens_q=mb.cu_seqlens, cu_seq_lens_k=mb.cu_seqlens,
                  max_length_q=mb.max_seqlen, max_length_k=mb.max_seqlen)  # fmt: skip
    mask = document_attention(
        mb.segments, mb.attn_implementation, mb.mask_dtype, mb.causal_is_exact, mb.windows
    )
    if mask is not None:
        kw["attention_mask"] = mask
    return kw


def output_head(model: Any) -> Any:
    """The lm_head module of a HF model, also through DDP (`.module`) and PEFT wrappers."""
    return getattr(model, "module", model).get_output_embeddings()


def _head_nll(head: Any, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="none")


def chunked_nll(
    hidden: torch.Tensor,
    head: Any,
    targets: torch.Tensor,
    vocab_size: int,
    chunk_bytes: int = LOSS_CHUNK_BYTES,
) -> torch.Tensor:
    """fp32 nll of `targets` (N,) given final hidden states (N, d), in chunks whose fp32
    logits stay under `chunk_bytes`; each chunk is recomputed in backward, not stored."""
    per_chunk = max(1, chunk_bytes // (4 * vocab_size))
    if len(targets) <= per_chunk:
        return _head_nll(head, hidden, targets)
    parts = [
        checkpoint(
            _head_nll,
            head,
            hidden[i : i + per_chunk],
            targets[i : i + per_chunk],
            use_reentrant=False,
        )  # fmt: skip
        for i in range(0, len(targets), per_chunk)
    ]
    return torch.cat(parts)


def forward_nll(model: Any, mb: MicroBatch, chunk_bytes: int = LOSS_CHUNK_BYTES) -> torch.Tensor:
    """(N,) fp32 negative log-likelihood of `mb`'s supervised targets (call under autocast).

    The model runs through its own forward (so DDP/FSDP hooks fire) with no logits kept; the
    final hidden state comes back as the selected hidden state."""
    out = model(
        **model_inputs(mb),
        logits_to_keep=_NO_POSITIONS.to(mb.input_ids.device),
        output_hidden_states=-1,
    )
    hidden = out.hidden_states[-1]
    h = hidden[:, :-1].reshape(-1, hidden.shape[-1]).index_select(0, mb.target_pos)
    head = output_head(model)
    vocab = head.weight.shape[0]
    return chunked_nll(h, head, mb.target_ids, vocab, chunk_bytes)


def row_sums(nll: torch.Tensor, mb: MicroBatch) -> torch.Tensor:
    """(rows,) summed nll of each row of `mb` (on nll's device, no sync)."""
    out = torch.zeros(len(mb.categories), dtype=nll.dtype, device=nll.device)
    return out.index_add_(0, mb.target_row, nll.detach())


def row_supervised(mb: MicroBatch) -> list[int]:
    return np.bincount(mb.target_row.cpu().numpy(), minlength=len(mb.categories)).tolist()


def category_totals(
    sums: torch.Tensor | list[float], mb: MicroBatch
) -> dict[str, tuple[float, int]]:
    """{category: (summed nll, supervised tokens)} from `row_sums` (one host copy)."""
    values = sums.tolist() if isinstance(sums, torch.Tensor) else sums
    out: dict[str, tuple[float, int]] = {}
    for cat, s, n in zip(mb.categories, values, row_supervised(mb), strict=True):
        s0, n0 = out.get(cat, (0.0, 0))
        out[cat] = (s0 + s, n0 + n)
    return out


def add_totals(into: dict[str, tuple[float, int]], part: dict[str, tuple[float, int]]) -> None:
    """Add per-category (summed nll, tokens) `part` into `into` (micro-batches, ranks)."""
    for c, (s, n) in part.items():
        s0, n0 = into.get(c, (0.0, 0))
        into[c] = (s0 + s, n0 + n)


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-position fp32 nll (B, L-1) from full logits; 0 where the label is -100. For callers
    that already hold logits; training and held-out loss use `forward_nll`."""
    shifted = labels[:, 1:]
    nll = F.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]),
        shifted.reshape(-1),
        ignore_index=-100,
        reduction="none",
    )
    return nll.view(shifted.shape)


def category_sums(nll: torch.Tensor, mb: MicroBatch) -> dict[str, tuple[float, int]]:
    """{category: (summed nll, supervised tokens)} from a (B, L-1) `token_nll` of `mb`."""
    flat = nll.detach().reshape(-1).index_select(0, mb.target_pos.to(nll.device))
    return category_totals(row_sums(flat, mb.to(nll.device)), mb)
