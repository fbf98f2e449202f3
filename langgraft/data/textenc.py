"""Text -> token ids for a batch of texts: sentencepiece when it is the same model, else the
Rust `tokenizers` backend of the tokenizer that `load_tokenizer` returns.

Why two backends: on the shared Chinese corpora sentencepiece encodes ~2x faster than the
equivalent `tokenizers` BPE (which has no pre-tokenizer here, so it merges over whole
paragraphs). `langgraft.tokenizer.hf` builds tokenizer.json to agree with sentencepiece id for id;
this module does not take that on trust. The first batch's first 256 texts are encoded both ways
and compared (on any difference it falls back to tokenizer.json for the whole run); afterwards a few
texts of every batch are compared, and a difference is an error rather than silent drift.

Worker processes get a `LightTextEncoder`: sentencepiece only, no transformers import (which
costs ~5 s per process); it returns a few (text, ids) samples per batch that the main process
checks against tokenizer.json.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

    @functools.cached_property
    def sp_rest(self) -> Any:
        """sentencepiece for the windows after the first of a long text, or None (checked on
        first use: most runs have no long text)."""
        return _sp_splits_at_newlines(self._model) if self.sp is not None else None

    @functools.cached_property
    def hf_splits(self) -> bool:
        return _hf_splits_at_newlines(self.hf)

    def encode_long(self, text: str) -> Any:
        """The ids of a long text, window by window (an iterator of int32 arrays whose
        concatenation is `encode([text])[0]`): one tokenizer call never sees more than about
        LONG_TEXT_CHARS characters. A tokenizer this cannot prove that for (see `safe_cuts`)
        encodes the text whole."""
        if self.sp is not None and not self.verified:
            self.encode([text[:MAX_CHECK_CHARS]])  # settles the backend (checks tokenizer.json)
        if self.sp is not None:
            cuts = safe_cuts(text, LONG_TEXT_CHARS, strict=False) if self.sp_rest else []
        else:
            cuts = safe_cuts(text, LONG_TEXT_CHARS, strict=True) if self.hf_splits else []
        bounds = [0, *cuts, len(text)]
        for k in range(len(bounds) - 1):
            piece = text[bounds[k] : bounds[k + 1]]
            if self.sp is None:
                yield np.asarray(self.encode_hf([piece])[0], dtype=np.int32)
            else:
                sp = self.sp if k == 0 else self.sp_rest
                yield sp.encode([piece], num_threads=self.threads, return_type="numpy")[0]

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


class LightTextEncoder:
    """sentencepiece only, single-threaded (one per worker process); keeps samples to check."""

    def __init__(self, spec: LightSpec) -> None:
        self.sp = _load_sp(Path(spec.model))
        self.samples: list[tuple[str, list[int]]] = []

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        if not texts:
            return []
        ids = self.sp.encode(texts, num_threads=1, return_type="numpy")
        self.samples += [(texts[i], ids[i].tolist()) for i in _probe(len(texts))]
        return ids
