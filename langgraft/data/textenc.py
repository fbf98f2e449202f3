"""Text -> token ids for a batch of texts: sentencepiece when it is the same model, else the
Rust `tokenizers` backend of the tokenizer that `load_tokenizer` returns.

Why two backends: on the shared Chinese corpora sentencepiece encodes ~2x faster than the
equivalent `tokenizers` BPE (which has no pre-tokenizer here, so it merges over whole
paragraphs). `langgraft.tokenizer.hf` builds tokenizer.json to agree with sentencepiece id for id;
this module does not take that on trust. The first batch's first 256 texts are encoded both ways
and compared (on any difference it falls back to tokenizer.json for the whole run); afterwards a few
texts of every batch are compared, and a difference is an error rather than silent drift.

A source/target row is encoded whole and split at the boundary by the tokens' character offsets
(`encode_split`), so its ids are the whole row's: encoding the target on its own would give it a
sentencepiece dummy-prefix "▁" that the whole row does not have. The offsets always come from
tokenizer.json, whichever backend encodes plain texts: sentencepiece places a whitespace run that
its normaliser collapses elsewhere than `tokenizers` does, and the mask must not depend on the
backend.

Worker processes get a `LightTextEncoder`: sentencepiece only, no transformers import (which
costs ~5 s per process); it returns a few (text, ids) samples per batch that the main process
checks against tokenizer.json.
"""

from __future__ import annotations

import bisect
import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from langgraft.errors import UserError
from langgraft.tokenizer.bytelevel_source import LLAMA3_PATTERN
from langgraft.tokenizer.spmodel import BPE_MODEL, BYTE

log = logging.getLogger(__name__)

SAMPLES_PER_BATCH = 4
FIRST_CHECK = 256  # texts of the first batch compared in full
# tokenizer.json holds ~100 bytes per character of a text it encodes (one 54 MB document peaked at
# 6.8 GB), so a longer text is compared on its first MAX_CHECK_CHARS characters, both ways.
MAX_CHECK_CHARS = 100_000
# A text longer than this is encoded in windows of about this many characters, cut where the
# tokenizer provably cannot segment across (see `safe_cuts`), so its ids equal the whole text's.
LONG_TEXT_CHARS = 1 << 18


def sentencepiece_model(tokenizer: str | Path) -> Path | None:
    p = Path(tokenizer)
    model = p / "tokenizer.model" if p.is_dir() else p
    return model if model.is_file() and model.suffix == ".model" else None


def _load_sp(model: Path) -> Any:
    import sentencepiece as spm

    try:
        return spm.SentencePieceProcessor(model_file=str(model))
    except (OSError, RuntimeError):
        return None


def _sp_splits_at_newlines(model: Path) -> Any:
    r"""A sentencepiece processor for the second and later windows of a long text (no dummy
    prefix: the whole text gets "▁" only at its start), or None if cutting after a newline could
    change the ids.

    Why a cut after "\n" (next character not " ") is exact for a BPE model with no normaliser
    rules: the normalised text is the input with " " as "▁", so the cut is at the same place in
    it; BPE starts from single characters and merges two adjacent symbols only into a piece of
    the vocabulary, and no piece contains "\n" (checked), so no merge crosses the cut, and
    merges on one side never change the other's (each side merges in the same order alone).
    remove_extra_whitespaces acts on runs of " " only, and none touches the cut. Unigram is left
    out: its Viterbi sums float scores along the whole text, so a tie could break differently.
    """
    from langgraft.tokenizer.hf import load_proto

    try:
        proto = load_proto(model)
    except (OSError, RuntimeError, UserError):
        return None
    norm, trainer = proto.normalizer_spec, proto.trainer_spec
    if (
        trainer.model_type != BPE_MODEL
        or norm.precompiled_charsmap
        or trainer.treat_whitespace_as_suffix
        or any("\n" in p.piece and p.piece != "\n" for p in proto.pieces if p.type != BYTE)
    ):
        return None
    import sentencepiece as spm

    proto.normalizer_spec.add_dummy_prefix = False
    return spm.SentencePieceProcessor(model_proto=proto.SerializeToString())


def _hf_splits_at_newlines(hf: Any) -> bool:
    r"""Whether cutting after "\n" (no "\r" or "\n" in the whitespace that follows) leaves
    tokenizer.json's ids unchanged: no normaliser, the Llama-3 regex then byte-level without a
    prefix space, BPE, and no added token that contains "\n" or strips the whitespace to its left.

    Why: BPE merges within a pre-token, so it is enough that the regex has a match boundary at
    the cut and matches both sides alone as it matches them in the whole text. The match that
    holds the "\n" is one of ` ?[^\s\p{L}\p{N}]+[\r\n]*` (it ends after the newlines),
    `\s*[\r\n]+` (it ends after the last newline of its whitespace run: the cut, as no newline
    follows in that run) or a later `\s` alternative, which that one comes before; no other
    alternative can hold "\n" (`[^\r\n\p{L}\p{N}]?` excludes it). So it ends at the cut, and it
    is the same match whether or not the text goes on; matching after the cut looks only to the
    right. GPT-2's pattern is not accepted: its `\s+(?!\S)` splits "\n\n" differently at the end
    of a text."""
    import json

    spec = json.loads(hf.to_str())
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else []
    ok_split = len(steps) == 2 and steps[0] == {
        "type": "Split",
        "pattern": {"Regex": LLAMA3_PATTERN},
        "behavior": "Isolated",
        "invert": False,
    }
    ok_bytes = len(steps) == 2 and steps[1].get("type") == "ByteLevel"
    ok_bytes = ok_bytes and not steps[1].get("add_prefix_space") and not steps[1].get("use_regex")
    added = spec.get("added_tokens") or []
    return (
        spec.get("normalizer") is None
        and ok_split
        and ok_bytes
        and (spec.get("model") or {}).get("type") == "BPE"
        and not any("\n" in t["content"] or t.get("lstrip") for t in added)
    )


def safe_cuts(text: str, window: int, strict: bool) -> list[int]:
    r"""Cut points of `text` for windows of about `window` characters: each just after a "\n"
    whose next character is not " " (strict, for tokenizer.json: the whitespace run that follows
    holds no "\r" or "\n"). The last cut at or before each window's end, else the first after
    it; a text with no such newline is not cut."""
    cuts: list[int] = []
    start, n = 0, len(text)

    def ok(p: int) -> bool:
        if p >= n:
            return False
        if not strict:
            return text[p] != " "
        while p < n and text[p].isspace():  # str.isspace covers the regex's \s
            if text[p] in "\r\n":
                return False
            p += 1
        return True

    while n - start > window:
        p = text.rfind("\n", start, start + window) + 1
        while p > start and not ok(p):
            p = text.rfind("\n", start, p - 1) + 1
        if p <= start:  # none in this window: the first one after it
            p = text.find("\n", start + window) + 1
            while p and not ok(p):
                p = text.find("\n", p) + 1
            if not p:
                break
        cuts.append(p)
        start = p
    return cuts


class Split(NamedTuple):
    """A text encoded whole, cut where a label boundary falls (`encode_split`).

    The boundary rule: a token is on the target side iff it begins at or after the boundary
    (tokenizer.json's character offsets). A token that begins before it and ends after it holds
    text of both sides; it stays on the source side (never trained: no source text is ever
    trained on) and is counted in `straddled`, so the target text inside it is reported
    (prepare warns and counts the rows), never dropped silently."""

    ids: np.ndarray
    before: int
    """Tokens [0, before) begin before the boundary."""
    straddled: int = 0
    """How many of those end after it."""
    span: tuple[int, int] = (0, 0)
    """Characters [start, end) of the straddling tokens (when straddled > 0)."""


def split_hf(encoding: Any, boundary: int, skip: int = 0) -> Split:
    """`Split` of a `tokenizers` Encoding's tokens [skip:] at a character index. Offsets never
    decrease, so a binary search finds the cut and only the tokens just before it are read."""
    offsets = encoding.offsets
    before = bisect.bisect_left(offsets, boundary, lo=skip, key=lambda o: o[0])
    first = before
    while first > skip and offsets[first - 1][1] > boundary:
        first -= 1
    ids = np.asarray(encoding.ids[skip:], dtype=np.int32)
    if first == before:
        return Split(ids, before - skip)
    return Split(ids, before - skip, before - first, (offsets[first][0], offsets[before - 1][1]))


def split_batch(hf: Any, texts: list[str], boundaries: list[int]) -> list[Split]:
    """Each text encoded whole by a `tokenizers.Tokenizer` and cut at its boundary."""
    encs = hf.encode_batch(texts, add_special_tokens=False) if texts else []
    return [split_hf(e, p) for e, p in zip(encs, boundaries, strict=True)]


def _probe(n: int) -> list[int]:
    step = max(1, n // SAMPLES_PER_BATCH)
    return list(range(0, n, step))[:SAMPLES_PER_BATCH]


class TextEncoder:
    """Encodes texts (no BOS/EOS) in the main process; see the module docstring."""

    def __init__(self, tokenizer: Any, path: str | Path, backend: str = "auto", threads: int = -1):
        self.path = str(path)
        self.hf = tokenizer.backend_tokenizer
        self.backend = backend
        self.threads = threads
        self.sp = None
        self.verified = False
        model = sentencepiece_model(path) if backend != "hf" else None
        self._model = model
        if model is not None:
            sp = _load_sp(model)
            # tokenizer.json with other pieces than tokenizer.model is not the same model
            if sp is not None and sp.get_piece_size() == self.hf.get_vocab_size(False):
                self.sp = sp
        if self.sp is None and backend == "sentencepiece":
            raise UserError(
                f"{path}: --tokenizer-backend sentencepiece needs a tokenizer.model with the same "
                "pieces as the tokenizer; use --tokenizer-backend auto"
            )

    @property
    def name(self) -> str:
        return "sentencepiece" if self.sp is not None else "tokenizer.json"

    def encode_hf(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch_fast(texts, add_special_tokens=False)]

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        """int32 ids of each text (numpy arrays: no Python int per token)."""
        if not texts:
            return []
        if self.sp is None:
            return [np.asarray(x, dtype=np.int32) for x in self.encode_hf(texts)]
        # return_type="numpy" skips building Python lists; the GIL is released while encoding.
        ids = self.sp.encode(texts, num_threads=self.threads, return_type="numpy")
        probe = _probe(len(texts)) if self.verified else range(min(len(texts), FIRST_CHECK))
        checked = [texts[i][:MAX_CHECK_CHARS] for i in probe]
        want = [
            ids[i].tolist() if len(texts[i]) <= MAX_CHECK_CHARS else self.sp.encode(checked[k])
            for k, i in enumerate(probe)
        ]
        if self.encode_hf(checked) == want:
            self.verified = True
            return ids
        if self.verified or self.backend == "sentencepiece":
            self.disagree()
        log.warning(
            "%s: sentencepiece and tokenizer.json disagree; using tokenizer.json", self.path
        )
        self.sp = None
        return [np.asarray(x, dtype=np.int32) for x in self.encode_hf(texts)]

    def encode_split(self, texts: list[str], boundaries: list[int]) -> list[Split]:
        """Each text encoded whole by tokenizer.json (the ids of `encode`) and cut at its
        boundary (a character index); see `Split`."""
        return split_batch(self.hf, texts, boundaries)

    @functools.cached_property
    def sp_rest(self) -> Any:
        """sentencepiece for the windows after the first of a long text, or None (checked on
        first use: most runs have no long text)."""
        return _sp_splits_at_newlines(self._model) if self.sp is not None else None

    @functools.cached_property
    def hf_splits(self) -> bool:
        return _hf_splits_at_newlines(self.hf)

    def encode_long(self, text: str) -> Iterator[np.ndarray]:
        """The ids of a long text, window by window (an iterator of int32 arrays whose
        concatenation is `encode([text])[0]`): one tokenizer call never sees more than about
        LONG_TEXT_CHARS characters. A tokenizer this cannot prove that for (see `safe_cuts`)
        encodes the text whole."""
        return (w.ids for w in self.encode_long_split(text, 0))

    def encode_long_split(self, text: str, boundary: int) -> Iterator[Split]:
        """`encode_long` with a label boundary (a character index): per window, a `Split`
        whose `before` counts its tokens that begin before the boundary. Only the window that
        holds the boundary is encoded with offsets."""
        if self.sp is not None and not self.verified:
            self.encode([text[:MAX_CHECK_CHARS]])  # settles the backend (checks tokenizer.json)
        if self.sp is not None:
            cuts = safe_cuts(text, LONG_TEXT_CHARS, strict=False) if self.sp_rest else []
        else:
            cuts = safe_cuts(text, LONG_TEXT_CHARS, strict=True) if self.hf_splits else []
        bounds = [0, *cuts, len(text)]
        done = 0  # tokens of the windows before this one
        for k in range(len(bounds) - 1):
            start, stop = bounds[k], bounds[k + 1]
            piece = text[start:stop]
            if start < boundary < stop:
                yield self._split_window(text, start, stop, boundary, k, done)
                continue
            if self.sp is None:
                ids = np.asarray(self.encode_hf([piece])[0], dtype=np.int32)
            else:
                sp = self.sp if k == 0 else self.sp_rest
                ids = sp.encode([piece], num_threads=self.threads, return_type="numpy")[0]
            done += len(ids)
            yield Split(ids, len(ids) if stop <= boundary else 0)

    def _split_window(
        self, text: str, start: int, stop: int, boundary: int, k: int, done: int
    ) -> Split:
        """The window [start, stop) that holds the boundary, cut by tokenizer.json's offsets.
        tokenizer.json encodes a later window alone only when it cuts windows (Llama-3's
        pre-tokenizer); for sentencepiece's later windows it encodes the text up to the window's
        end (a source longer than LONG_TEXT_CHARS costs memory in proportion to its length) and
        the window is its tokens after the `done` of the windows before."""
        if k == 0 or self.sp is None:
            s = split_hf(
                self.hf.encode(text[start:stop], add_special_tokens=False), boundary - start
            )
            return s._replace(span=(s.span[0] + start, s.span[1] + start))
        return split_hf(self.hf.encode(text[:stop], add_special_tokens=False), boundary, done)

    def check_samples(self, samples: list[tuple[str, list[int]]]) -> None:
        """Compare a worker's (text, ids) samples with tokenizer.json."""
        if samples and self.encode_hf([t for t, _ in samples]) != [ids for _, ids in samples]:
            self.disagree()

    def disagree(self) -> None:
        raise UserError(
            f"{self.path}: sentencepiece and tokenizer.json encode some text differently; "
            "rerun with --tokenizer-backend hf"
        )


@dataclass(frozen=True)
class LightSpec:
    """What a worker needs to encode with sentencepiece alone (small and picklable)."""

    model: str
    bos: int | None
    eos: int | None
    special_ids: dict[str, int]
    hf_json: str = ""
    """tokenizer.json as a string: source/target rows are cut by its offsets (`encode_split`)."""


class LightTextEncoder:
    """sentencepiece only, single-threaded (one per worker process); keeps samples to check."""

    def __init__(self, spec: LightSpec) -> None:
        self.sp = _load_sp(Path(spec.model))
        self.samples: list[tuple[str, list[int]]] = []
        self.hf_json, self.hf = spec.hf_json, None

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        if not texts:
            return []
        ids = self.sp.encode(texts, num_threads=1, return_type="numpy")
        self.samples += [(texts[i], ids[i].tolist()) for i in _probe(len(texts))]
        return ids

    def encode_split(self, texts: list[str], boundaries: list[int]) -> list[Split]:
        """As `TextEncoder.encode_split` (tokenizer.json, from the spec, loaded on first use)."""
        if self.hf is None:
            from tokenizers import Tokenizer

            self.hf = Tokenizer.from_str(self.hf_json)
            # not part of tokenizer.json: "<s>" in a text stays text, as in the main process
            self.hf.encode_special_tokens = True
        return split_batch(self.hf, texts, boundaries)
