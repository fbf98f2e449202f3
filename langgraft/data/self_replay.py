"""`langgraft data self-replay`: replay data and a forgetting probe sampled from the base model.

Colossal-LLaMA-2 never released the data it replayed, and most users of a base model do not have
its pretraining corpus. The base model itself is a sample of that distribution: text it generates
from BOS alone is, by construction, what it was trained to produce. Mixing such samples into the
last training stage pulls the model back towards its original distribution (replay), and the
base model's bits per character on held-out samples is the "original domain" figure that
forgetting is measured against.

    # CPU, seconds: 200k tokens of TinyStories-like English from stories260K
    langgraft data self-replay --model out/stories260K --out out/self-replay --tokens 200000
    # a 7B base model on a GPU
    langgraft data self-replay --model llama-2-7b-hf --out replay/ --tokens 20000000 \\
        --batch-size 64 --max-new-tokens 1024 --dtype bf16

Output (written atomically): `train.jsonl` and `heldout.jsonl` in the pretrain schema
(`{"source": "", "target": TEXT, "category": CATEGORY}` per line; `langgraft prepare pretrain`
reads them as they are) and `self_replay.json` with the settings (temperature, top-p, seed),
the model, the token counts and each file's sha256.

Token budget: `--tokens N` counts generated tokens (stop tokens excluded) in the model's own
tokenizer; generation stops once N is reached and the last sample is cut, so the files hold
exactly N. Samples go to heldout.jsonl with probability `--heldout-fraction` (seeded), never to
both files. Same model, settings and seed give byte-identical files (on the same device).
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from langgraft.config import to_dict
from langgraft.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class SelfReplayConfig:
    model: Path
    """The base model to sample from (HF directory with its tokenizer)."""
    out: Path
    """Output directory: train.jsonl, heldout.jsonl, self_replay.json (written atomically)."""
    tokens: int = 1_000_000
    """Total tokens to sample into the two files (the model's tokenizer, stop tokens excluded);
    the last sample is cut so the total is exactly this."""
    heldout_fraction: float = 0.1
    """Probability that a sample goes to heldout.jsonl (the forgetting probe) instead of
    train.jsonl (the replay data)."""
    temperature: float = 1.0
    """Softmax temperature (1 samples the model's own distribution)."""
    top_p: float = 0.95
    """Nucleus sampling: keep the smallest set of tokens with this much probability (1 = off)."""
    top_k: int = 0
    """Sample among the k most likely tokens (0 = no limit)."""
    seed: int = 0
    """Seed: batch b is sampled with seed * 1000003 + b, the held-out pick with `seed`. The
    files depend on the seed, the settings and --batch-size."""
    prompt: str = ""
    """Text every sample starts from (empty: BOS alone). The prompt is not written out."""
    max_new_tokens: int | None = None
    """Longest sample in tokens (default: the model's context minus the prompt, at most 1024)."""
    min_tokens: int = 8
    """Drop samples shorter than this (a story that stops at once teaches nothing)."""
    batch_size: int = 32
    """Samples generated together."""
    category: str = "self-replay"
    """`category` of every row (the name replay and probe losses are reported under)."""
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Compute dtype; auto = bf16 on a GPU that supports it, fp32 on CPU."""
    device: str = "auto"
    """cpu, cuda, cuda:1, ...; auto = cuda if available."""
    overwrite: bool = False
    """Replace an existing output directory."""
    progress: bool = True
    """Show a progress bar (tokens sampled)."""

    def validate(self) -> None:
        if self.tokens < 1:
            raise UserError(f"--tokens {self.tokens}: must be at least 1")
        if not 0 <= self.heldout_fraction < 1:
            raise UserError(f"--heldout-fraction {self.heldout_fraction}: must be in [0, 1)")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise UserError(f"--temperature {self.temperature}: must be a finite number > 0")
        if not 0 < self.top_p <= 1:
            raise UserError(f"--top-p {self.top_p}: must be in (0, 1]")
        if self.top_k < 0 or self.batch_size < 1 or self.min_tokens < 1 or self.seed < 0:
            raise UserError("--top-k must be >= 0; --batch-size, --min-tokens >= 1; --seed >= 0")
        if self.max_new_tokens is not None and self.max_new_tokens < self.min_tokens:
            raise UserError(f"--max-new-tokens {self.max_new_tokens}: below --min-tokens")
        if not self.category:
            raise UserError("--category: must not be empty")
        for option, text in (("--prompt", self.prompt), ("--category", self.category)):
            _check_text(option, text)


def _check_text(option: str, text: str) -> None:
    """Refuse text that is not valid Unicode: a shell passes bytes that are not UTF-8 as lone
    surrogates (Python's surrogateescape), which the tokenizer rejects with a TypeError and
    no UTF-8 file can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UserError(
            f"{option}: character {e.start + 1} ({text[e.start]!r}) is not valid Unicode (a byte "
            "that is not UTF-8 in the command line?); give UTF-8 text"
        ) from None


def _context_budget(model: Any, prompt_len: int, cfg: SelfReplayConfig) -> int:
    ctx = int(getattr(model.config, "max_position_embeddings", 2048))
    room = ctx - prompt_len
    if cfg.max_new_tokens is not None:
        if cfg.max_new_tokens > room:
            raise UserError(
                f"--max-new-tokens {cfg.max_new_tokens}: the prompt ({prompt_len} tokens) leaves "
                f"room for {room} in the model's context ({ctx})"
            )
        return cfg.max_new_tokens
    if room < cfg.min_tokens:
        raise UserError(f"--prompt: {prompt_len} tokens leave no room in the context ({ctx})")
    return min(1024, room)


def sample_documents(cfg: SelfReplayConfig, model: Any, tok: Any) -> list[dict[str, Any]]:
    """[{"text", "tokens", "finish", "heldout"}], exactly `cfg.tokens` tokens in all."""
    from tqdm import tqdm

    from langgraft.decoding import (
        SamplingOptions,
        completion_text,
        default_stop_ids,
        generate_ids,
    )

    prompt_ids = tok(cfg.prompt).input_ids if cfg.prompt else [tok.bos_token_id]
    if not prompt_ids or prompt_ids[0] is None:
        raise UserError(f"{cfg.model}: the tokenizer has no BOS token; give --prompt TEXT")
    max_new = _context_budget(model, len(prompt_ids), cfg)
    stop_ids = default_stop_ids(model, tok)
    pick = random.Random(cfg.seed)
    docs: list[dict[str, Any]] = []
    left = cfg.tokens
    batch = 0
    bar = tqdm(total=cfg.tokens, desc="self-replay", unit="tok", disable=not cfg.progress)
    while left > 0:
        opts = SamplingOptions(
            max_new_tokens=max_new, temperature=cfg.temperature, top_p=cfg.top_p,
            top_k=cfg.top_k, seed=cfg.seed * 1_000_003 + batch,
        )  # fmt: skip
        # Size the batch to what is left (mean sample length so far, with a margin): the last
        # batch would otherwise generate up to batch_size x max_new tokens only to cut them.
        mean = sum(d["tokens"] for d in docs) / len(docs) if docs else max_new / 2
        n = min(cfg.batch_size, math.ceil(1.2 * left / mean) + 1)
        before = left
        results = generate_ids(model, tok, [prompt_ids] * n, opts, stop_ids)
        batch += 1
        for ids, finish in results:
            if len(ids) < cfg.min_tokens or left <= 0:
                continue
            if len(ids) > left:
                ids, finish = ids[:left], "budget"
            text = completion_text(tok, prompt_ids, ids).strip()
            if not text:
                continue
            docs.append(
                {"text": text, "tokens": len(ids), "finish": finish,
                 "heldout": pick.random() < cfg.heldout_fraction}
            )  # fmt: skip
            left -= len(ids)
        # One update per batch: a batch's samples all finish together, and an update per
        # sample made the first rate "one sample's tokens per whole batch" (an 8-hour ETA).
        bar.update(before - left)
        if batch >= 8 and not docs:
            raise UserError(
                f"{cfg.model}: {batch * cfg.batch_size} samples, none with >= {cfg.min_tokens} "
                "tokens; the model stops at once (try --prompt TEXT or a lower --min-tokens)"
            )
    bar.close()
    return docs


def _write_jsonl(path: Path, docs: list[dict[str, Any]], category: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            row = {"source": "", "target": d["text"], "category": category}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def self_replay(cfg: SelfReplayConfig) -> dict[str, Any]:
    """Sample, split and write; returns the summary saved as self_replay.json."""
    from langgraft.decoding import ModelOptions, load_model
    from langgraft.fsutil import atomic_output_dir, check_output, sha256_file

    cfg.validate()
    # The model is an input: --out must not be, contain or lie inside it; refused before the
    # model is loaded and sampled (minutes), not after.
    check_output(cfg.out, cfg.overwrite, [cfg.model])
    model, tok = load_model(ModelOptions(model=cfg.model, dtype=cfg.dtype, device=cfg.device))
    docs = sample_documents(cfg, model, tok)
    parts = {
        "train": [d for d in docs if not d["heldout"]],
        "heldout": [d for d in docs if d["heldout"]],
    }
    weights = sorted(Path(cfg.model).glob("*.safetensors"))
    summary: dict[str, Any] = {
        "config": to_dict(cfg),
        "model_weights_sha256": {p.name: sha256_file(p) for p in weights},
        "tokens": cfg.tokens,
        "samples": len(docs),
        "finish_reasons": {
            r: sum(d["finish"] == r for d in docs) for r in ("stop", "length", "budget")
        },
        "files": {},
    }
    with atomic_output_dir(cfg.out, cfg.overwrite, [cfg.model]) as tmp:
        for name, part in parts.items():
            _write_jsonl(tmp / f"{name}.jsonl", part, cfg.category)
            summary["files"][f"{name}.jsonl"] = {
                "samples": len(part),
                "tokens": sum(d["tokens"] for d in part),
                "chars": sum(len(d["text"]) for d in part),
                "sha256": sha256_file(tmp / f"{name}.jsonl"),
            }
        (tmp / "self_replay.json").write_text(
            json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    return summary
