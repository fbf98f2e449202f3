"""Language-modelling loss on text corpora, comparable across tokenizers.

Loss per token depends on how finely the tokenizer cuts text: a tokenizer that adds 20k Chinese
pieces makes each token carry more text and its per-token loss rises even when the model got
better. Per character (bits/char) and per UTF-8 byte (bits/byte) the denominator is the text
itself, so models with different vocabularies can be compared on the same file.

The context is the same in characters for every tokenizer. A window of N tokens covers twice the
text with a tokenizer that is twice as compressive, so fixed token windows would give the expanded
model more context and a lower loss for that alone. Instead each document is tokenized whole
(with character offsets) and scored in overlapping windows, as in sliding-window perplexity (HF's
perplexity guide, lm-eval-harness' rolling log-likelihood) but with the stride and the context
measured in characters: a window scores the tokens that start in the next `stride_chars`
characters and conditions them on the tokens that start in the `context_chars` characters before
(the whole prefix near a document's start). Every token, hence every character, is scored exactly
once; each window starts with BOS. A window longer than `max_length` tokens scores fewer
characters (the context is never cut); a context that alone does not fit is refused.

    langgraft eval text --model MODEL --data ../shared/data/corpus/zh/hongloumeng.txt --out OUT \
        --max-length 256            # context 43 + stride 42 characters, derived from 256
"""

from __future__ import annotations

import bisect
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from langgraft.errors import UserError
from langgraft.eval.progress import Progress
from langgraft.fsutil import not_utf8
from langgraft.jsonio import iter_jsonl

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
    """Most tokens in a window (BOS included)."""
    context_chars: int = 0
    """Characters of context before each window's scored characters."""
    stride_chars: int = 0
    """Characters scored per window (fewer where a window would exceed max_length)."""
    bits_per_char_stderr: float = float("nan")
    """Standard error of bits/char over the windows (ratio estimator; overlapping windows of one
    text are not independent, so this is a lower bound on the true uncertainty)."""

    @property
    def loss_per_token(self) -> float:
        """Nats per token (the training loss's unit)."""
        return self.nll / self.tokens

    @property
    def bits_per_char(self) -> float:
        return self.nll / math.log(2) / self.chars

    @property
    def bits_per_byte(self) -> float:
        return self.nll / math.log(2) / self.bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "loss_per_token": self.loss_per_token,
            "perplexity_per_token": math.exp(min(self.loss_per_token, 700)),
            "bits_per_char": self.bits_per_char,
            "bits_per_byte": self.bits_per_byte,
            # the same figure in nats, labelled, for readers of earlier results files
            "nats_per_char": self.nll / self.chars,
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
        for line, row in iter_jsonl(p):
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


def default_context(max_length: int) -> tuple[int, int]:
    """(context_chars, stride_chars) for a window of `max_length` tokens: together they fit even
    where every character takes three tokens (CJK under UTF-8 byte fallback), half each. The
    split does not favour a tokenizer (the scored characters are chosen by position, so the
    context each one sees, context_chars plus its offset in the stride, is the same for all);
    a longer stride only costs fewer overlapping tokens (here each token is run about twice)."""
    chars = max(2, (max_length - 1) // 3)
    return chars - chars // 2, chars // 2


@dataclass
class Window:
    context: tuple[int, int]
    """Token range [a, b) seen as context, not scored."""
    scored: tuple[int, int]
    """Token range [b, c) scored."""
    chars: tuple[int, int]
    """Character range the scored tokens cover (the ranges of a document partition it)."""


def plan_windows(
    starts: list[int], n_chars: int, context_chars: int, stride_chars: int, max_length: int
) -> list[Window]:
    """Windows over one document whose token i starts at character `starts[i]` (see the module
    docstring). Refuses a context that alone fills `max_length`."""
    out: list[Window] = []
    t, n = 0, len(starts)
    while t < n:
        s = starts[t]
        a = bisect.bisect_left(starts, s - context_chars, 0, t)
        u = bisect.bisect_left(starts, s + stride_chars, t + 1, n)
        room = max_length - 1 - (t - a)  # BOS, then the context
        if room < 1:
            raise UserError(
                f"the context of character {s} ({s - starts[a]} characters, at most "
                f"--context-chars {context_chars}) takes {t - a} tokens: --max-length "
                f"{max_length} leaves no room to score one; lower --context-chars or raise "
                "--max-length"
            )
        u = min(u, t + room)
        end = starts[u] if u < n else n_chars
        out.append(Window((a, t), (t, u), (0 if not out else s, end)))
        t = u
    return out


def _token_starts(tokenizer: Any, doc: str, where: str) -> tuple[list[int], list[int]]:
    """(ids, character where each token starts), non-decreasing."""
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"{where}: text loss needs a fast tokenizer (character offsets)")
    enc = tokenizer(doc, add_special_tokens=False, return_offsets_mapping=True)
    starts, last = [], 0
    for a, _ in enc["offset_mapping"]:
        last = max(last, a)  # byte-fallback pieces of one character share its offsets
        starts.append(last)
    return enc["input_ids"], starts


def evaluate_text(
    model: Any,
    tokenizer: Any,
    docs: list[str],
    name: str = "text",
    max_length: int = 1024,
    batch_size: int = 2,
    context_chars: int | None = None,
    stride_chars: int | None = None,
) -> TextLoss:
    """Total loss of `model` over `docs`; see the module docstring for the windows
    (`context_chars` / `stride_chars` None: `default_context(max_length)`)."""
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
    dc, ds = default_context(max_length)
    context_chars = dc if context_chars is None else context_chars
    stride_chars = ds if stride_chars is None else stride_chars
    if context_chars < 0 or stride_chars < 1:
        raise UserError(
            f"--context-chars {context_chars} / --stride-chars {stride_chars}: need >= 0 / >= 1"
        )
    bos = tokenizer.bos_token_id
    if bos is None:
        raise UserError("tokenizer has no BOS token; text loss scores every token behind BOS")
    rows: list[tuple[list[int], int, int]] = []  # (BOS + tokens, first scored index, chars)
    tokens = 0
    for i, doc in enumerate(docs):
        _check_encodable(doc, f"{name}: document {i + 1}")
        ids, starts = _token_starts(tokenizer, doc, f"{name}: document {i + 1}")
        try:
            wins = plan_windows(starts, len(doc), context_chars, stride_chars, max_length)
        except UserError as e:
            raise UserError(f"{name}: document {i + 1}: {e}") from None
        _check_partition(wins, len(ids), len(doc))
        tokens += len(ids)
        for w in wins:
            (a, t), (_, u) = w.context, w.scored
            rows.append(([bos, *ids[a:u]], 1 + t - a, w.chars[1] - w.chars[0]))
    order = sorted(range(len(rows)), key=lambda k: len(rows[k][0]), reverse=True)
    row_nll = [0.0] * len(rows)
    model.eval()
    starts = range(0, len(order), batch_size)
    progress = Progress(name, len(starts), "batches")
    with torch.inference_mode():
        for start in tqdm(starts, desc=name, unit="batch", disable=None):
            batch = [rows[k] for k in order[start : start + batch_size]]
            width = max(len(r[0]) for r in batch)
            ids = torch.full((len(batch), width), bos, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            for j, (r, first, _) in enumerate(batch):
                ids[j, : len(r)] = torch.tensor(r)
                labels[j, first : len(r)] = torch.tensor(r[first:])
            # Right padding under causal attention: real tokens never attend to the pads.
            logits = model(input_ids=ids.to(model.device), use_cache=False).logits.float()
            per_token = torch.nn.functional.cross_entropy(
                logits[:, :-1].transpose(1, 2),
                labels[:, 1:].to(logits.device),
                ignore_index=-100,
                reduction="none",
            )
            sums = per_token.sum(dim=1).tolist()
            for k, v in zip(order[start : start + batch_size], sums, strict=True):
                row_nll[k] = v
            progress.advance(1)
    chars = sum(len(d) for d in docs)
    nbytes = sum(len(d.encode("utf-8")) for d in docs)
    se = _ratio_stderr(row_nll, [float(r[2]) for r in rows]) / math.log(2)
    return TextLoss(
        name, len(docs), tokens, chars, nbytes, sum(row_nll), len(rows), max_length,
        context_chars, stride_chars, se,
    )  # fmt: skip


def _check_partition(wins: list[Window], n_tokens: int, n_chars: int) -> None:
    """Every token and every character scored exactly once: the windows' scored ranges tile the
    document (a planning bug here would silently bias bits/char)."""
    tok_at, char_at = 0, 0
    for w in wins:
        if w.scored[0] != tok_at or w.chars[0] != char_at or w.scored[1] <= w.scored[0]:
            raise AssertionError(f"text windows do not tile the document at {w}")
        tok_at, char_at = w.scored[1], w.chars[1]
    if tok_at != n_tokens or char_at != n_chars:
        raise AssertionError(
            f"text windows cover {tok_at}/{n_tokens} tokens, {char_at}/{n_chars} chars"
        )


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
        "| corpus | tokens | chars | nats/token | bits/char | ± SE | bits/byte |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.tokens} | {r.chars} | {r.loss_per_token:.4f} | "
            f"{r.bits_per_char:.4f} | {r.bits_per_char_stderr:.4f} | {r.bits_per_byte:.4f} |"
        )
    if results:
        r = results[0]
        lines.append(
            f"\ncontext {r.context_chars} characters, stride {r.stride_chars}, windows of at "
            f"most {r.max_length} tokens"
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
            _check_same_context(base, c0, o, c1)
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


def _check_same_context(base: str | Path, c0: dict, other: str | Path, c1: dict) -> None:
    """bits/char falls with more context: two runs compare only at the same character context
    (results written before `context_chars` existed used token windows, see the module doc)."""
    a = (c0.get("context_chars"), c0.get("stride_chars"))
    b = (c1.get("context_chars"), c1.get("stride_chars"))
    if a != b:
        raise UserError(
            f"{other}: {c1['name']} scored with context/stride {b[0]}/{b[1]} characters, {base} "
            f"with {a[0]}/{a[1]} (None: token windows, an older langgraft); rerun both with the "
            "same --context-chars and --stride-chars"
        )
