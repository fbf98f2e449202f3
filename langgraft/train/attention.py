"""Per-document attention for each kernel, built from the recorded document lengths.

Packed rows hold several documents (`doc_lens`); attention must not cross them and positions
restart at 0 in each. Each kernel gets the cheapest exact description of that block-causal
pattern, built on the device from (B, L) int32 segment ids (never a dense mask on the host):

- flash_attention_2 / _3: the micro-batch is one concatenated row without a mask; the
  collator computes the documents' `cu_seqlens` and longest length once per micro-batch on the
  host and passes them (`cu_seq_lens_q/k`, `max_length_q/k`), so no layer rebuilds them from
  position_ids with a nonzero() and two item() syncs; the varlen kernel needs no L x L tensor.
- flex_attention: a `BlockMask` from `create_block_mask` over the segment ids; fully masked
  128 x 128 blocks are skipped, so cost follows the real per-document lengths.
- sdpa / eager: an additive (B, 1, L, L) mask in the compute dtype (a boolean 4-D mask is
  mis-read by HF's eager path, and position_ids alone are only honoured by flash/flex). When
  every row is a single document without pads, plain causal attention is exact and no mask is
  passed at all, which lets SDPA pick its flash kernels.

Pads form their own block, so no softmax row is empty (no NaN) and no real token sees them.
Sliding windows (mistral, qwen2/3 `layer_types`) are part of every mask, per layer type, as
the family's own attention defines them (model/families.py).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

IMPLEMENTATIONS = ("sdpa", "eager", "flex_attention", "flash_attention_2", "flash_attention_3")


def packs_rows(impl: str) -> bool:
    """Whether `impl` takes the micro-batch as one unpadded row (varlen via position_ids)."""
    return impl.startswith("flash_attention")


def check_implementation(impl: str, device: torch.device, training: bool = True) -> None:
    """Refuse a kernel that cannot run here; never fall back silently to another one."""
    from langgraft.errors import UserError

    if impl not in IMPLEMENTATIONS:
        raise UserError(f"attn_implementation: {impl!r}; expected one of {IMPLEMENTATIONS}")
    if packs_rows(impl):  # Colossal v3 silently ignored a missing flash kernel
        package = {"flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface"}
        if device.type != "cuda":
            raise UserError(
                f"attn_implementation: {impl} needs a CUDA device; use sdpa on {device}"
            )
        if importlib.util.find_spec(package[impl]) is None:
            raise UserError(
                f"attn_implementation: {impl} needs the {package[impl]!r} package, which is not "
                "installed; install it or use sdpa / flex_attention"
            )
    if impl == "flex_attention":
        try:
            from torch.nn.attention.flex_attention import create_block_mask  # noqa: F401
        except ImportError as e:
            raise UserError(f"attn_implementation: flex_attention needs torch >= 2.5: {e}") from e
        if training and device.type == "cpu":
            raise UserError(
                "attn_implementation: flex_attention has no backward pass on CPU in torch "
                f"{torch.__version__}; train on CPU with sdpa (flex is for CUDA)"
            )


def _allowed(segments: torch.Tensor, window: int | None) -> torch.Tensor:
    """(B, L, L) bool: same segment, key <= query and, with a window, query - key < window
    (HF's sliding_window_overlay; flash's window_size (w-1, w-1)). Within one document the
    row offset equals the position offset, so the window is measured in row indices."""
    L = segments.shape[1]
    idx = torch.arange(L, device=segments.device)
    delta = idx[:, None] - idx[None, :]  # query - key
    allowed = delta >= 0
    if window is not None:
        allowed = allowed & (delta < window)
    return (segments[:, :, None] == segments[:, None, :]) & allowed


def additive_mask(
    segments: torch.Tensor, dtype: torch.dtype, window: int | None = None
) -> torch.Tensor:
    """(B, 1, L, L) additive mask on `segments`' device: 0 where query and key are in the same
    segment, key <= query (and within the sliding window), the dtype's minimum elsewhere."""
    zero = torch.zeros((), dtype=dtype, device=segments.device)
    low = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=segments.device)
    return torch.where(_allowed(segments, window), zero, low)[:, None]


def block_mask(segments: torch.Tensor, window: int | None = None) -> Any:
    """flex_attention `BlockMask` of the block-causal (windowed) pattern of `segments` (B, L)."""
    from torch.nn.attention.flex_attention import create_block_mask

    def same_document_causal(b: Any, h: Any, q: Any, kv: Any) -> Any:
        return (segments[b, q] == segments[b, kv]) & (q >= kv)

    def same_document_window(b: Any, h: Any, q: Any, kv: Any) -> Any:
        return (segments[b, q] == segments[b, kv]) & (q >= kv) & (q - kv < window)

    B, L = segments.shape
    fn = same_document_causal if window is None else same_document_window
    # On CUDA the compiled builder (torchtitan's) never materialises the B x L x L mask; the
    # eager one does (fine on CPU, where flex only runs for evaluation and tests).
    build = _compiled_create_block_mask() if segments.is_cuda else create_block_mask
    return build(fn, B, None, L, L, device=segments.device)


_COMPILED: list[Any] = []


def _compiled_create_block_mask() -> Any:
    if not _COMPILED:
        from torch.nn.attention.flex_attention import create_block_mask

        _COMPILED.append(torch.compile(create_block_mask))
    return _COMPILED[0]


def document_attention(
    segments: torch.Tensor | None,
    impl: str,
    dtype: torch.dtype,
    causal_is_exact: bool,
    windows: tuple[tuple[str, int | None], ...] = (("all", None),),
) -> Any:
    """The `attention_mask` argument for a HF model under `impl` (None: none is needed).

    `windows` (model/families.py `attention_groups`) names the distinct per-layer patterns:
    one ("all") gives one mask; several give the {layer type: mask} dict the family's forward
    reads per layer. Flash kernels apply the window themselves (the attention module passes
    its `sliding_window`), and with no mask at all HF builds its own windowed causal mask."""
    if segments is None or packs_rows(impl):
        return None
    if causal_is_exact and impl != "flex_attention":
        # SDPA's causal kernels need no mask; transformers builds its own (windowed) one. Its
        # packing check on the default positions costs one host read per forward (a flex
        # block mask is always ours: no read).
        return None
    build = (lambda w: block_mask(segments, w)) if impl == "flex_attention" else (
        lambda w: additive_mask(segments, dtype, w))  # fmt: skip
    masks: dict[int | None, Any] = {}  # layer types that share a window share the mask
    for _, w in windows:
        if w not in masks:
            masks[w] = build(w)
    out = {key: masks[w] for key, w in windows}
    return out["all"] if set(out) == {"all"} else out
