"""Stage 6: text generation from any langgraft (or LLaMA-family) model directory.

    langgraft generate --model runs/stories260K --prompt "" --greedy --max-new-tokens 200
    langgraft generate --model runs/stories260K --prompt "Once upon a time" "Lily saw a dog" \\
        --temperature 0.8 --top-p 0.9 --seed 1 --out samples.jsonl
    langgraft generate --model runs/sft --prompts-file questions.jsonl --template llama2 --out a.jsonl

One prompt streams its completion to the terminal as it is generated; several prompts are
generated in batches (left-padded) and written as jsonl, one record per prompt with the settings.
Rows of a vocabulary padded to a multiple (ids >= len(tokenizer)) are never sampled. The chat REPL
(`langgraft.chat`) uses the same loading and sampling code (`langgraft.decoding`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langgraft.config import add_dataclass_args, from_namespace, to_dict
from langgraft.decoding import (
    DECODE_CONTEXT,
    ModelOptions,
    SamplingOptions,
    TextStream,
    check_sampling,
    check_text,
    completion_text,
    default_stop_ids,
    generate_ids,
    generation_config,
    load_model,
    vocab_mask_processor,
)
from langgraft.errors import UserError
from langgraft.fsutil import atomic_output_file, check_output
from langgraft.jsonio import parse_json

# The shared decoding code lives in langgraft.decoding; these names stay importable from here.
__all__ = [
    "DECODE_CONTEXT",
    "Completion",
    "GenerateOptions",
    "ModelOptions",
    "SamplingOptions",
    "TextStream",
    "check_sampling",
    "check_text",
    "completion_text",
    "default_stop_ids",
    "encode_prompt",
    "generate",
    "generate_ids",
    "generation_config",
    "load_model",
    "read_prompts",
    "vocab_mask_processor",
]


@dataclass(kw_only=True)
class GenerateOptions(SamplingOptions, ModelOptions):
    prompt: list[str] = field(default_factory=list)
    """Prompts (each a separate argument; "" = start from BOS alone)."""
    prompts_file: Path | None = None
    """More prompts: a text file (one per line) or .jsonl ({"prompt": ...} or a string per line)."""
    template: str | None = None
    """Wrap each prompt as one user turn of this chat template (llama2, llama3, chatml)."""
    batch_size: int = 8
    """Prompts generated together (left-padded)."""
    out: Path | None = None
    """Write jsonl records here (default: stream one prompt's text, or jsonl to stdout); the file
    appears when generation is complete."""
    overwrite: bool = False
    """Replace an existing --out file."""


@dataclass
class Completion:
    prompt: str
    completion: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (a stop token was generated) or "length"
    token_ids: list[int]


def read_prompts(opts: GenerateOptions) -> list[str]:
    prompts = [check_text(p, f"--prompt {i + 1}") for i, p in enumerate(opts.prompt)]
    path = opts.prompts_file
    if path is not None:
        if not Path(path).is_file():
            raise UserError(f"{path}: no such prompts file")
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            line = e.object[: e.start].count(b"\n") + 1
            raise UserError(
                f"{path}:{line}: not valid UTF-8 (byte {e.object[e.start]:#04x})"
            ) from None
        for n, line in enumerate(lines, 1):
            if str(path).endswith(".jsonl"):
                if not line.strip():
                    continue
                obj = parse_json(line, path, n)
                text = obj.get("prompt") if isinstance(obj, dict) else obj
                if not isinstance(text, str):
                    raise UserError(f'{path}:{n}: expected {{"prompt": "..."}} or a JSON string')
                prompts.append(check_text(text, f"{path}:{n}"))
            elif line.strip():
                prompts.append(line)
    if not prompts:
        raise UserError('no prompts: pass --prompt TEXT ("" for BOS alone) or --prompts-file FILE')
    return prompts


def encode_prompt(tokenizer: Any, text: str, template: Any) -> list[int]:
    if template is not None:
        return template.render_prompt([{"role": "user", "content": text}], tokenizer)
    return tokenizer(text).input_ids  # with BOS, as in pretraining


def generate(opts: GenerateOptions, write: Callable[[str], None]) -> list[Completion]:
    """Generate for every prompt; stream one prompt's text, else write jsonl (to --out or `write`)."""
    from langgraft.templates import get_template

    if opts.batch_size < 1:
        raise UserError(f"--batch-size {opts.batch_size}: must be >= 1")
    check_sampling(opts)
    inputs = [opts.model, opts.prompts_file]
    if opts.out is not None:  # before the model loads: a refused --out costs nothing
        check_output(opts.out, opts.overwrite, inputs, "file")
    prompts = read_prompts(opts)
    template = get_template(opts.template) if opts.template else None
    model, tok = load_model(opts)
    stop_ids = default_stop_ids(model, tok)
    if template is not None:
        template.check(tok)
        stop_ids = [*template.stop_token_ids(tok), *stop_ids]
    encoded = [encode_prompt(tok, p, template) for p in prompts]
    settings = {
        k: v
        for k, v in to_dict(opts).items()
        if k not in ("prompt", "prompts_file", "out", "overwrite")
    }
    with contextlib.ExitStack() as stack:
        sink = None
        if opts.out is not None:
            tmp = stack.enter_context(atomic_output_file(opts.out, opts.overwrite, inputs))
            sink = stack.enter_context(open(tmp, "w", encoding="utf-8"))
        return _generate_all(opts, model, tok, prompts, encoded, stop_ids, settings, sink, write)


def _generate_all(
    opts: GenerateOptions,
    model: Any,
    tok: Any,
    prompts: list[str],
    encoded: list[list[int]],
    stop_ids: list[int],
    settings: dict[str, Any],
    sink: Any,
    write: Callable[[str], None],
) -> list[Completion]:
    from tqdm import tqdm

    stream = len(prompts) == 1
    results: list[Completion] = []
    batches = range(0, len(prompts), opts.batch_size)
    for start in tqdm(batches, desc="generate", unit="batch", disable=stream or None):
        chunk = encoded[start : start + opts.batch_size]
        streamer = TextStream(tok, write, stop_ids) if stream else None
        for i, (new, reason) in enumerate(
            generate_ids(model, tok, chunk, opts, stop_ids, streamer)
        ):
            text = completion_text(tok, chunk[i], new)
            c = Completion(prompts[start + i], text, len(chunk[i]), len(new), reason, new)
            results.append(c)
            record = json.dumps({**vars(c), "settings": settings}, ensure_ascii=False) + "\n"
            if sink is not None:
                sink.write(record)
            elif not stream:
                write(record)
    if stream:
        write("\n")
    return results


def run(args: argparse.Namespace) -> int:
    opts = from_namespace(GenerateOptions, args)

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    generate(opts, write)
    return 0


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="generate text from a model (stream one prompt, or batch many to jsonl)",
        description=(
            "Generate from a model directory. One prompt streams its completion to the terminal; "
            "several are generated in batches and written as jsonl (one record per prompt, with "
            "the settings). Padding rows of the vocabulary are never sampled."
        ),
    )
    add_dataclass_args(p, GenerateOptions)
    p.set_defaults(func=run)
