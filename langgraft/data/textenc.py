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

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from langgraft.errors import UserError

log = logging.getLogger(__name__)

SAMPLES_PER_BATCH = 4
FIRST_CHECK = 256  # texts of the first batch compared in full
# tokenizer.json holds ~100 bytes per character of a text it encodes (one 54 MB document peaked at
# 6.8 GB), so a longer text is compared on its first MAX_CHECK_CHARS characters, both ways.
MAX_CHECK_CHARS = 100_000


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
