"""Shared builders for the eval tests (plain functions, cached per process: the tiny model takes
a second to build and every eval test module uses it)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

SHARED_DATA = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()
LLAMA2_TOKENIZER = SHARED_DATA / "tokenizers" / "llama2" / "tokenizer.model"
CMMLU = SHARED_DATA / "eval" / "cmmlu"


@functools.cache
def tokenizer() -> Any:
    from langgraft.tokenizer import load_tokenizer

    return load_tokenizer(LLAMA2_TOKENIZER)


@functools.cache
def tiny_model(max_positions: int = 2048, seed: int = 0) -> Any:
    """A random 2-layer LLaMA over the real LLaMA-2 vocabulary, float32, eval mode."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer()),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        # Larger than the default 0.02 so the letters' logits are well apart: a near-tie could
        # flip between two float summation orders and make a path comparison meaningless.
        initializer_range=0.5,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


def save_tiny_model_dir(out: Path) -> Path:
    """`tiny_model()` + the LLaMA-2 tokenizer as a HF directory that `--model` accepts."""
    from langgraft.tokenizer import write_hf_tokenizer
    from langgraft.tokenizer.spmodel import load_proto

    tiny_model().save_pretrained(out)
    write_hf_tokenizer(load_proto(LLAMA2_TOKENIZER), out)
    return out


def write_csv(path: Path, rows: list[list[str]], header: list[str] | None = None) -> Path:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        if header is not None:
            w.writerow(header)
        w.writerows(rows)
    return path
