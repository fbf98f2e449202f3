"""Turn batches of raw rows into token ids and a trainable mask (one process, or N workers).

Pretrain rows become `BOS + source + target + EOS`: `source + target` is tokenized whole, so the
ids are those of the row as one text, and the loss mask comes from the tokens' character offsets:
a token is trained iff it begins at or after the first character of the target. (Tokenizing the
target on its own gives it sentencepiece's dummy-prefix "▁", which the row does not have;
Colossal tokenizes the prefix and the whole row separately and assumes they line up, which they
need not.) A token that begins in the source and ends in the target is not trained, and the row
is counted (`Split`, `EncodedBatch.straddled`). Loss is on target + EOS. Chat rows are laid out
by `langgraft.templates` (each part tokenized on its own, as `render_prompt` does at inference);
loss is on assistant content + its end-of-turn token. Special tokens are always inserted by id.

Speed: a batch's texts are encoded in one call, never row by row (`langgraft.data.textenc`
picks sentencepiece or the Rust tokenizer and checks they agree). With --workers N, JSON parsing,
validation and encoding run in N processes that import neither transformers nor torch
(`langgraft.data.workers`).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from langgraft.data import rows as rowlib
from langgraft.data.sources import BAD_FILE, BAD_ROW, JSON_ROW, Item
from langgraft.data.textenc import (
    LONG_TEXT_CHARS,
    LightSpec,
    LightTextEncoder,
    Split,
    TextEncoder,
    sentencepiece_model,
)
from langgraft.errors import UserError
from langgraft.fsutil import sha256_file


def tokenizer_file(path: str | Path) -> Path:
    """The file that defines a tokenizer: tokenizer.json of a HF directory, or the bare file."""
    p = Path(path)
    if p.is_dir():
        if not (p / "tokenizer.json").is_file():
            raise UserError(f"{p}: no tokenizer.json in this directory")
        return p / "tokenizer.json"
    if not p.is_file():
        raise UserError(f"{p}: no such tokenizer file or directory")
    return p


def tokenizer_hash(path: str | Path) -> str:
    """sha256 of the tokenizer's defining file: tokenizer.json (HF directory) or the bare
    SentencePiece tokenizer.model. Recorded as `tokenizer.sha256` in every prepared dataset's
    manifest; the trainer compares it with its own tokenizer's hash before training."""
    return sha256_file(tokenizer_file(path))


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of what a (fast) tokenizer encodes: its model (vocabulary with merges or scores,
    unk, byte fallback), normaliser, pre-tokeniser, added tokens and special ids. Unlike
    `tokenizer_hash`, a `tokenizer.model` and the `tokenizer.json` saved from it agree.
    `split_special_tokens` is left out: it is a runtime option (prepare inserts special tokens
    by id; a chat export turns it off for apply_chat_template). Recorded as
    `tokenizer.fingerprint` in manifests."""
    import hashlib
    import json

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    keys = ("id", "content", "special", "single_word", "lstrip", "rstrip", "normalized")
    added = [[t.get(k) for k in keys] for t in spec.get("added_tokens") or []]
    what = {
        "model": spec.get("model"),
        "normalizer": spec.get("normalizer"),
        "pre_tokenizer": spec.get("pre_tokenizer"),
        "added_tokens": sorted(added, key=lambda t: t[0]),
        "bos_eos_unk": [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id],
    }
    canonical = json.dumps(what, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class EncoderSpec:
    """Everything a worker needs to build its Encoder (small and picklable)."""

    tokenizer: str
    kind: str
    text_field: str | None
    allow_missing_category: bool
    labels: tuple[str, ...]
    template: str | None = None
    backend: str = "auto"
    """auto | hf | sentencepiece: who encodes text (the ids are the same; see the module doc)."""
    max_length: int | None = None
    """Chat: a conversation longer than this is split at exchange boundaries (see `_fit_chat`)."""


@dataclass
class EncodedBatch:
    rows: int = 0
    """Rows read in this batch (accepted + rejected)."""
    categories: list[str] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    trained: list[int] = field(default_factory=list)
    """Per accepted row: how many of its tokens are trained on."""
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    mask: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    """1 where the token is trained on (its label is itself), 0 where the label is -100."""
    continued: list[bool] = field(default_factory=list)
    """Per accepted chat piece: True for the second and later pieces of a split conversation
    (they are documents, not rows: a row is counted once)."""
    problems: list[tuple[int, int, str, str, bool]] = field(default_factory=list)
    """(file index, line, reason, message, file_level), in input order."""
    samples: list[tuple[str, list[int]]] = field(default_factory=list)
    """(text, ids) a worker's sentencepiece produced, for the main process to check."""
    long: dict[int, tuple[str, str, tuple[int, int]]] = field(default_factory=dict)
    """Accepted pretrain rows (by index in `categories`) longer than LONG_TEXT_CHARS: (source,
    target, (file index, line)), left for `Encoder.long_document` to stream into the packer;
    their `lengths` and `trained` are 0 and `ids` holds none of their tokens."""
    straddled: list[tuple[int, int, str]] = field(default_factory=list)
    """Accepted pretrain rows with a token that begins in the source and ends in the target (not
    trained): (file index, line, what the token holds)."""


class Encoder:
    """Rows -> (ids, trained mask). Built from the tokenizer in the main process, or from a
    `LightSpec` (sentencepiece + resolved special ids) in a worker process."""

    def __init__(self, spec: EncoderSpec, light: LightSpec | None = None) -> None:
        self.spec = spec
        self.template = None
        if spec.kind == "chat":
            from langgraft.templates import get_template

            self.template = get_template(spec.template or "llama2")
        if light is not None:
            self.tokenizer = None
            self.text: TextEncoder | LightTextEncoder = LightTextEncoder(light)
            self.bos, self.eos = light.bos, light.eos
            self.special_ids = dict(light.special_ids)
            return
        from langgraft.tokenizer.hf import load_tokenizer

        self.tokenizer = load_tokenizer(spec.tokenizer)
        # One thread per process when worker processes share the cores.
        threads = 1 if os.environ.get("TOKENIZERS_PARALLELISM") == "false" else -1
        self.text = TextEncoder(self.tokenizer, spec.tokenizer, spec.backend, threads)
        self.bos, self.eos = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
        self.special_ids = {}
        if self.template is not None:
            from langgraft.templates import OPTIONAL_BOS

            self.template.check(self.tokenizer)
            probe = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
            probe.append({"role": "assistant", "content": "a"})
            for part in self.template.parts(probe, add_generation_prompt=True):
                if part.special is not None and part.special != OPTIONAL_BOS:
                    self.special_ids[part.special] = self.template.special_id(
                        self.tokenizer, part.special
                    )
        elif self.bos is None or self.eos is None:
            raise UserError(f"{spec.tokenizer}: the tokenizer needs BOS and EOS tokens")

    def light_spec(self) -> LightSpec | None:
        """The worker version of this encoder, if sentencepiece encodes (else None)."""
        if not isinstance(self.text, TextEncoder) or self.text.sp is None:
            return None
        model = sentencepiece_model(self.spec.tokenizer)
        hf_json = self.tokenizer.backend_tokenizer.to_str()
        return LightSpec(str(model), self.bos, self.eos, dict(self.special_ids), hf_json)

    def encode(self, items: list[Item]) -> EncodedBatch:
        out = EncodedBatch()
        good: list[tuple[int, int, Any]] = []
        for file_idx, line, kind, payload in items:
            if kind == BAD_FILE:
                reason, msg = payload  # type: ignore[misc]
                out.problems.append((file_idx, line, reason, msg, True))
                continue
            out.rows += 1
            try:
                if kind == BAD_ROW:
                    raise rowlib.RowError(*payload)  # type: ignore[misc]
                good.append((file_idx, line, self._parse(file_idx, kind, payload)))
            except rowlib.RowError as e:
                out.problems.append((file_idx, line, e.reason, e.message, False))
        if self.spec.kind == "chat":
            self._assemble_chat(good, out)
        else:
            self._assemble_pretrain(good, out)
        out.problems.sort(key=lambda p: (p[0], p[1]))
        if isinstance(self.text, LightTextEncoder):
            out.samples, self.text.samples = self.text.samples, []
        return out

    def _parse(self, file_idx: int, kind: int, payload: Any) -> Any:
        if kind == JSON_ROW:
            obj = rowlib.decode_json_line(payload)
            if self.spec.kind == "chat":
                return rowlib.chat_row(obj, self.spec.labels[file_idx])
            return rowlib.pretrain_row(
                obj,
                self.spec.text_field,
                self.spec.allow_missing_category,
                self.spec.labels[file_idx],
            )
        if self.spec.kind == "chat":
            raise rowlib.RowError(
                "wrong_type", "raw text in chat mode: chat rows are jsonl with 'messages'"
            )
        return rowlib.PretrainRow("", payload, self.spec.labels[file_idx])

    def _assemble_pretrain(self, good: list[Any], out: EncodedBatch) -> None:
        # A long row is not encoded here: the main process streams it (`long_document`).
        rows = [r for _, _, r in good]
        long = [len(r.source) + len(r.target) > LONG_TEXT_CHARS for r in rows]
        plain = [i for i, r in enumerate(rows) if not long[i] and not r.source]
        split = [i for i, r in enumerate(rows) if not long[i] and r.source]
        enc: dict[int, Split] = {}
        for i, ids in zip(plain, self.text.encode([rows[i].target for i in plain]), strict=True):
            enc[i] = Split(ids, 0)
        texts = [rows[i].source + rows[i].target for i in split]
        bounds = [len(rows[i].source) for i in split]
        enc.update(zip(split, self.text.encode_split(texts, bounds), strict=True))
        bos, eos, empty = _one(self.bos), _one(self.eos), np.zeros(0, np.int32)
        pieces: list[np.ndarray] = []
        untrained: list[int] = []  # per encoded row: BOS + the tokens that begin in the source
        trained: list[int] = []  # per encoded row: the target's tokens + EOS
        for i, (file_idx, line, row) in enumerate(good):
            if long[i]:
                out.long[len(out.categories)] = (row.source, row.target, (file_idx, line))
                out.trained.append(0)
                out.lengths.append(0)
                out.categories.append(row.category)
                continue
            s = enc[i]
            if len(s.ids) == s.before:
                why = "target is empty after tokenization"
                if s.straddled:
                    why += f" (its text is inside {straddle_text(row, s)}, not trained)"
                out.problems.append((file_idx, line, "empty_target", why, False))
                continue
            if s.straddled:
                out.straddled.append((file_idx, line, straddle_text(row, s)))
            pieces += (bos, s.ids, eos)
            untrained.append(1 + s.before)
            trained.append(len(s.ids) - s.before + 1)
            out.trained.append(trained[-1])
            out.lengths.append(len(s.ids) + 2)
            out.categories.append(row.category)
        out.ids = np.concatenate(pieces) if pieces else empty
        out.mask = _mask(untrained, trained)

    def long_document(self, source: str, target: str) -> tuple[Iterator[Any], Split] | None:
        """The (ids, mask) pieces of a long pretrain row, encoded as they are consumed
        (`TextEncoder.encode_long_split` over `source + target`): BOS untrained, then window by
        window, each token trained iff it begins in the target, then EOS, trained; and the
        `Split` of the window that holds the boundary (its `straddled`). None if the target has
        no token of its own (the row is rejected, as a short one would be). Runs in the main
        process (workers hand long rows back unencoded), so memory holds one window's ids (and
        the source's, which come before the first trained token), not the document's."""
        assert isinstance(self.text, TextEncoder)
        windows = self.text.encode_long_split(source + target, len(source))
        head: list[Split] = []
        for w in windows:
            head.append(w)
            if len(w.ids) > w.before:
                break
        else:
            return None
        at = next((w for w in head if w.straddled), head[-1])

        def pieces() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            yield _one(self.bos), np.zeros(1, np.uint8)
            for w in itertools.chain(head, windows):
                yield w.ids, (np.arange(len(w.ids)) >= w.before).astype(np.uint8)
            yield _one(self.eos), np.ones(1, np.uint8)

        return pieces(), at

    def _assemble_chat(self, good: list[Any], out: EncodedBatch) -> None:
        assert self.template is not None
        layouts = [self.template.parts(r.messages) for _, _, r in good]
        enc = iter(self.text.encode([p.text for ps in layouts for p in ps if p.text is not None]))
        pieces: list[np.ndarray] = []
        flags: list[int] = []
        for (file_idx, line, row), parts in zip(good, layouts, strict=True):
            segs = [
                (next(enc) if p.text is not None else self._special(p.special), p.trainable)
                for p in parts
            ]
            fitted = self._fit_chat(row.messages, segs)
            if not fitted:
                out.problems.append((file_idx, line, "turn_too_long", (
                    f"an exchange (user turn + reply, with the system prompt) is longer than "
                    f"--max-length {self.spec.max_length}; the conversation is left out"
                ), False))  # fmt: skip
                continue
            for k, chat_piece in enumerate(fitted):
                length = trained = 0
                for ids, trainable in chat_piece:
                    pieces.append(ids)
                    flags.append(int(trainable))
                    length += len(ids)
                    trained += len(ids) if trainable else 0
                out.categories.append(row.category)
                out.lengths.append(length)
                out.trained.append(trained)
                out.continued.append(k > 0)
        if pieces:
            out.ids = np.concatenate(pieces)
            out.mask = np.repeat(np.array(flags, np.uint8), [len(x) for x in pieces])

    def _fit_chat(
        self, messages: list[dict[str, str]], segs: list[tuple[np.ndarray, bool]]
    ) -> list[list[tuple[np.ndarray, bool]]]:
        """A conversation as pieces of at most max_length tokens, cut between exchanges (the
        user turns up to and including an assistant reply), every piece starting with the
        template's head (BOS and the system prompt): no reply is ever trained without its
        question. [] if one exchange does not fit with the head (the caller drops and counts).

        Relies on the layouts being additive: `parts(messages[:m])` is a prefix of
        `parts(messages)`, so message m owns parts [bounds[m], bounds[m+1])."""
        limit = self.spec.max_length
        if limit is None or sum(len(ids) for ids, _ in segs) <= limit:
            return [segs]
        assert self.template is not None
        bounds = [len(self.template.parts(messages[:m])) for m in range(len(messages) + 1)]
        assert bounds[-1] == len(segs), "chat template layout is not additive per message"
        first = 1 if messages[0]["role"] == "system" else 0
        head = segs[: bounds[first]]
        size = lambda ss: sum(len(ids) for ids, _ in ss)  # noqa: E731
        pieces: list[list[tuple[np.ndarray, bool]]] = []
        current: list[tuple[np.ndarray, bool]] = []
        start = first
        for m in range(first, len(messages)):
            if messages[m]["role"] != "assistant":
                continue
            exchange = segs[bounds[start] : bounds[m + 1]]
            start = m + 1
            if size(head) + size(exchange) > limit:
                return []
            if current and size(head) + size(current) + size(exchange) > limit:
                pieces.append(head + current)
                current = []
            current += exchange
        pieces.append(head + current)
        return pieces

    def _special(self, name: str | None) -> np.ndarray:
        from langgraft.templates import OPTIONAL_BOS

        if name == OPTIONAL_BOS:
            return np.zeros(0, np.int32) if self.bos is None else _one(self.bos)
        return _one(self.special_ids[name])  # type: ignore[index]


def straddle_text(row: rowlib.PretrainRow, s: Split) -> str:
    """The straddling token(s) of a row, for a message: source part + target part."""
    text, cut = row.source + row.target, len(row.source)
    return f"a token that holds {text[s.span[0] : cut]!r} + {text[cut : s.span[1]]!r}"


def _one(token: int | None) -> np.ndarray:
    return np.array([token], dtype=np.int32)


def _mask(untrained: list[int], trained: list[int]) -> np.ndarray:
    """Per row: `untrained` zeros then `trained` ones, concatenated."""
    counts = np.column_stack([untrained, trained]).ravel() if untrained else np.zeros(0, np.int64)
    return np.repeat(np.tile(np.array([0, 1], np.uint8), len(untrained)), counts)
