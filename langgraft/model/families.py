"""The one place that knows each model family langgraft trains, and refuses the rest.

A family is accepted only when every path langgraft adds to the model's own forward is exact
for it: the packed-document masks (train/attention.py), the chunked lm_head + loss
(train/loss.py), tensor parallel's module plan, LoRA targets and the memory plan. What differs
between the accepted families is data here, never an `if model_type == ...` elsewhere:

- llama (LLaMA-1/2/3.x, SmolLM, TinyLlama, Vicuna ...): full causal attention on every layer.
- mistral: one `sliding_window` on every layer (none when the config sets null).
- qwen2, qwen3: per-layer `layer_types` ("full_attention" / "sliding_attention"); q/k/v biases
  (qwen2) and q/k RMSNorm (qwen3) live inside the attention modules and shard with them.

Refused (one line, exit 2) before anything is loaded, e.g. gemma2/gemma3: attention and final-
logit soft-capping (the chunked loss applies lm_head itself and would skip the final cap; eager
is the only kernel HF gives the attention cap), a scaled embedding and (1 + w) norms that make
the embeddings-only warm-up mean something else; every other `model_type` likewise until its
oracle test (tests/unit/test_families.py: packed loss == the model's own forward per document)
passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from langgraft.errors import UserError

FULL = "full_attention"
SLIDING = "sliding_attention"


@dataclass(frozen=True)
class Family:
    model_type: str
    colwise: tuple[str, ...] = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                "mlp.gate_proj", "mlp.up_proj")  # fmt: skip
    """Decoder-layer linears split by output features under tensor parallel (Megatron)."""
    rowwise: tuple[str, ...] = ("self_attn.o_proj", "mlp.down_proj")
    """Decoder-layer linears split by input features (their outputs are all-reduced)."""
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                     "up_proj", "down_proj")  # fmt: skip
    """Module names peft wraps with LoRA adapters."""
    embeddings: tuple[str, ...] = ("embed_tokens", "lm_head")
    """Modules trained by an embeddings-only stage (freeze_non_embeds_params)."""
    head_norms: tuple[str, ...] = ()
    """Norms applied per attention head (qwen3's q/k RMSNorm). Under tensor parallel they see
    only their rank's heads, so each rank's weight gradient is a partial sum: they become
    replicated DTensors over the heads dimension, whose gradients are all-reduced."""
    layer_windows: str = "none"
    """Where the sliding windows come from: "none", "all" (config.sliding_window on every
    layer) or "layer_types" (config.layer_types names each layer's attention)."""


FAMILIES: dict[str, Family] = {
    "llama": Family("llama"),
    "mistral": Family("mistral", layer_windows="all"),
    "qwen2": Family("qwen2", layer_windows="layer_types"),
    "qwen3": Family("qwen3", layer_windows="layer_types",
                    head_norms=("self_attn.q_norm", "self_attn.k_norm")),
}

_WHY_NOT = {
    "gemma": "scaled embeddings and (1 + w) RMSNorm are not checked against the loss and init",
    "gemma2": "attention and final-logit soft-capping are not exact under packed training",
    "gemma3": "attention soft-capping, per-layer local rope and a scaled embedding are not "
    "exact under packed training",
    "gemma3_text": "attention soft-capping, per-layer local rope and a scaled embedding are not "
    "exact under packed training",
}


def supported() -> str:
    return ", ".join(sorted(FAMILIES))


def family(model_type: str | None, where: str) -> Family:
    """The accepted family of `model_type`; a one-line UserError naming it otherwise."""
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    why = _WHY_NOT.get(str(model_type), "its attention, norms and loss have no oracle test here")
    raise UserError(
        f"{where}: model_type {model_type!r} is not supported ({why}); langgraft trains "
        f"{supported()}"
    )


def require_supported(model_type: str | None, where: str) -> Family:
    return family(model_type, where)


def family_of(model: Any) -> Family:
    """The family of a loaded HF model (also through DDP `.module` and peft wrappers)."""
    config = getattr(model, "module", model).config
    return family(getattr(config, "model_type", None), "model")


def layer_windows(config: Any) -> list[int | None]:
    """Each decoder layer's sliding window (a key is visible when query - key < window), None
    for full causal attention, exactly as the family's own attention reads its config."""
    fam = family(getattr(config, "model_type", None), "model")
    n = int(config.num_hidden_layers)
    window = getattr(config, "sliding_window", None)
    if fam.layer_windows == "all":
        return [window] * n
    if fam.layer_windows == "layer_types":
        types = list(getattr(config, "layer_types", None) or [FULL] * n)
        return [window if t == SLIDING else None for t in types]
    return [None] * n


def attention_groups(config: Any) -> dict[str, int | None]:
    """{mask key: window} of the distinct masks the model needs. One key ("all") when every
    layer shares a pattern, so a single mask is passed; otherwise the `layer_types` names, the
    keys the family's forward looks up in a dict `attention_mask`."""
    windows = layer_windows(config)
    if len(set(windows)) == 1:
        return {"all": windows[0]}
    types = list(config.layer_types)
    return {t: w for t, w in zip(types, windows, strict=True)}
