"""Import a GGUF checkpoint (llama.cpp's format, often 4-bit) as a plain Hugging Face directory.

    langgraft model import-gguf \\
        --gguf ../shared/data/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --out runs/smollm2-135m [--dtype bfloat16]

transformers reads the file (`from_pretrained(dir, gguf_file=NAME)`): it dequantizes every
tensor, undoes llama.cpp's q/k row permutation and rebuilds the fast tokenizer from the vocabulary
and merges stored as metadata. We ask for a dense model (so no quantization config is left to
save), write safetensors, and fix what its tokenizer rebuild leaves out (see `PRE_TOKENIZERS`).
Only the families langgraft trains (`langgraft.model.families`) are accepted, checked from the
header before anything is dequantized.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
import unittest.mock
from pathlib import Path
from typing import Any

from langgraft.errors import UserError

log = logging.getLogger(__name__)

# llama.cpp's `tokenizer.ggml.pre` names whose split transformers' GGUF tokenizer does not
# rebuild (it falls back to GPT-2's regex). llama-vocab.cpp splits these on "\p{N}" (every digit
# alone) before GPT-2's regex, as their original tokenizer.json does with Digits(individual):
# without it a run of spaces before a digit is cut differently ("a  2": a|Ġ|Ġ|2, not a|ĠĠ|2).
DIGIT_SPLIT_PRE = frozenset({"smollm", "starcoder"})
# Loader keywords that transformers copies into tokenizer_config.json; they describe this import,
# not the tokenizer.
_LOAD_KWARGS = ("is_local", "local_files_only", "vocab_file", "gguf_file")


def read_header(path: Path) -> dict[str, Any]:
    """The file's scalar metadata (architecture, tokenizer kind, sizes); one-line errors."""
    from gguf import GGUFReader

    if not path.is_file():
        what = "is a directory, not a GGUF file" if path.is_dir() else "no such GGUF file"
        raise UserError(f"{path}: {what}")
    try:
        reader = GGUFReader(path)
        fields = {
            k: f.contents()
            for k, f in reader.fields.items()
            if not k.startswith("tokenizer.ggml.") or k in ("tokenizer.ggml.model", "tokenizer.ggml.pre")
        }  # fmt: skip
        n_tensors = len(reader.tensors)
    except (ValueError, OSError, IndexError, KeyError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a readable GGUF file ({e})") from None
    if "general.architecture" not in fields:
        raise UserError(f"{path}: GGUF without general.architecture; not a model file")
    if "tokenizer.ggml.model" not in fields:
        raise UserError(f"{path}: the GGUF holds no tokenizer (no tokenizer.ggml.model)")
    fields["n_tensors"] = n_tensors
    return fields


def model_type_of(header: dict[str, Any]) -> str:
    """The HF model_type transformers will build. llama.cpp stores Mistral models as `llama`;
    transformers tells them apart by name, and so do we."""
    arch = str(header["general.architecture"])
    if arch == "llama" and "mistral" in str(header.get("general.name", "")).lower():
        return "mistral"
    return arch


def import_gguf(
    gguf: Path, out_dir: Path, dtype: str = "float32", progress: bool | None = None
) -> dict[str, Any]:
    """Write the dense HF model and its tokenizer into `out_dir` (an existing scratch directory).
    Returns the metadata recorded in langgraft.json. `progress`: transformers' de-quantizing
    bar (default: only on a terminal, like every other langgraft bar)."""
    from langgraft.model.families import require_supported

    gguf = Path(gguf)
    header = read_header(gguf)
    model_type = model_type_of(header)
    require_supported(model_type, str(gguf))

    import torch
    from tokenizers import pre_tokenizers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    from transformers.utils import logging as hf_logging

    from langgraft.fsutil import safetensors_write_errors, sha256_file, state_bytes
    from langgraft.model.meta import write_meta

    where = dict(gguf_file=gguf.name, local_files_only=True)
    show = sys.stderr.isatty() if progress is None else progress
    with contextlib.ExitStack() as quiet:
        if not show:  # transformers' shard-writing bar and the GGUF reader's plain tqdm
            import transformers.modeling_gguf_pytorch_utils as gguf_utils

            was = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            quiet.callback(hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)
            quiet.enter_context(unittest.mock.patch.object(
                gguf_utils, "tqdm", functools.partial(gguf_utils.tqdm, disable=True)))  # fmt: skip
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, **where, dtype=getattr(torch, dtype),
            quantization_config=GgufConfig(dequantize=True),
        )  # fmt: skip
        if model.config.model_type != model_type:  # transformers disagrees with our reading
            require_supported(model.config.model_type, str(gguf))
        # general.name lands in config.json under this key; it is not a path or a hub id.
        model.config.__dict__.pop("_model_name_or_path", None)
        with safetensors_write_errors(Path(out_dir) / "model.safetensors", state_bytes(model)):
            model.save_pretrained(out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    del model

    tok = AutoTokenizer.from_pretrained(gguf.parent, **where)
    pre = header.get("tokenizer.ggml.pre")
    if pre in DIGIT_SPLIT_PRE:
        tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    ctx = header.get(f"{header['general.architecture']}.context_length")
    if ctx:
        tok.model_max_length = int(ctx)
    for k in _LOAD_KWARGS:
        tok.init_kwargs.pop(k, None)
    tok.save_pretrained(out_dir)

    meta = {
        "source": {
            "format": "gguf",
            "gguf": str(gguf),
            "gguf_sha256": sha256_file(gguf),
            "name": header.get("general.name"),
            "architecture": header["general.architecture"],
            "file_type": header.get("general.file_type"),
            "tokenizer": header["tokenizer.ggml.model"],
            "tokenizer_pre": pre,
        },
        "model_type": model_type,
        "dtype": dtype,
        "n_params": n_params,
        "digit_split_added": pre in DIGIT_SPLIT_PRE,
    }
    write_meta(out_dir, {"import_gguf": meta})
    log.info("imported %s: %s, %s parameters, %s", gguf.name, model_type, f"{n_params:,}", dtype)
    return json.loads(json.dumps(meta))
