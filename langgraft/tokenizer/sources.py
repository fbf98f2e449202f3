"""Where new pieces come from, and how corpora are read.

Three sources of candidate pieces, each yielding `Candidate(piece, origin)` in priority order (the
order decides the merge priority of the added pieces):
- `read_piece_file`: Colossal's jsonl (`{"piece": ...}`) or a word list with a frequency column
  (jieba's `word freq tag`), optionally the top N by frequency.
- `pieces_of_model`: the normal pieces of another SentencePiece model, by its score order.
- `learn_pieces`: a SentencePiece BPE model trained on a corpus, in merge order.

`iter_texts` reads the corpora used for learning, checking and reporting: plain text (one sample a
line), jsonl (`text`, or `source`+`target`, or chat `messages`), json arrays of records (every string
value, e.g. chinese-poetry's `paragraphs`), and word-frequency lists.
"""

from __future__ import annotations

import gzip
import logging
import re
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langgraft.errors import UserError
from langgraft.jsonio import parse_json
from langgraft.tokenizer.spmodel import NORMAL, ModelProto, load_proto

log = logging.getLogger(__name__)

_FREQ_LINE = re.compile(r"^(\S+)\s+(\d+)(\s+\S+)?\s*$")
# The SentencePiece trainer skips sentences over max_sentence_length bytes; cut long paragraphs at
# sentence ends so a novel's long lines still count.
_SENTENCE_END = re.compile(r"(?<=[。！？；!?;])")


@dataclass(frozen=True)
class Candidate:
    piece: str
    origin: str  # "file:line" or "model.model#id" or "learned:rank"


def _open_text(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, line without newline); non-UTF-8 bytes are a UserError with the line."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            for n, raw in enumerate(f, 1):
                try:
                    yield n, raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as e:
                    raise UserError(
                        f"{path}:{n}: not valid UTF-8 (byte {raw[e.start]:#04x} at column "
                        f"{e.start + 1}); convert the file to UTF-8"
                    ) from None
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a file") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise UserError(f"{path}: not a valid gzip file ({e or 'truncated'})") from None


def looks_like_freq_list(path: Path) -> bool:
    """A word list with a frequency column: the first non-empty lines all look like `word 123`."""
    seen = 0
    for _, line in _open_text(path):
        if not line.strip():
            continue
        if not _FREQ_LINE.match(line):
            return False
        seen += 1
        if seen >= 50:
            break
    return seen > 0


def _json_line(path: Path, n: int, line: str) -> Any:
    row = parse_json(line, path, n)
    if "\\u" in line:  # only an escape can produce a lone surrogate
        check_unicode(row, f"{path}:{n}")
    return row


def check_unicode(value: Any, where: str) -> None:
    """Refuse strings with a lone UTF-16 surrogate (JSON allows "\\ud800"; no tokenizer does)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as e:
                raise UserError(
                    f"{where}: lone surrogate {v[e.start]!r} is not valid Unicode text"
                ) from None
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def read_piece_file(path: Path, top: int | None = None) -> list[Candidate]:
    """Pieces from Colossal's jsonl or from a word-frequency list (sorted by frequency, top N)."""
    path = Path(path)
    is_jsonl = path.suffix in (".jsonl", ".json") or path.name.endswith(".jsonl.gz")
    out: list[Candidate] = []
    if is_jsonl:
        for n, line in _open_text(path):
            if not line.strip():
                continue
            row = _json_line(path, n, line)
            if not isinstance(row, dict) or not isinstance(row.get("piece"), str):
                raise UserError(f'{path}:{n}: expected an object like {{"piece": "人工智能"}}')
            out.append(Candidate(row["piece"], f"{path.name}:{n}"))
        return out[:top] if top else out
    freq_rows: list[tuple[int, int, str]] = []
    for n, line in _open_text(path):
        if not line.strip():
            continue
        m = _FREQ_LINE.match(line)
        if m:
            freq_rows.append((-int(m.group(2)), n, m.group(1)))
        elif len(line.split()) == 1:
            freq_rows.append((0, n, line.strip()))
        else:
            raise UserError(
                f"{path}:{n}: expected `word [freq [tag]]` or use a .jsonl file of "
                f'{{"piece": ...}} objects; got {line[:60]!r}'
            )
    freq_rows.sort()  # by frequency, then file order
    rows = freq_rows[:top] if top else freq_rows
    return [Candidate(word, f"{path.name}:{n}") for _, n, word in rows]


def pieces_of_model(path: Path) -> list[Candidate]:
    """Normal pieces of another SentencePiece model, best score first (the model's own order)."""
    proto = load_proto(path)
    order = sorted(
        (i for i, p in enumerate(proto.pieces) if p.type == NORMAL),
        key=lambda i: (-proto.pieces[i].score, i),
    )
    return [Candidate(proto.pieces[i].piece, f"{Path(path).name}#{i}") for i in order]


def _row_text(row: Any, path: Path, n: int) -> str:
    if isinstance(row, dict):
        if isinstance(row.get("text"), str):
            return row["text"]
        if "target" in row or "source" in row:
            return str(row.get("source") or "") + str(row.get("target") or "")
        if isinstance(row.get("messages"), list):
            return "\n".join(m.get("content", "") for m in row["messages"] if isinstance(m, dict))
        if isinstance(row.get("passage"), str) or isinstance(row.get("question"), str):
            # exam rows (AGIEval): passage, question and options
            opts = row.get("options") if isinstance(row.get("options"), list) else []
            parts = [row.get("passage") or "", row.get("question") or "", *map(str, opts)]
            return "\n".join(p for p in parts if p)
    raise UserError(
        f"{path}:{n}: jsonl row has no text, source/target, messages or passage/question field"
    )


_CSV_SKIP = {"", "answer", "label", "id"}


def _csv_texts(path: Path) -> Iterator[tuple[str, int]]:
    """One sample per row of a CSV with a header (CMMLU, C-Eval): the text cells joined by
    spaces; index, id and answer columns are left out."""
    import csv

    lines = (line for _, line in _open_text(path))
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        return
    keep = [i for i, h in enumerate(header) if h.strip().lower() not in _CSV_SKIP]
    for row in reader:
        text = " ".join(row[i] for i in keep if i < len(row) and row[i].strip())
        if text:
            yield text, 1


def iter_texts(path: Path) -> Iterator[tuple[str, int]]:
    """Yield (sample text, weight) from one corpus file; weight is a frequency for word lists."""
    path = Path(path)
    name = path.name.removesuffix(".gz")
    if name.endswith(".jsonl"):
        for n, line in _open_text(path):
            if line.strip():
                yield _row_text(_json_line(path, n, line), path, n), 1
    elif name.endswith(".csv"):
        yield from _csv_texts(path)
    elif name.endswith(".json"):
        from langgraft.data.convert import json_documents

        for text in json_documents(path):
            yield text, 1
    elif looks_like_freq_list(path):
        for n, line in _open_text(path):
            m = _FREQ_LINE.match(line)
            if m:
                yield m.group(1), max(int(m.group(2)), 1)
            elif line.strip():
                raise UserError(f"{path}:{n}: expected `word freq [tag]` like the lines above")
    else:
        for _, line in _open_text(path):
            if line.strip():
                yield line, 1


def expand_paths(paths: list[Path]) -> list[Path]:
    """Files as given, directories expanded recursively in sorted order."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.name != "LICENSE"))
        elif p.exists():
            out.append(p)
        else:
            raise UserError(f"{p}: no such file or directory")
    return out


def learn_pieces(
    samples: list[tuple[str, int]],
    vocab_size: int,
    character_coverage: float = 0.9995,
    max_piece_length: int = 16,
) -> list[Candidate]:
    """Train a SentencePiece BPE model on the corpora; return its pieces in merge order.

    Everything is written as one TSV (`sentence<TAB>count`) so that plain text and word-frequency
    lists train together, with duplicate sentences counted once with their total weight.
    """
    import sentencepiece as spm

    counts: dict[str, int] = {}
    for text, weight in samples:
        for para in text.replace("\t", " ").splitlines():
            for sent in _SENTENCE_END.split(para):
                sent = sent.strip()
                if sent:
                    counts[sent[:1000]] = counts.get(sent[:1000], 0) + weight
    if not counts:
        raise UserError("--learn-from: no text found")
    # The trainer refuses a vocabulary smaller than the characters it must cover.
    chars: Counter[str] = Counter()
    for sent, c in counts.items():
        for ch in sent:
            chars[ch] += c
    total, covered, needed = sum(chars.values()), 0, 0
    for _, c in chars.most_common():
        if covered >= character_coverage * total:
            break
        covered += c
        needed += 1
    vocab_size = max(vocab_size, needed + 64)
    with tempfile.TemporaryDirectory(prefix="langgraft-learn-") as tmp:
        tsv = Path(tmp) / "corpus.tsv"
        with open(tsv, "w", encoding="utf-8") as w:
            for sent, c in counts.items():
                w.write(f"{sent}\t{c}\n")
        log.info(
            "training a SentencePiece BPE model (%d pieces) on %d sentences",
            vocab_size,
            len(counts),
        )
        spm.SentencePieceTrainer.train(
            input=str(tsv),
            input_format="tsv",
            model_prefix=str(Path(tmp) / "learned"),
            model_type="bpe",
            vocab_size=vocab_size,
            hard_vocab_limit=False,
            character_coverage=character_coverage,
            max_sentencepiece_length=max_piece_length,
            split_digits=True,
            byte_fallback=False,
            add_dummy_prefix=False,
            num_threads=2,
            seed_sentencepiece_size=1_000_000,
            minloglevel=2,
        )
        proto = ModelProto()
        proto.ParseFromString((Path(tmp) / "learned.model").read_bytes())
    return [
        Candidate(p.piece, f"learned#{i}") for i, p in enumerate(proto.pieces) if p.type == NORMAL
    ]


def read_samples(
    files: list[Path], hold_out: float = 0.0
) -> tuple[list[tuple[str, int]], list[str]]:
    """(sample, weight) pairs to learn from and the held-out texts: the last `hold_out` fraction
    of each file's samples (in file order), so learning never sees them. Word-frequency lists
    are not running text and are never held out."""
    learn: list[tuple[str, int]] = []
    held: list[str] = []
    for f in expand_paths(files):
        rows = list(iter_texts(f))
        frac = 0.0 if rows and looks_like_freq_list(f) else hold_out
        cut = len(rows) - int(len(rows) * frac)
        learn += rows[:cut]
        held += [t for t, _ in rows[cut:]]
    return learn, held
