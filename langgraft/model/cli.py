"""`langgraft model import-llama2c|import-gguf|expand`: see `langgraft.model.llama2c`, `.gguf`
and `.expand`."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from langgraft.config import config_command, from_namespace
from langgraft.model.expand import ExpandConfig


@dataclass
class ImportLlama2cConfig:
    checkpoint: Path
    """llama2.c checkpoint in the legacy v0 format (e.g. stories260K.bin)."""
    tokenizer: Path
    """The SentencePiece tokenizer.model the checkpoint was trained with (e.g. tok512.model)."""
    out: Path
    """Output Hugging Face model directory (written atomically)."""
    overwrite: bool = False
    """Replace an existing output directory."""


def run_import(args: argparse.Namespace) -> int:
    from langgraft.fsutil import atomic_output_dir
    from langgraft.model.llama2c import import_llama2c

    cfg = from_namespace(ImportLlama2cConfig, args)
    with atomic_output_dir(cfg.out, cfg.overwrite, inputs=[cfg.checkpoint, cfg.tokenizer]) as tmp:
        meta = import_llama2c(cfg.checkpoint, cfg.tokenizer, tmp)
    h = meta["header"]
    print(
        f"{cfg.checkpoint} -> {cfg.out}: LlamaForCausalLM dim {h['dim']}, {h['n_layers']} layers, "
        f"vocab {h['vocab_size']}, {meta['n_params']:,} parameters"
    )
    return 0


@dataclass
class ImportGgufConfig:
    gguf: Path
    """GGUF checkpoint of a LLaMA-family model (llama, mistral, qwen2, qwen3), any llama.cpp
    quantization transformers can dequantize (e.g. SmolLM2-135M-Instruct.Q4_1.gguf)."""
    out: Path
    """Output Hugging Face model directory (written atomically)."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Dtype of the saved (dequantized) weights."""
    overwrite: bool = False
    """Replace an existing output directory."""


def run_import_gguf(args: argparse.Namespace) -> int:
    from langgraft.fsutil import atomic_output_dir
    from langgraft.model.gguf import import_gguf

    cfg = from_namespace(ImportGgufConfig, args)
    with atomic_output_dir(cfg.out, cfg.overwrite, inputs=[cfg.gguf]) as tmp:
        meta = import_gguf(cfg.gguf, tmp, cfg.dtype)
    src = meta["source"]
    print(
        f"{cfg.gguf} -> {cfg.out}: {meta['model_type']} ({src['name']}), "
        f"{meta['n_params']:,} parameters, {cfg.dtype}"
    )
    return 0


def run_expand(args: argparse.Namespace) -> int:
    from langgraft.model.expand import expand_model

    summary = expand_model(from_namespace(ExpandConfig, args))
    print("\n".join(expand_summary_lines(summary, args.out)))
    return 0


def expand_summary_lines(summary: dict, out: Path) -> list[str]:
    """A few lines for people; the full record is langgraft.json's "model_expand" entry."""
    padding = summary["vocab_size"] - summary["n_target_pieces"]
    lines = [
        f"{summary['n_source_pieces']:,} -> {summary['n_target_pieces']:,} pieces "
        f"(+{summary['n_added']:,}); vocab_size {summary['old_vocab_size']:,} -> "
        f"{summary['vocab_size']:,}" + (f" ({padding:,} padding rows)" if padding else "")
        + f"; {'tied' if summary['tied_embeddings'] else 'untied'} embeddings",
    ]  # fmt: skip
    init = summary["config"]["init"]
    if "mean_subtokens_per_piece" in summary:
        lines.append(
            f"  new rows: {init}, {summary['mean_subtokens_per_piece']:.1f} sub-tokens per piece"
            f" on average, {summary['n_init_with_byte_subtokens']:,} with byte-fallback "
            f"sub-tokens, {summary['n_init_from_global_mean']:,} from the mean of all rows"
        )
    else:
        lines.append(f"  new rows: {init}")
    lines.append(f'  full record: {out}/langgraft.json ("model_expand")')
    return lines


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="import a llama2.c or GGUF checkpoint; expand a model for a new tokenizer",
        description="Model import and embedding initialisation (stage 2).",
    )
    msub = p.add_subparsers(dest="model_command", required=True, metavar="SUBCOMMAND")
    config_command(
        msub, "import-llama2c", ImportLlama2cConfig, run_import,
        help="convert a llama2.c .bin checkpoint + tokenizer to a HF LlamaForCausalLM directory",
        description=(
            "Convert a llama2.c legacy v0 checkpoint and its SentencePiece tokenizer into a "
            "Hugging Face LlamaForCausalLM directory: model.safetensors (fp32), config.json, "
            "generation_config.json (stops on EOS or BOS, as llama2.c's run.c), tokenizer files, "
            "langgraft.json."
        ),
    )  # fmt: skip
    config_command(
        msub, "import-gguf", ImportGgufConfig, run_import_gguf,
        help="convert a GGUF checkpoint (llama.cpp, quantized) to a HF safetensors directory",
        description=(
            "Dequantize a llama.cpp GGUF checkpoint of a LLaMA-family model (llama, mistral, "
            "qwen2, qwen3) into a Hugging Face directory: model.safetensors, config.json (no "
            "quantization left), generation_config.json, the fast tokenizer rebuilt from the "
            "file's vocabulary and merges, langgraft.json. Other architectures are refused "
            "before anything is dequantized."
        ),
    )  # fmt: skip
    config_command(
        msub, "expand", ExpandConfig, run_expand,
        help="resize embeddings/lm_head for an expanded tokenizer and initialise new rows",
        description=(
            "Resize embed_tokens and lm_head (tied or untied, as the source) to the expanded "
            "tokenizer, initialise the new rows, copy the tokenizer in. Old rows are kept bit for "
            "bit, so the model's logits over the old vocabulary are unchanged. Streams one tensor "
            "at a time; checks everything before writing; the output appears atomically."
        ),
    )  # fmt: skip
