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

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from langgraft.errors import UserError
from langgraft.eval.data import read_jsonl
from langgraft.fsutil import not_utf8

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
    nats_per_char_stderr: float = float("nan")
    """Standard error of nats/char over the windows (ratio estimator; adjacent windows of one
    text are not independent, so this is a lower bound on the true uncertainty)."""

    @property
    def loss_per_token(self) -> float:
        return self.nll / self.tokens

    @property
    def nats_per_char(self) -> float:
        return self.nll / self.chars

    @property
    def bits_per_byte(self) -> float:
        return self.nll / math.log(2) / self.bytes

    @property
    def bits_per_char(self) -> float:
        return self.nats_per_char / math.log(2)

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "loss_per_token": self.loss_per_token,
            "perplexity_per_token": math.exp(min(self.loss_per_token, 700)),
            "nats_per_char": self.nats_per_char,
            "bits_per_byte": self.bits_per_byte,
            "bits_per_char": self.bits_per_char,
            "bits_per_char_stderr": self.nats_per_char_stderr / math.log(2),
        }


def read_corpus(
    path: str | Path, text_key: str = "text", max_chars: int | None = None
) -> list[str]:
    """Documents of a plain-text file (one document) or a JSON-lines file (`text_key` per line),
    cut to `max_chars` characters in total."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such corpus file")
    if max_chars is not None and max_chars < 0:
        raise UserError(f"--max-chars {max_chars}: must be >= 0 (0: all)")
    if p.suffix == ".jsonl":
        docs = []
        for line, row in read_jsonl(p):
            if not isinstance(row.get(text_key), str):
                raise UserError(f"{p}:{line}: no string field {text_key!r}; set --text-key")
            _check_encodable(row[text_key], f"{p}:{line}")
            docs.append(row[text_key])
    elif p.suffix in (".txt", ".text", ""):
        try:
            docs = [p.read_text(encoding="utf-8").replace("\r\n", "\n")]
        except UnicodeDecodeError:
            raise not_utf8(p, "corpus") from None
        except OSError as e:
            raise UserError(f"{p}: cannot read ({e.strerror})") from None
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
    docs = [d for d in docs if d]
    if not docs:
        raise UserError(f"{p}: no text to score (empty file or empty {text_key!r} fields)")
    return docs


def _check_encodable(text: str, where: str) -> None:
    """JSON may spell lone surrogates ("\\ud800"), which no tokenizer can encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UserError(
            f"{where}: text holds a lone surrogate {text[e.start]!r} at character {e.start}; "
            "fix the JSON escape"
        ) from None


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

    if max_length < 2:
        raise UserError(f"--max-length {max_length}: a window needs BOS and a token (>= 2)")
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be >= 1")
    if not any(docs):
        raise UserError(f"{name}: no text to score")
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
    for i, doc in enumerate(docs):
        _check_encodable(doc, f"{name}: document {i + 1}")
        ids = tokenizer(doc, add_special_tokens=False)["input_ids"]
        tokens += len(ids)
        rows += [[bos, *w] for w in _windows(ids, max_length - 1)]
    rows.sort(key=len, reverse=True)
    nll = 0.0
    row_nll: list[float] = []
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
            per_token = torch.nn.functional.cross_entropy(
                logits[:, :-1].transpose(1, 2),
                labels[:, 1:].to(logits.device),
                ignore_index=-100,
                reduction="none",
            )
            sums = per_token.sum(dim=1).tolist()
            row_nll += sums
            nll += sum(sums)
    chars = sum(len(d) for d in docs)
    nbytes = sum(len(d.encode("utf-8")) for d in docs)
    # Characters per window, for the standard error only: decoded lengths, scaled to the exact
    # total (a SentencePiece window's leading space makes decode() approximate).
    approx = [max(1, len(tokenizer.decode(r[1:]))) for r in rows]
    scale = chars / sum(approx)
    se = _ratio_stderr(row_nll, [a * scale for a in approx])
    return TextLoss(name, len(docs), tokens, chars, nbytes, nll, len(rows), max_length, se)


def _ratio_stderr(y: list[float], x: list[float]) -> float:
    """Standard error of sum(y)/sum(x) over n units (delta method)."""
    n = len(y)
    if n < 2:
        return float("nan")
    r = sum(y) / sum(x)
    mean_x = sum(x) / n
    var = sum((yi - r * xi) ** 2 for yi, xi in zip(y, x, strict=True)) / (n * (n - 1))
    return math.sqrt(var) / mean_x


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


def load_text_result(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        p = p / "text_results.json"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{p}: no such file (give a text_results.json or its directory)") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{p}: not a `langgraft eval text` results file") from None
    if not isinstance(data, dict) or not isinstance(data.get("corpora"), list):
        raise UserError(f"{p}: not a `langgraft eval text` results file")
    return data


def compare_text(base: str | Path, others: list[str | Path]) -> str:
    """Bits per character per corpus: base vs each other model, with the difference and whether
    it exceeds twice its standard error (the two runs' standard errors combined)."""
    b = load_text_result(base)
    lines = [
        "| corpus | model | bits/char | Δ vs "
        + str(b.get("model", base))
        + " | 2×SE | beyond 2×SE |",
        "|---|---|---:|---:|---:|---|",
    ]
    by_name = {c["name"]: c for c in b["corpora"]}
    for name, c0 in by_name.items():
        lines.append(
            f"| {name} | {b.get('model', base)} (base) | {c0['bits_per_char']:.4f} | | | |"
        )
        for o in others:
            r = load_text_result(o)
            c1 = next((c for c in r["corpora"] if c["name"] == name), None)
            if c1 is None:
                continue
            d = c1["bits_per_char"] - c0["bits_per_char"]
            se = math.sqrt(
                c0.get("bits_per_char_stderr", float("nan")) ** 2
                + c1.get("bits_per_char_stderr", float("nan")) ** 2
            )
            sig = "yes" if abs(d) > 2 * se else ("no" if se == se else "n/a")
            lines.append(
                f"| {name} | {r.get('model', o)} | {c1['bits_per_char']:.4f} | {d:+.4f} | "
                f"{2 * se:.4f} | {sig} |"
            )
    return "\n".join(lines) + "\n"
