"""Tiny, fast fixtures for the trainer tests: a random 2-layer LLaMA with the real tok512
tokenizer, and datasets written by the real `prepare` (so the trainer is tested against the
format prepare actually writes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
TOK512 = (SHARED / "models" / "stories260K" / "tok512.model").resolve()

WORDS = (
    "the cat sat on a mat and the dog ran to the park where a bird sang "
    "one day a little girl found a big red ball in the garden she was happy"
).split()


def tiny_model(out: Path, seed: int = 0, tie: bool = False, layers: int = 2) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from langgraft.tokenizer import load_tokenizer

    tok = load_tokenizer(TOK512)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=tie,
    )  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def texts(n: int, seed: int, min_words: int = 3, max_words: int = 40) -> list[str]:
    import random

    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words)))
        for _ in range(n)
    ]


def prepared(
    out: Path,
    model_dir: Path,
    categories: dict[str, int],
    max_length: int = 64,
    num_bins: int = 1,
    seed: int = 0,
    tokenizer: Path | None = None,
) -> Path:
    """`langgraft prepare pretrain` over synthetic jsonl rows {"category", "text"}, tokenized
    with `tokenizer` (default: the model directory's own)."""
    from langgraft.data.config import PrepareConfig
    from langgraft.data.prepare import prepare

    src = out.parent / f"{out.name}.jsonl"
    with open(src, "w", encoding="utf-8") as f:
        for k, (cat, n) in enumerate(sorted(categories.items())):
            for t in texts(n, seed * 100 + k):
                f.write(json.dumps({"category": cat, "text": t}) + "\n")
    cfg = PrepareConfig(
        input=[str(src)], tokenizer=tokenizer or model_dir, out=out, max_length=max_length,
        num_bins=num_bins, seed=seed, text_field="text", progress=False,
    )  # fmt: skip
    prepare(cfg)
    return out


def two_languages(t: Path) -> dict[str, Path]:
    """A tied tiny model with a two-bucket "zh" dataset and a one-bucket "en" dataset."""
    model = tiny_model(t / "model", tie=True)
    return {
        "t": t,
        "model": model,
        "zh": prepared(t / "zh", model, {"zh": 70}, num_bins=2, seed=1),
        "en": prepared(t / "en", model, {"en": 40}, num_bins=1, seed=2),
    }


def swap_two_pieces(model_dir: Path) -> None:
    """Make the directory's tokenizer.json encode differently (two pieces trade ids)."""
    path = model_dir / "tokenizer.json"
    spec = json.loads(path.read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    a, b = "▁the", "▁a"
    vocab[a], vocab[b] = vocab[b], vocab[a]
    path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")


def write_recipe(path: Path, recipe: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path
