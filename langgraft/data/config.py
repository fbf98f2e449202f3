"""Options of `langgraft prepare pretrain|chat` (the field docstrings are the `--help` text)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from langgraft.errors import UserError

# Fields that change how a run goes but never what it writes; they stay out of the manifest so
# that, e.g., `--workers 1` and `--workers 4` give byte-identical manifests.
RUN_ONLY_FIELDS = ("out", "overwrite", "workers", "progress", "jsonl", "tokenizer_backend")


@dataclass
class PrepareConfig:
    input: list[str]
    """Input files or directories (searched recursively, in sorted order, for *.jsonl,
    *.jsonl.gz, *.txt and *.txt.gz). Prefix NAME= to set the category of raw-text rows and of
    chat rows without a `category` from this input (default: the file or directory name without
    extensions)."""
    tokenizer: Path
    """A SentencePiece tokenizer.model, or a Hugging Face tokenizer/model directory with
    tokenizer.json."""
    out: Path
    """Output directory (Arrow dataset per bucket, manifest.json). It must not exist unless
    --overwrite; it is written atomically."""
    max_length: int = 4096
    """Length of a packed sequence in tokens. Longer documents are split into chunks; a longer
    chat conversation is split between exchanges, each piece starting with the system prompt
    (an exchange that cannot fit is left out and counted as turn_too_long)."""
    num_bins: int = 1
    """Split every category into this many bins after a seeded shuffle; bucket k holds bin k of
    every category. The bins are random splits, so the buckets spread every category evenly
    (Colossal-LLaMA-2's bucket-based training); their order is no curriculum."""
    seed: int = 42
    """Seed of the shuffle into bins and buckets."""
    text_field: str | None = None
    """Raw-text mode for jsonl: read documents from this field (e.g. text) instead of
    source/target; the whole text is trained on."""
    txt_document: Literal["block", "file"] = "block"
    """How .txt files split into documents: one per blank-line-separated block, or one per file."""
    allow_missing_category: bool = False
    """source/target rows without a `category` get category "unknown" instead of being an
    error (raw text and chat rows without one take the input's name; see --input)."""
    on_error: Literal["fail", "skip"] = "fail"
    """Bad input rows (malformed JSON, wrong types, missing fields, invalid UTF-8) and empty
    files: fail (print file:line and exit 2, writing nothing) or skip (count each reason in the
    manifest)."""
    workers: int = 1
    """Tokenizer processes. 1 tokenizes in the main process (the Rust tokenizer still uses every
    core for a batch); N > 1 also parses JSON in N worker processes."""
    tokenizer_backend: Literal["auto", "hf", "sentencepiece"] = "auto"
    """Who encodes text: sentencepiece when the tokenizer has a tokenizer.model with the same
    pieces (faster; checked against tokenizer.json as it runs), else tokenizer.json (hf). The
    ids are the same either way."""
    jsonl: bool = False
    """Also write a jsonl mirror of every bucket (jsonl/bucket_XX.jsonl)."""
    overwrite: bool = False
    """Replace an existing output directory."""
    progress: bool = True
    """Show a progress bar (rows/s, tokens/s)."""
    pack_open_sequences: int = 128
    """Partly filled sequences kept open for best-fit packing; more packs tighter, each costs
    about 5 x max-length bytes of memory."""

    kind: ClassVar[str] = "pretrain"

    def validate(self) -> None:
        if self.max_length < 8:
            raise UserError(f"--max-length {self.max_length}: must be at least 8 tokens")
        if self.num_bins < 1:
            raise UserError(f"--num-bins {self.num_bins}: must be at least 1")
        if self.seed < 0:
            raise UserError(f"--seed {self.seed}: must be >= 0")
        if self.workers < 1:
            raise UserError(f"--workers {self.workers}: must be at least 1")
        if self.pack_open_sequences < 1:
            raise UserError(f"--pack-open-sequences {self.pack_open_sequences}: must be >= 1")
        if self.text_field is not None and not self.text_field:
            raise UserError("--text-field: must be a non-empty field name")

    def settings(self) -> dict[str, Any]:
        """The options that determine the output (recorded in, and hashed with, the manifest)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for k in RUN_ONLY_FIELDS:
            d.pop(k, None)
        d["tokenizer"] = str(d["tokenizer"])
        return d


@dataclass
class ChatPrepareConfig(PrepareConfig):
    kind: ClassVar[str] = "chat"

    template: Literal["llama2", "llama3", "chatml"] = "llama2"
    """Chat template (saved with the dataset so that training, chat and generation agree):
    llama2 is Colossal-LLaMA-2's `Human: <s>...</s>Assistant: <s>...</s>`."""

    def validate(self) -> None:
        super().validate()
        if self.text_field is not None:
            raise UserError("--text-field is for `prepare pretrain`; chat rows need `messages`")
        if self.allow_missing_category:
            raise UserError(
                "--allow-missing-category is for `prepare pretrain`: a chat row without a "
                "category already takes the input's name (NAME=PATH, else the file name)"
            )
