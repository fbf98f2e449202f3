"""Language-modelling loss on text corpora, comparable across tokenizers.

Loss per token depends on how finely the tokenizer cuts text: a tokenizer that adds 20k Chinese
pieces makes each token carry more text and its per-token loss rises even when the model got
better. Per character and per UTF-8 byte (bits per byte) the denominator is the text itself, so
models with different vocabularies can be compared on the same file.

Each document is tokenized whole and cut into windows of `max_length - 1` tokens; each window is
scored behind a BOS token, so every text token is predicted exactly once (the first token of a
window sees no earlier text: the reported loss is a slight over-estimate for short windows).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from langgraft.errors import UserError
from langgraft.eval.data import read_jsonl

log = logging.getLogger(__name__)


@dataclass
class TextLoss:
    name: str
    documents: int
    tokens: int
    chars: int
    bytes: int
    nll: float
    """Total negative log-likelihood in nats."""
    windows: int = 0
    """Model inputs the documents were cut into."""
    max_length: int = 0
    """Window length used (BOS included)."""

    @property
    def loss_per_token(self) -> float:
        return self.nll / self.tokens

    @property
    def nats_per_char(self) -> float:
        return self.nll / self.chars

    @property
    def bits_per_byte(self) -> float:
        return self.nll / math.log(2) / self.bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "loss_per_token": self.loss_per_token,
            "perplexity_per_token": math.exp(min(self.loss_per_token, 700)),
            "nats_per_char": self.nats_per_char,
            "bits_per_byte": self.bits_per_byte,
        }


def read_corpus(
    path: str | Path, text_key: str = "text", max_chars: int | None = None
) -> list[str]:
    """Documents of a plain-text file (one document) or a JSON-lines file (`text_key` per line),
    cut to `max_chars` characters in total."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such corpus file")
    if p.suffix == ".jsonl":
        docs = []
        for line, row in read_jsonl(p):
            if not isinstance(row.get(text_key), str):
                raise UserError(f"{p}:{line}: no string field {text_key!r}; set --text-key")
            docs.append(row[text_key])
    elif p.suffix in (".txt", ".text", ""):
        try:
            docs = [p.read_text(encoding="utf-8").replace("\r\n", "\n")]
        except UnicodeDecodeError:
            raise UserError(f"{p}: not UTF-8 text") from None
    else:
        raise UserError(f"{p}: unknown corpus format {p.suffix!r}; use .txt or .jsonl")
    if max_chars:
        out, left = [], max_chars
        for d in docs:
            if left <= 0:
                break
            out.append(d[:left])
            left -= len(out[-1])
        docs = out
    return [d for d in docs if d]


def _windows(ids: list[int], size: int) -> list[list[int]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def evaluate_text(
    model: Any,
    tokenizer: Any,
    docs: list[str],
    name: str = "text",
    max_length: int = 1024,
    batch_size: int = 2,
) -> TextLoss:
    """Total loss of `model` over `docs`; see the module docstring for the windowing."""
    import torch

    limit = int(getattr(model.config, "max_position_embeddings", max_length))
    if max_length > limit:
        # Positions past the trained context are not an error for RoPE, just meaningless.
        log.info(
            "%s: window %d -> %d (the model's max_position_embeddings)", name, max_length, limit
        )
        max_length = limit
    bos = tokenizer.bos_token_id
    if bos is None:
        raise UserError("tokenizer has no BOS token; text loss scores every token behind BOS")
    rows: list[list[int]] = []
    tokens = 0
    for doc in docs:
        ids = tokenizer(doc, add_special_tokens=False)["input_ids"]
        tokens += len(ids)
        rows += [[bos, *w] for w in _windows(ids, max_length - 1)]
    rows.sort(key=len, reverse=True)
    nll = 0.0
    model.eval()
    with torch.inference_mode():
        for start in tqdm(range(0, len(rows), batch_size), desc=name, unit="batch", disable=None):
            batch = rows[start : start + batch_size]
            width = max(len(r) for r in batch)
            ids = torch.full((len(batch), width), bos, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            for i, r in enumerate(batch):
                ids[i, : len(r)] = torch.tensor(r)
                labels[i, 1 : len(r)] = torch.tensor(r[1:])
            # Right padding under causal attention: real tokens never attend to the pads.
            logits = model(input_ids=ids.to(model.device), use_cache=False).logits.float()
            nll += torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]),
                labels[:, 1:].reshape(-1).to(logits.device),
                ignore_index=-100,
                reduction="sum",
            ).item()
    chars = sum(len(d) for d in docs)
    nbytes = sum(len(d.encode("utf-8")) for d in docs)
    return TextLoss(name, len(docs), tokens, chars, nbytes, nll, len(rows), max_length)


def markdown(results: list[TextLoss], model: str) -> str:
    lines = [
        f"# text loss — {model}\n",
        "| corpus | tokens | chars | loss/token | nats/char | bits/byte |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.tokens} | {r.chars} | {r.loss_per_token:.4f} | "
            f"{r.nats_per_char:.4f} | {r.bits_per_byte:.4f} |"
        )
    return "\n".join(lines) + "\n"
