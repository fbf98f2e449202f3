"""Import a llama2.c checkpoint (legacy v0 `.bin`) and its SentencePiece tokenizer as a Hugging Face
`LlamaForCausalLM` directory.

    langgraft model import-llama2c \\
        --checkpoint ../shared/data/models/stories260K/stories260K.bin \\
        --tokenizer ../shared/data/models/stories260K/tok512.model --out runs/stories260K

The legacy v0 format (llama2.c `export.py: legacy_export`) is a header of 7 int32 (dim,
hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size flags an
untied classifier) followed by float32 tensors, each kind stacked over layers: token embedding,
attention rmsnorms, wq, wk, wv, wo, ffn rmsnorms, w1, w2, w3, final rmsnorm, the precomputed RoPE
cos/sin tables (skipped), then the classifier if untied.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langgraft.errors import UserError

log = logging.getLogger(__name__)

HEADER = struct.Struct("<7i")
# llama2.c's run.c hard-codes these two; HF needs them spelled out.
RMS_NORM_EPS = 1e-5
ROPE_THETA = 10000.0


@dataclass(frozen=True)
class Llama2cHeader:
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int
    shared_classifier: bool

    @property
    def head_size(self) -> int:
        return self.dim // self.n_heads

    def n_floats(self) -> int:
        """Number of float32 values after the header, as run.c's memory_map_weights reads them."""
        d, h, n_l, v = self.dim, self.hidden_dim, self.n_layers, self.vocab_size
        kv_dim = self.n_kv_heads * self.head_size
        per_layer = d + d * d + 2 * d * kv_dim + d * d + d + 3 * d * h
        rope = self.seq_len * self.head_size  # cos + sin, seq_len x head_size/2 each
        return v * d + n_l * per_layer + d + rope + (0 if self.shared_classifier else v * d)


def read_header(path: Path) -> Llama2cHeader:
    size = path.stat().st_size
    if size < HEADER.size:
        raise UserError(f"{path}: too short for a llama2.c checkpoint ({size} bytes)")
    with open(path, "rb") as f:
        dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = HEADER.unpack(f.read(HEADER.size))
    if dim == 0x616B3432:  # b"ak42": llama2.c's versioned formats, not the legacy one
        raise UserError(
            f"{path}: this is a llama2.c v1/v2 export (magic 'ak42'); only the legacy v0 format is "
            "supported: re-export with `python export.py --version 0`"
        )
    hdr = Llama2cHeader(dim, hidden, n_layers, n_heads, n_kv, abs(vocab), seq_len, vocab > 0)
    fields = [dim, hidden, n_layers, n_heads, n_kv, abs(vocab), seq_len]
    if min(fields) <= 0 or dim % n_heads or n_heads % n_kv or hdr.head_size % 2:
        raise UserError(f"{path}: implausible llama2.c header {fields}; not a legacy v0 checkpoint")
    expected = HEADER.size + 4 * hdr.n_floats()
    if size != expected:
        raise UserError(
            f"{path}: size {size} bytes does not match its header {fields} (expected {expected}); "
            "the file is truncated or not a legacy v0 llama2.c checkpoint"
        )
    return hdr


def rotary_pairs_to_halves(w: Any, n_heads: int) -> Any:
    """Reorder q/k output rows from llama2.c's interleaved RoPE to HF's rotate-half layout.

    llama2.c rotates adjacent pairs (x0,x1),(x2,x3)... within each head; HF's `rotate_half` pairs
    x[i] with x[i + head_dim/2]. Taking the even rows of each head first, then the odd rows, maps
    one convention onto the other (the same permutation as HF's convert_llama_weights_to_hf).
    """
    out_dim, in_dim = w.shape
    return (
        w.view(n_heads, out_dim // n_heads // 2, 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)
    )


def read_state_dict(path: Path, hdr: Llama2cHeader) -> dict[str, Any]:
    """The checkpoint as an HF Llama state dict (float32, q/k permuted)."""
    import numpy as np
    import torch

    flat = torch.from_numpy(np.fromfile(path, dtype="<f4", offset=HEADER.size).copy())
    pos = 0

    def take(*shape: int) -> Any:
        nonlocal pos
        n = int(np.prod(shape))
        t = flat[pos : pos + n].view(*shape)
        pos += n
        return t

    d, h, n_l, v = hdr.dim, hdr.hidden_dim, hdr.n_layers, hdr.vocab_size
    kv_dim = hdr.n_kv_heads * hdr.head_size
    sd: dict[str, Any] = {"model.embed_tokens.weight": take(v, d)}
    att_norm = take(n_l, d)
    wq, wk, wv, wo = take(n_l, d, d), take(n_l, kv_dim, d), take(n_l, kv_dim, d), take(n_l, d, d)
    ffn_norm = take(n_l, d)
    w1, w2, w3 = take(n_l, h, d), take(n_l, d, h), take(n_l, h, d)
    sd["model.norm.weight"] = take(d)
    take(hdr.seq_len * hdr.head_size)  # precomputed RoPE tables; HF recomputes them
    if not hdr.shared_classifier:
        sd["lm_head.weight"] = take(v, d)
    assert pos == flat.numel(), (pos, flat.numel())
    for i in range(n_l):
        p = f"model.layers.{i}."
        sd[p + "input_layernorm.weight"] = att_norm[i]
        sd[p + "self_attn.q_proj.weight"] = rotary_pairs_to_halves(wq[i], hdr.n_heads)
        sd[p + "self_attn.k_proj.weight"] = rotary_pairs_to_halves(wk[i], hdr.n_kv_heads)
        sd[p + "self_attn.v_proj.weight"] = wv[i]
        sd[p + "self_attn.o_proj.weight"] = wo[i]
        sd[p + "post_attention_layernorm.weight"] = ffn_norm[i]
        sd[p + "mlp.gate_proj.weight"] = w1[i]
        sd[p + "mlp.down_proj.weight"] = w2[i]
        sd[p + "mlp.up_proj.weight"] = w3[i]
    return {k: t.contiguous() for k, t in sd.items()}


def llama_config(hdr: Llama2cHeader, bos_id: int, eos_id: int) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=hdr.vocab_size,
        hidden_size=hdr.dim,
        intermediate_size=hdr.hidden_dim,
        num_hidden_layers=hdr.n_layers,
        num_attention_heads=hdr.n_heads,
        num_key_value_heads=hdr.n_kv_heads,
        max_position_embeddings=hdr.seq_len,
        rms_norm_eps=RMS_NORM_EPS,
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
        tie_word_embeddings=hdr.shared_classifier,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        dtype="float32",
    )


def import_llama2c(checkpoint: Path, tokenizer: Path, out_dir: Path) -> dict[str, Any]:
    """Write the HF model, tokenizer and generation config into `out_dir` (an existing scratch
    directory). Returns the metadata recorded in langgraft.json."""
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    from langgraft.fsutil import safetensors_write_errors, sha256_file, state_bytes
    from langgraft.model.meta import write_meta
    from langgraft.tokenizer.hf import write_hf_tokenizer
    from langgraft.tokenizer.spmodel import load_proto

    if not checkpoint.is_file():
        raise UserError(f"{checkpoint}: no such checkpoint file")
    hdr = read_header(checkpoint)
    proto = load_proto(tokenizer)
    if len(proto.pieces) != hdr.vocab_size:
        raise UserError(
            f"{tokenizer}: tokenizer has {len(proto.pieces)} pieces but {checkpoint} has a "
            f"{hdr.vocab_size}-row embedding; pass the tokenizer the checkpoint was trained with"
        )
    ts = proto.trainer_spec
    config = llama_config(hdr, ts.bos_id, ts.eos_id)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    sd = read_state_dict(checkpoint, hdr)
    if hdr.shared_classifier:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    model.load_state_dict(sd, strict=True, assign=True)
    model.tie_weights()
    model.eval()
    # llama2.c models (TinyStories pretokenization) separate documents with BOS and never saw EOS:
    # run.c stops when it samples BOS, so generation stops on either.
    gen = GenerationConfig(
        bos_token_id=ts.bos_id,
        eos_token_id=[ts.eos_id, ts.bos_id],
    )
    model.generation_config = gen
    with safetensors_write_errors(Path(out_dir) / "model.safetensors", state_bytes(model)):
        model.save_pretrained(out_dir)
    write_hf_tokenizer(proto, out_dir, model_max_length=hdr.seq_len)
    meta = {
        "source": {
            "format": "llama2c-legacy-v0",
            "checkpoint": str(checkpoint),
            "checkpoint_sha256": sha256_file(checkpoint),
            "tokenizer": str(tokenizer),
            "tokenizer_sha256": sha256_file(Path(tokenizer)),
        },
        "header": {k: getattr(hdr, k) for k in hdr.__dataclass_fields__},
        "n_params": sum(
            t.numel() for k, t in sd.items() if k != "lm_head.weight" or not hdr.shared_classifier
        ),
    }
    write_meta(out_dir, {"import_llama2c": meta})
    log.info(
        "imported %s: dim %d, %d layers, %d heads (%d kv), vocab %d, %s classifier",
        checkpoint.name,
        hdr.dim,
        hdr.n_layers,
        hdr.n_heads,
        hdr.n_kv_heads,
        hdr.vocab_size,
        "shared" if hdr.shared_classifier else "untied",
    )
    return json.loads(json.dumps(meta))
