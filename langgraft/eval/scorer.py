"""The one scorer: log-probabilities of chosen next tokens at chosen positions of token sequences.

Every multiple-choice question of every task becomes `Request`s: token ids and, for some positions,
the token ids whose next-token log-probability is wanted (the variants of each answer letter, or the
tokens of a continuation). Two execution paths give the same numbers:

- naive: one forward pass per request over its whole sequence;
- shared prefix: the tokens all requests of a group start with (header + few-shot examples, often
  90% of a prompt) are run once, and the question suffixes are batched behind its keys/values.
  Suffixes are right-padded, so with causal attention no real token ever sees a pad. On a CPU
  (LLaMA models) the suffix attention is split in two exact parts merged by their log-sum-exp
  (`prefix_attention`): every suffix query of the batch against the one shared prefix copy, with
  no mask, and the suffix against itself with `is_causal`. Elsewhere the prefix cache is expanded
  to the batch and attended with an explicit mask (`DynamicCache`).

Logits are only computed at the read positions (`logits_to_keep`), never for the whole sequence,
in both paths: a 32k-vocab projection of every prompt position would dominate CPU time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Request:
    ids: list[int]
    """Token ids (with BOS) fed to the model."""
    reads: list[tuple[int, list[int]]]
    """(position, token ids): log-probabilities of these ids as the token after `position`."""


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def shared_prefix_len(requests: list[Request]) -> int:
    """Length of the token prefix every request starts with, but never past a read position
    (each batched row must contain the positions it reads)."""
    if not requests:
        return 0
    first = requests[0].ids
    n = min(pos for r in requests for pos, _ in r.reads)
    for r in requests[1:]:
        n = min(n, common_prefix_len(first, r.ids))
    return n


def letter_variants(
    tokenizer: Any, letters: str, answer_prefixes: list[str]
) -> dict[str, list[int]]:
    """Every token id that a well-formed answer `L` can start with, per letter.

    SentencePiece tokenizers give "▁A" after a space ("Answer: A") and a bare "A" after "：" or
    ":"; byte-level BPE gives "ĠA". Each `answer_prefixes` entry (e.g. "Answer: ", "答案：") is
    tokenized with the letter appended and its last token kept if it decodes to the letter; the
    bare and word-initial pieces are added when the vocabulary has them.
    """
    unk = getattr(tokenizer, "unk_token_id", None)
    out: dict[str, list[int]] = {}
    for letter in letters:
        found: set[int] = set()
        for prefix in ["", " ", *answer_prefixes]:
            ids = tokenizer(prefix + letter, add_special_tokens=False)["input_ids"]
            if ids and tokenizer.decode(ids[-1:]).strip() == letter:
                found.add(ids[-1])
        for piece in (letter, "▁" + letter, "Ġ" + letter):
            tid = tokenizer.convert_tokens_to_ids(piece)
            if isinstance(tid, int) and tid != unk and tid >= 0:
                found.add(tid)
        if not found:
            raise ValueError(f"tokenizer has no token for answer letter {letter!r}")
        out[letter] = sorted(found)
    return out


def _gather(logp: Any, reads: list[tuple[int, list[int]]]) -> list[Any]:
    """`logp` holds one row per read (in order); pick the wanted ids of each."""
    return [logp[i, ids] for i, (_, ids) in enumerate(reads)]


def score_naive(model: Any, requests: list[Request]) -> list[list[Any]]:
    """One forward pass per request over its whole sequence (the reference path)."""
    import torch

    device = model.device
    out = []
    with torch.inference_mode():
        for r in requests:
            ids = torch.tensor([r.ids], device=device)
            keep = torch.tensor([[pos for pos, _ in r.reads]], device=device)
            logits = model(input_ids=ids, use_cache=False, logits_to_keep=keep).logits[0]
            out.append(_gather(torch.log_softmax(logits.float(), dim=-1).cpu(), r.reads))
    return out


# Tokens (rows x padded width) per suffix forward pass when no --batch-size is given: on a CPU a
# tiny model is bound by per-call overhead up to ~2k tokens and by memory traffic after; a GPU
# wants large batches to fill its cores (an H200 runs a 7B model's 32k-token batch in one pass).
BATCH_TOKENS = {"cpu": 2048, "cuda": 32768}


def batch_token_budget(device: Any) -> int:
    return BATCH_TOKENS.get(getattr(device, "type", str(device)), BATCH_TOKENS["cpu"])


def _length_batches(
    lengths: list[int],
    batch_size: int | None,
    min_fill: float = 0.75,
    max_tokens: int | None = None,
) -> list[list[int]]:
    """Split rows sorted by decreasing length into batches of at most `batch_size` rows (or, with
    `batch_size=None`, as many as fit `max_tokens` padded tokens), starting a new batch when a row
    is shorter than `min_fill` of the batch width: question lengths are skewed (CMMLU: mean 120
    tokens, max 615), and padding every row to the longest one would waste most of the compute."""
    batches: list[list[int]] = []
    for j, n in enumerate(lengths):
        if batches:
            width = lengths[batches[-1][0]]
            rows = len(batches[-1])
            full = (
                rows >= batch_size
                if batch_size is not None
                else (rows + 1) * width > (max_tokens or BATCH_TOKENS["cpu"])
            )
        if not batches or full or n < min_fill * lengths[batches[-1][0]]:
            batches.append([])
        batches[-1].append(j)
    return batches


# The attention implementation name `prefix_attention` is registered under (transformers'
# AttentionInterface); the model's own one is put back after each group.
PREFIX_ATTENTION = "langgraft_prefix"


def prefix_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    scaling: float | None = None,
    dropout: float = 0.0,
    langgraft_prefix: list[tuple[Any, Any]] | None = None,
    langgraft_reads: Any = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Attention of a batch of suffixes (query/key/value: rows x heads x suffix x head_dim) over
    the shared prefix's keys/values (1 x kv heads x prefix x head_dim) and their own causal past.

    Exact split of one softmax over [prefix, suffix] keys: each part returns its output and the
    log-sum-exp of its scores, and the outputs are mixed by exp(lse_part - lse_all). The prefix
    part folds rows and query heads of a kv head into one long query (no copy of the prefix per
    row, no mask). In the last layer only the positions read (`langgraft_reads`, rows x reads)
    are computed: nothing after that layer mixes positions, so the others' outputs (zero) are
    never read; that skips a layer's worth of attention."""
    import torch

    if (
        attention_mask is not None
        or dropout
        or kwargs.get("sliding_window")
        or kwargs.get("softcap")
    ):
        raise ValueError(
            "prefix_attention: masks, dropout, sliding windows and softcap unsupported"
        )
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    pk, pv = langgraft_prefix[module.layer_idx]
    b, h, s, d = query.shape
    hk = key.shape[1]
    g = h // hk
    if g > 1:  # the suffix keys are small (rows x suffix); repeating them costs little
        key = key.repeat_interleave(g, dim=1)
        value = value.repeat_interleave(g, dim=1)
    last = module.layer_idx == len(langgraft_prefix) - 1 and langgraft_reads is not None
    if last:
        n = langgraft_reads.shape[1]
        query = query.gather(2, langgraft_reads[:, None, :, None].expand(b, h, n, d))
        # Key j is visible to a read at position q when j <= q (the causal rule, per row).
        hidden = torch.arange(s, device=query.device)[None, None, :] > langgraft_reads[:, :, None]
        mask = torch.zeros(b, 1, n, s, dtype=query.dtype, device=query.device)
        mask.masked_fill_(hidden[:, None], float("-inf"))
        out_s, lse_s = flash(query, key, value, 0.0, False, attn_mask=mask, scale=scaling)[:2]
    else:
        n = s
        out_s, lse_s = flash(query, key, value, 0.0, True, attn_mask=None, scale=scaling)[:2]
    q_pre = query.reshape(b, hk, g, n, d).transpose(0, 1).reshape(1, hk, b * g * n, d)
    out_p, lse_p = flash(q_pre, pk, pv, 0.0, False, attn_mask=None, scale=scaling)[:2]
    out_p = out_p.reshape(hk, b, g, n, d).transpose(0, 1).reshape(b, h, n, d)
    lse_p = lse_p.reshape(hk, b, g, n).transpose(0, 1).reshape(b, h, n)
    # Weight of the suffix part, exp(lse_s) / (exp(lse_s) + exp(lse_p)), and one lerp: fewer
    # roundings than exp(lse_part - logaddexp(...)) per part. The result differs from a single
    # kernel over all keys by float32 noise only (as the cache path does: tested within 1e-5).
    w = torch.sigmoid(lse_s - lse_p)[..., None]
    out = torch.lerp(out_p.float(), out_s.float(), w).to(query.dtype)
    if last:
        full = torch.zeros(b, h, s, d, dtype=out.dtype, device=out.device)
        out = full.scatter_(2, langgraft_reads[:, None, :, None].expand(b, h, n, d), out)
    return out.transpose(1, 2).contiguous(), None


def _split_attention_ok(model: Any) -> bool:
    """The split path needs the CPU kernel (it returns the log-sum-exp) and LLaMA's plain
    attention (no sliding window, softcap or attention sinks that it would ignore)."""
    device = getattr(model.device, "type", str(model.device))
    return device == "cpu" and getattr(model.config, "model_type", None) == "llama"


class _AttentionSwap:
    """Run the model with `prefix_attention`, then give back its own implementation."""

    def __init__(self, model: Any) -> None:
        self.config, self.saved = model.config, model.config._attn_implementation

    def __enter__(self) -> None:
        from transformers import AttentionInterface

        AttentionInterface.register(PREFIX_ATTENTION, prefix_attention)
        self.config._attn_implementation = PREFIX_ATTENTION

    def __exit__(self, *exc: Any) -> None:
        self.config._attn_implementation = self.saved


def _suffix_forward(model: Any, ids: Any, keep: Any, p: int, prefix_kv: list, split: bool) -> Any:
    """Logits at `keep` of right-padded suffixes `ids` that follow the `p` prefix tokens."""
    import torch

    if not prefix_kv:
        return model(input_ids=ids, use_cache=False, logits_to_keep=keep).logits
    if split:
        positions = torch.arange(p, p + ids.shape[1], device=ids.device)[None]
        with _AttentionSwap(model):
            return model(
                input_ids=ids,
                position_ids=positions,
                use_cache=False,
                logits_to_keep=keep,
                langgraft_prefix=prefix_kv,
                langgraft_reads=keep,
            ).logits
    from transformers import DynamicCache

    b = ids.shape[0]
    cache = DynamicCache(
        ddp_cache_data=[(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in prefix_kv],
        config=model.config,
    )
    return model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=keep).logits


def score_shared_prefix(
    model: Any, requests: list[Request], batch_size: int | None = 16, split: bool | None = None
) -> list[list[Any]]:
    """Run the common prefix once, then the suffixes in batches behind its keys/values
    (`split`: by `prefix_attention`; default: where it applies, see `_split_attention_ok`)."""
    import torch

    device = model.device
    split = _split_attention_ok(model) if split is None else split
    p = shared_prefix_len(requests)
    prefix_kv: list[tuple[Any, Any]] = []
    with torch.inference_mode():
        if p > 0:
            prefix = torch.tensor([requests[0].ids[:p]], device=device)
            cache = model(input_ids=prefix, use_cache=True, logits_to_keep=1).cache
            prefix_kv = [(k, v) for k, v, *_ in cache]
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i].ids))
        results: list[list[Any]] = [[] for _ in requests]
        lengths = [len(requests[i].ids) - p for i in order]
        budget = batch_token_budget(device)
        for idx in _length_batches(lengths, batch_size, max_tokens=budget):
            batch = [requests[order[j]] for j in idx]
            width = max(len(r.ids) - p for r in batch)
            n_reads = max(len(r.reads) for r in batch)
            ids = torch.zeros((len(batch), width), dtype=torch.long)
            keep = torch.zeros((len(batch), n_reads), dtype=torch.long)
            for row, r in enumerate(batch):
                suffix = r.ids[p:]
                ids[row, : len(suffix)] = torch.tensor(suffix)
                pos = [q - p for q, _ in r.reads]
                keep[row] = torch.tensor(pos + pos[-1:] * (n_reads - len(pos)))
            logits = _suffix_forward(model, ids.to(device), keep.to(device), p, prefix_kv, split)
            logp = torch.log_softmax(logits.float(), dim=-1).cpu()
            for row, j in enumerate(idx):
                results[order[j]] = _gather(logp[row], requests[order[j]].reads)
    return results


def score_requests(
    model: Any, requests: list[Request], batch_size: int | None = 16, shared_prefix: bool = True
) -> list[list[Any]]:
    """Log-probabilities for every read of every request, by either path."""
    if shared_prefix:
        return score_shared_prefix(model, requests, batch_size)
    return score_naive(model, requests)
