"""`langgraft train --config R.yaml --plan`: per-rank memory of a layout, without a GPU.

    langgraft train --config recipes/llama2-7b-gemini.yaml --plan --world-size 8 \\
        --model=recipes/shapes/llama2-7b-69104      # a directory holding only config.json

Everything comes from the model's config.json, the recipe and the layout (`ParallelDims`):

* parameters, gradients and AdamW state (fp32; 4 + 4 + 8 bytes per trained parameter), divided
  by the ranks that shard them (FSDP2: dp; 3d: dp x tp for the split projections) or moved to
  the host by CPU offload;
* FSDP2's gathered compute copies: the root (embeddings, lm_head) for the whole step, plus two
  decoder layers at a time (gemini/zero3), or every layer from forward to backward (zero2);
  under DDP / one process with bf16 autocast, the bf16 weight copies autocast keeps for backward;
* activations: one decoder layer and the lm_head + loss are run on the meta device (no memory,
  no compute) at the stage's micro-batch and the recipe's max_length, and the tensors autograd
  saves for backward are summed (attention counted as a flash kernel saves it: q, k, v, out and
  the log-sum-exp; `eager` runs the real eager attention); x layers, or layer inputs + one
  recomputed layer under activation checkpointing; the float block mask of sdpa/eager;
* the loss: full logits saved + their gradient, or, when train/loss.py computes lm_head + loss
  in recomputed chunks (LOSS_CHUNK_BYTES), the final hidden states + one chunk at a time;
* the peak is at the start of backward: saved activations + logits + the logits' gradient.

The figure is the memory PyTorch allocates for tensors; the CUDA caching allocator, NCCL
buffers and the CUDA context come on top (budget ~10 %, `--plan` reports it as headroom).
tests/distributed/test_plan.py checks the estimate against the measured peak on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from langgraft.distributed.dims import ParallelDims
from langgraft.errors import UserError

GIB = 2**30


@dataclass
class MemoryPlan:
    rows: dict[str, float]
    """Component -> bytes per rank on the device."""
    host: float
    """Bytes per rank in host memory (CPU offload)."""
    peak: float

    def table(self, gpu_gib: float) -> str:
        lines = [f"{'component':<34}{'GiB / rank':>12}"]
        lines += [f"{k:<34}{v / GIB:>12.2f}" for k, v in self.rows.items()]
        lines.append(f"{'peak (tensors)':<34}{self.peak / GIB:>12.2f}")
        if self.host:
            lines.append(f"{'host memory (CPU offload)':<34}{self.host / GIB:>12.2f}")
        verdict = "fits" if self.peak * 1.1 <= gpu_gib * GIB else "does NOT fit"
        lines.append(f"{verdict} in {gpu_gib:g} GiB with 10% headroom "
                     f"({self.peak * 1.1 / GIB:.1f} GiB)")  # fmt: skip
        return "\n".join(lines)


def read_config(model_dir: str | Path) -> Any:
    from transformers import AutoConfig

    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise UserError(f"--plan: {path} not found; --plan needs only the model's config.json "
                        "(e.g. --model=recipes/shapes/llama2-7b-69104)")  # fmt: skip
    try:
        return AutoConfig.from_pretrained(str(Path(model_dir)))
    except (OSError, ValueError) as e:
        raise UserError(f"--plan: {path}: {e}") from None


def _flash_like(module: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *a: Any,
                **kw: Any) -> tuple[torch.Tensor, None]:  # fmt: skip
    return _FlashSaves.apply(q, k, v).transpose(1, 2), None


class _FlashSaves(torch.autograd.Function):
    """What a flash kernel keeps for backward: q, k, v, the output and the log-sum-exp."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(q)
        lse = q.new_empty(q.shape[:3], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Any:  # never runs (meta, forward only)
        return g, None, None


def _saved_bytes(fn: Any) -> int:
    """Bytes of the tensors autograd saves for backward while `fn()` runs, parameters (and views
    of them) excluded; every tensor counted once."""
    saved: dict[int, torch.Tensor] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        base = t._base if t._base is not None else t
        if not (base.is_leaf and base.requires_grad and isinstance(base, torch.nn.Parameter)):
            saved[id(base)] = base
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(t.untyped_storage().nbytes() for t in saved.values())


def activation_bytes(cfg: Any, batch: int, seq: int, dtype: torch.dtype, attn: str,
                     tp: int = 1) -> tuple[int, int, int]:  # fmt: skip
    """(one decoder layer's saved bytes, its input's bytes, lm_head + loss saved bytes)."""
    from transformers import AttentionInterface

    from langgraft.train.loss import token_nll

    cfg = type(cfg).from_dict(cfg.to_dict())
    # A tp rank holds heads / tp and the MLP width / tp (the projections' outputs are split).
    cfg.num_attention_heads //= tp
    cfg.num_key_value_heads = max(1, (cfg.num_key_value_heads or cfg.num_attention_heads) // tp)
    cfg.intermediate_size //= tp
    cfg.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // (
        cfg.num_attention_heads * tp
    )
    AttentionInterface.register("langgraft_plan", _flash_like)
    cfg._attn_implementation = "eager" if attn == "eager" else "langgraft_plan"
    with torch.device("meta"):
        one = _one_layer_model(cfg, cfg._attn_implementation).to(dtype)  # the family's own layer
        layer, rotary = one.model.layers[0], one.model.rotary_emb
        x = torch.empty(batch, seq, cfg.hidden_size, dtype=dtype, requires_grad=True)
        pos = torch.arange(seq)[None].expand(batch, seq)
        head = torch.nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False).to(dtype)
        labels = torch.zeros(batch, seq, dtype=torch.long)
        pe = rotary(x, pos)
        mask = None
        if attn == "eager":
            mask = torch.zeros(batch, 1, seq, seq, dtype=dtype)
        layer_bytes = _saved_bytes(lambda: layer(x, position_embeddings=pe, attention_mask=mask))
        logits_bytes = _saved_bytes(lambda: token_nll(head(x), labels).sum())
    return layer_bytes, x.numel() * x.element_size(), logits_bytes


def loss_bytes(cfg: Any, batch: int, seq: int, c: int, full_saved: int) -> tuple[float, float]:
    """(saved for backward, transient in backward) of lm_head + loss. When the trainer's loss
    runs lm_head in recomputed chunks (train/loss.py LOSS_CHUNK_BYTES), only the final hidden
    states stay and one chunk's logits (bf16 + fp32 + its gradient) exist at a time; otherwise
    the full logits are saved and their gradient allocated in backward."""
    from langgraft.train import loss

    full_logits = batch * seq * cfg.vocab_size
    chunk = getattr(loss, "LOSS_CHUNK_BYTES", None)
    if chunk is None:
        return full_saved, full_logits * (4 + c)
    per_chunk = min(float(chunk), full_logits * 4.0)
    return batch * seq * cfg.hidden_size * c, per_chunk * (1 + 1 + c / 4)


def _one_layer_model(cfg: Any, attn: str | None = None) -> Any:
    """The family's model with one decoder layer, on the current (meta) device."""
    from transformers import AutoModelForCausalLM

    one = type(cfg).from_dict(cfg.to_dict())
    one.num_hidden_layers = 1
    if getattr(one, "layer_types", None):
        one.layer_types = list(one.layer_types[:1])
    return AutoModelForCausalLM.from_config(one, attn_implementation=attn or "sdpa")


def _param_counts(cfg: Any) -> dict[str, int]:
    """Parameters of one decoder layer, split into the projections tensor parallel shards
    (biases included) and the rest, counted on the family's own layer (model/families.py)."""
    from langgraft.model.families import family

    fam = family(getattr(cfg, "model_type", None), "config.json")
    with torch.device("meta"):
        layer = _one_layer_model(cfg).model.layers[0]
    split_modules = [layer.get_submodule(n) for n in (*fam.colwise, *fam.rowwise)]
    split = sum(p.numel() for m in split_modules for p in m.parameters())
    h, V = cfg.hidden_size, cfg.vocab_size
    return {
        "split": split,  # projections of one layer (tensor parallel splits these)
        "norms": sum(p.numel() for p in layer.parameters()) - split,  # the rest of one layer
        "embed": V * h,
        "head": 0 if cfg.tie_word_embeddings else V * h,
        "final_norm": h,
    }


def plan_memory(recipe: Any, dims: ParallelDims, cfg: Any) -> MemoryPlan:
    """The most demanding stage's per-rank memory (see the module docstring)."""
    n = _param_counts(cfg)
    L = cfg.num_hidden_layers
    tp, dp = dims.tp, dims.dp
    shard = dp if dims.fsdp else 1  # ranks over which FSDP2 shards a tensor
    untied_split = tp if (tp > 1 and n["head"]) else 1
    layer_local = n["split"] / tp + n["norms"]  # one layer's parameters on one tp rank
    root_local = (n["embed"] + n["head"]) / untied_split + n["final_norm"]
    layers_total = L * layer_local
    c = 2 if recipe.precision in ("bf16", "fp16") else 4  # compute bytes per element
    dtype = {2: torch.bfloat16, 4: torch.float32}[c]
    seq = recipe.max_length or int(cfg.max_position_embeddings)
    best: MemoryPlan | None = None
    host_max = 0.0
    for stage in recipe.stages:
        trained_layers = 0.0 if stage.freeze_non_embeds_params else layers_total
        trained = trained_layers + root_local
        state = {
            "parameters (fp32)": 4 * (layers_total + root_local) / shard,
            "gradients (fp32)": 4 * trained / shard,
            "AdamW state (fp32 m, v)": 8 * trained / shard,
        }
        host = 0.0
        if dims.offload:
            host = sum(state.values())
            host_max = max(host_max, host)
            state = dict.fromkeys(state, 0.0)
        rows = dict(state)
        if dims.fsdp:
            # gathered compute copies (bf16 under MixedPrecisionPolicy, else fp32)
            gathered = layers_total if not dims.reshard_after_forward else 2 * layer_local
            rows["FSDP2 gathered parameters"] = c * (gathered + root_local)
            rows["FSDP2 unsharded gradients"] = 4 * 2 * layer_local  # reduce-scatter inputs
        elif c == 2:
            rows["autocast bf16 weight copies"] = c * (layers_total + root_local)
        b = stage.micro_batch_size
        layer_b, input_b, logits_b = activation_bytes(
            cfg, b, seq, dtype, recipe.attn_implementation, tp
        )
        if recipe.grad_checkpoint:
            acts = L * input_b + layer_b
        else:
            acts = L * layer_b
        rows["activations"] = acts
        if recipe.attn_implementation in ("sdpa", "eager"):
            rows["attention mask (block-causal)"] = b * seq * seq * c
        saved, transient = loss_bytes(cfg, b, seq, c, logits_b)
        rows["logits + loss (saved)"] = saved
        rows["logits gradient (backward)"] = transient
        grads = rows.pop("gradients (fp32)")
        fwd = sum(v for k, v in rows.items() if k not in state)  # what a micro-step adds
        # zero_grad(set_to_none) frees the gradients, which then fill up in backward while the
        # activations drain: with one micro-batch per step they do not coincide with the
        # activations' peak; with accumulation the earlier micro-batches' gradients do.
        static = sum(v for k, v in rows.items() if k in state)
        if stage.accumulation_steps > 1:
            peak = static + grads + fwd
        else:
            peak = static + max(fwd, grads + rows["logits gradient (backward)"])
        rows = {"gradients (fp32)": grads, **rows}
        plan = MemoryPlan(rows, host, peak)
        if best is None or plan.peak > best.peak:
            best = plan
    assert best is not None
    best.host = host_max
    return best


def plan_report(recipe: Any, dims: ParallelDims, gpu_gib: float) -> str:
    cfg = read_config(recipe.model)
    plan = plan_memory(recipe, dims, cfg)
    n = _param_counts(cfg)
    total = cfg.num_hidden_layers * (n["split"] + n["norms"]) + sum(
        n[k] for k in ("embed", "head", "final_norm")
    )
    head = (
        f"plan: {total / 1e9:.2f}B parameters (vocabulary {cfg.vocab_size:,}), plugin "
        f"{dims.plugin}, {dims.world} rank(s) = dp {dims.dp} x tp {dims.tp}, precision "
        f"{recipe.precision}, micro-batch {max(s.micro_batch_size for s in recipe.stages)} x "
        f"{recipe.max_length or cfg.max_position_embeddings} tokens, activation checkpointing "
        f"{'on' if recipe.grad_checkpoint else 'off'}, attention {recipe.attn_implementation}"
    )
    return head + "\n" + plan.table(gpu_gib)


def plan_json(recipe: Any, dims: ParallelDims) -> dict[str, Any]:
    plan = plan_memory(recipe, dims, read_config(recipe.model))
    return {"rows": plan.rows, "host": plan.host, "peak": plan.peak}
