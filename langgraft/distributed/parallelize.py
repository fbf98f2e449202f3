"""`parallelize(model, dims, ...)`: the one function that lays a HF LLaMA model out for training.

Order follows torchtitan's `parallelize_llama`: tensor parallel, activation checkpointing (torch's
checkpoint wrapper around each decoder layer), compile per block (the wrapper included), then
FSDP2. DDP (plugin ddp) is applied per stage by the trainer (`data_parallel`),
because DDP fixes its gradient buckets to the parameters that train in that stage; FSDP2 and
DTensor handle a change of `requires_grad` between stages themselves.

Tensor parallel (plugin 3d) is DTensor's `parallelize_module` with Megatron's plan: q/k/v and
gate/up column-wise, o/down row-wise, so each decoder layer needs two all-reduces forward and two
backward. HF's attention reshapes with `-1` heads, so the local shards run it unchanged. An
untied embedding is split over the vocabulary (row-wise) and lm_head column-wise with the
logits gathered; the vocabulary is first padded to a multiple of tp, and the padded logit
columns are filled with -inf, so a padded row has zero probability and zero gradient (never
trained, never sampled) and exports drop it. A tied embedding stays replicated (splitting it one
way for the input and the other way for the output would untie it).
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any

import torch

from langgraft.distributed.dims import ParallelDims
from langgraft.model.families import family_of

log = logging.getLogger(__name__)


def decoder_layers(model: Any) -> Any:
    return model.get_decoder().layers


def parallelize(
    model: Any,
    dims: ParallelDims,
    device: torch.device,
    grad_checkpoint: bool = False,
    compile_layers: bool = False,
    precision: str = "fp32",
) -> Any:
    """Apply the layout in place and return the model (on `device`, or sharded onto it)."""
    if dims.tp > 1:
        apply_tensor_parallel(model, dims)
    if grad_checkpoint:
        apply_activation_checkpointing(model)
    if compile_layers:
        # Each block, checkpoint wrapper included, so the compiler sees the recomputation
        # (torchtitan: AC, then compile per block, then FSDP).
        for layer in decoder_layers(model):
            layer.compile()  # in place: parameter names (and so checkpoints) do not change
        log.info("torch.compile on every decoder layer")
    if dims.fsdp:
        apply_fsdp(model, dims, device, precision)
    elif not any(p.is_meta for p in model.parameters()):  # on meta: train/build.py fills it
        model.to(device)  # plain, DDP, or tp-only: the non-DTensor rest
    return model


def apply_activation_checkpointing(model: Any) -> None:
    """Wrap every decoder layer in torch's non-reentrant checkpoint wrapper, in the layer list
    itself, so compile and FSDP2 then apply to the wrapped block. Non-reentrant: the reentrant
    variant silently drops gradients when no input requires grad (embeddings-only stages).
    The wrapper's `_checkpoint_wrapped_module.` prefix is dropped from every state-dict name by
    torch's `get_model_state_dict` (checkpoints and exports keep the HF names)."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        CheckpointImpl,
        checkpoint_wrapper,
    )

    layers = decoder_layers(model)
    for i, layer in enumerate(layers):
        layers[i] = checkpoint_wrapper(layer, checkpoint_impl=CheckpointImpl.NO_REENTRANT,
                                       preserve_rng_state=True)  # fmt: skip
    log.info("activation checkpointing on every decoder layer")


def apply_fsdp(model: Any, dims: ParallelDims, device: torch.device, precision: str) -> None:
    """FSDP2 per decoder layer, then the root (embeddings, final norm, lm_head), over "dp".
    The parameters move to `device` shard by shard, so a model loaded on CPU never needs a
    full replica on the GPU."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    kw: dict[str, Any] = {"mesh": dims.dp_mesh}
    if precision == "bf16":
        # bf16 compute copies of the fp32 master shards; gradients reduced in fp32.
        kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16,
                                               reduce_dtype=torch.float32)  # fmt: skip
    if dims.offload:
        kw["offload_policy"] = CPUOffloadPolicy(pin_memory=device.type == "cuda")
    layers = list(decoder_layers(model))
    for i, layer in enumerate(layers):
        # The last layer's parameters are needed again at once by backward: keep them.
        last = i == len(layers) - 1
        fully_shard(layer, reshard_after_forward=dims.reshard_after_forward and not last, **kw)
    # The root (embeddings, final norm, lm_head) stays gathered from forward to backward: its
    # parameters are the first backward needs, and the loss applies lm_head to the final hidden
    # states in chunks after the model's forward (train/loss.py `forward_nll`).
    fully_shard(model, reshard_after_forward=False, **kw)
    log.info(
        "FSDP2 over %d rank(s): reshard after forward %s, %s, CPU offload %s",
        dims.dp, dims.reshard_after_forward, precision, dims.offload,
    )  # fmt: skip


def apply_tensor_parallel(model: Any, dims: ParallelDims) -> None:
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    mesh = dims.tp_mesh
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    if not tied:
        real = pad_vocab(model, dims.tp)
        parallelize_module(model, mesh, {
            "model.embed_tokens": RowwiseParallel(input_layouts=Replicate(),
                                                  output_layouts=Replicate()),
            "lm_head": ColwiseParallel(output_layouts=Replicate()),
        })  # fmt: skip
        if real != model.get_input_embeddings().weight.shape[0]:
            # after the TP hooks, so it sees the gathered logits
            model.get_output_embeddings().register_forward_hook(_mask_padded_logits(real))
        _allow_empty_input(model.get_output_embeddings(), mesh)
    fam = family_of(model)  # the module names of this family's plan (model/families.py)
    plan = {
        **dict.fromkeys(fam.colwise, ColwiseParallel()),
        **dict.fromkeys(fam.rowwise, RowwiseParallel()),
        # (B, L, heads, head_dim) with the heads split: replicated weight, gradient all-reduced
        **dict.fromkeys(fam.head_norms, SequenceParallel(sequence_dim=2, use_local_output=True)),
    }
    for layer in decoder_layers(model):
        parallelize_module(layer, mesh, plan)
    log.info("tensor parallel over %d ranks (%s embeddings)", dims.tp,
             "replicated tied" if tied else "vocab-split")  # fmt: skip


def _allow_empty_input(head: Any, mesh: Any) -> None:
    """The loss asks the model for no logits (`logits_to_keep` = no position) and applies
    lm_head itself in chunks; DTensor's sharding propagation fails on a zero-row matmul, so a
    split lm_head answers an empty input with empty (replicated) logits without computing."""
    from torch.distributed.tensor import DTensor, Replicate

    compute = head.forward

    def forward(x: Any) -> Any:
        if x.numel() == 0:
            local = x.to_local() if isinstance(x, DTensor) else x
            out = local.new_empty(*local.shape[:-1], head.weight.shape[0])
            return DTensor.from_local(out, mesh, [Replicate()], run_check=False)
        return compute(x)

    head.forward = forward


def pad_vocab(model: Any, multiple: int) -> int:
    """Grow embed_tokens/lm_head to a multiple of `multiple` rows; returns the real row count."""
    real = model.get_input_embeddings().weight.shape[0]
    padded = math.ceil(real / multiple) * multiple
    if padded == real:
        return real
    with torch.random.fork_rng(devices=[]):  # the padded rows' init must not shift NEFTune's RNG
        model.resize_token_embeddings(padded, mean_resizing=False)
    model.config.langgraft_real_vocab_size = real
    log.info("vocabulary padded %d -> %d rows for tp %d (padded rows masked)", real, padded,
             multiple)  # fmt: skip
    return real


def _mask_padded_logits(real: int) -> Any:
    def hook(module: Any, args: Any, out: torch.Tensor) -> torch.Tensor:
        pad = torch.full_like(out[..., real:], -math.inf)  # a constant: no gradient flows
        return torch.cat([out[..., :real], pad], dim=-1)

    return hook


def real_vocab_size(model: Any) -> int:
    return int(getattr(model.config, "langgraft_real_vocab_size", 0) or
               model.get_input_embeddings().weight.shape[0])  # fmt: skip


def grad_sync(model: Any, last: bool) -> Any:
    """DDP: synchronise gradients only on the last micro-step of an optimizer step
    (`no_sync()`, one all-reduce per step). FSDP2: reduce-scatter on every micro-step (nothing
    to do): the gradients stay sharded between micro-steps, as ZeRO promises and torchtitan
    does. Skipping FSDP2's sync (`set_requires_gradient_sync(False)`) would keep every layer's
    full-size gradient alive until the step: ~26 GiB per rank for 7B, for one reduce-scatter
    fewer per micro-step."""
    if last or not hasattr(model, "no_sync"):
        return contextlib.nullcontext()
    return model.no_sync()


def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Global gradient norm over every rank's shards (a 0-dim tensor on the device, never read
    here), gradients scaled down to `max_norm` when it is above.

    torch's `get_total_norm` refuses DTensor gradients on different meshes (FSDP2 shards on
    "dp", TP x FSDP2 shards on "dp" x "tp"), so the gradients are grouped by mesh: one total
    norm per mesh, reduced once (`full_tensor`, one all-reduce per mesh, whatever the parameter
    count), combined on the device (torchtitan `clip_grad_norm_`)."""
    from torch.distributed.tensor import DTensor

    by_mesh: dict[Any, list[torch.Tensor]] = {}
    for p in params:
        if p.grad is not None:
            key = p.grad.device_mesh if isinstance(p.grad, DTensor) else None
            by_mesh.setdefault(key, []).append(p)
    if not by_mesh:
        return torch.zeros(())
    squares = []
    for group in by_mesh.values():
        norm = torch.nn.utils.get_total_norm([p.grad for p in group], 2.0, foreach=True)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        squares.append(norm.float().square())
    device = squares[0].device
    total = torch.stack([sq.to(device) for sq in squares]).sum().sqrt()
    if math.isfinite(max_norm):
        for group in by_mesh.values():
            torch.nn.utils.clip_grads_with_norm_(group, max_norm, total, foreach=True)
    return total
