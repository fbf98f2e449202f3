"""Loading a model and decoding from it, for `langgraft generate`, `langgraft chat`, the report's
generations and self-replay: model options and loading (with the model-directory checks),
sampling options and their checks, stop tokens, padding rows never sampled, and the text of a
completion streamed or decoded whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from langgraft.errors import UserError

log = logging.getLogger(__name__)

# Decoding context kept before new tokens, so that a piece's leading space (SentencePiece "▁")
# survives: decoding a completion on its own would strip it like a text start.
DECODE_CONTEXT = 16


@dataclass(kw_only=True)
class ModelOptions:
    model: Path
    """Model directory (HF format: config.json, weights, tokenizer files)."""
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Compute dtype; auto = bf16 on a GPU that supports it, fp32 on CPU."""
    device: str = "auto"
    """cpu, cuda, cuda:1, ...; auto = cuda if available."""
    trust_remote_code: bool = False
    """Allow a model directory to run its own Python code (off: only built-in architectures)."""


@dataclass(kw_only=True)
class SamplingOptions:
    max_new_tokens: int = 256
    """Most tokens generated per prompt (or chat reply)."""
    greedy: bool = False
    """Always take the most likely token (ignores temperature, top-k, top-p, seed)."""
    temperature: float = 0.7
    """Softmax temperature when sampling."""
    top_k: int = 0
    """Sample among the k most likely tokens (0 = no limit)."""
    top_p: float = 0.9
    """Nucleus sampling: the smallest set of tokens with this much probability (1 = off)."""
    repetition_penalty: float = 1.0
    """> 1 discourages tokens already in the context (CTRL-style; 1 = off)."""
    seed: int = 0
    """Random seed for sampling."""


def load_model(opts: ModelOptions) -> tuple[Any, Any]:
    """Model (eval mode) and tokenizer from a directory; clear errors for missing pieces."""
    import torch
    from transformers import AutoModelForCausalLM

    from langgraft.model.checks import check_model_dir
    from langgraft.tokenizer.hf import load_tokenizer

    path = Path(opts.model)
    check_model_dir(path, opts.trust_remote_code)
    if opts.device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        device = opts.device
        try:
            kind = torch.device(device).type
        except RuntimeError:
            raise UserError(f"--device {device}: not a device (cpu, cuda, cuda:1, ...)") from None
        if kind == "cuda" and not torch.cuda.is_available():
            raise UserError(f"--device {device}: torch sees no CUDA GPU here; use --device cpu")
    if opts.dtype == "auto":
        gpu_bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()
        dtype = torch.bfloat16 if gpu_bf16 else torch.float32
    else:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[opts.dtype]
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, trust_remote_code=opts.trust_remote_code, local_files_only=True
    )
    model.to(device).eval()
    if len(tokenizer) > model.config.vocab_size:
        raise UserError(
            f"{path}: tokenizer has {len(tokenizer)} tokens but the model only "
            f"{model.config.vocab_size} rows; the tokenizer does not belong to this model"
        )
    log.info("loaded %s (%s, %s)", path, str(dtype).removeprefix("torch."), device)
    return model, tokenizer


def vocab_mask_processor(n_tokens: int) -> Any:
    """A logits processor that makes ids >= n_tokens (padding rows) impossible to sample."""
    import torch
    from transformers import LogitsProcessor

    class MaskPaddingRows(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            if scores.shape[-1] > n_tokens:
                scores[..., n_tokens:] = float("-inf")
            return scores

    return MaskPaddingRows()


def generation_config(model: Any, tokenizer: Any, s: SamplingOptions, stop_ids: list[int]) -> Any:
    """The model's own generation config (suppress_tokens included) with our settings on top."""
    import copy

    gc = copy.deepcopy(model.generation_config)
    gc.max_new_tokens = s.max_new_tokens
    gc.max_length = None
    gc.do_sample = not s.greedy
    gc.temperature = None if s.greedy else s.temperature
    gc.top_k = None if s.greedy or s.top_k <= 0 else s.top_k
    gc.top_p = None if s.greedy else s.top_p
    gc.repetition_penalty = s.repetition_penalty
    gc.eos_token_id = stop_ids or None
    pad = tokenizer.pad_token_id
    gc.pad_token_id = pad if pad is not None else (stop_ids[0] if stop_ids else 0)
    return gc


def default_stop_ids(model: Any, tokenizer: Any) -> list[int]:
    """Stop on the model's configured EOS id(s) (llama2.c imports add BOS) and the tokenizer's."""
    eos = model.generation_config.eos_token_id
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def completion_text(tokenizer: Any, prompt_ids: list[int], new_ids: list[int]) -> str:
    """Text of new_ids as it continues the prompt (leading space kept)."""
    ctx = prompt_ids[-DECODE_CONTEXT:]
    head = tokenizer.decode(ctx, skip_special_tokens=True)
    full = tokenizer.decode(ctx + new_ids, skip_special_tokens=True)
    if full.startswith(head):
        return full[len(head) :]
    return tokenizer.decode(new_ids, skip_special_tokens=True)


class TextStream:
    """A transformers streamer that writes the completion as it grows (batch of one), holding
    back an incomplete UTF-8 character (a byte-fallback sequence still being generated).

    `lstrip`: drop the completion's leading space, for replies that start a fresh text segment
    (a chat reply after its header is tokenized on its own, with SentencePiece's dummy prefix).
    """

    def __init__(
        self,
        tokenizer: Any,
        write: Callable[[str], None],
        stop_ids: list[int],
        lstrip: bool = False,
    ) -> None:
        self.tokenizer, self.write, self.stop, self.lstrip = tokenizer, write, set(stop_ids), lstrip
        self.prompt: list[int] | None = None
        self.new: list[int] = []
        self.text = ""  # written so far

    def _current(self) -> str:
        text = completion_text(self.tokenizer, self.prompt or [], self.new)
        return text.removeprefix(" ") if self.lstrip else text

    def put(self, value: Any) -> None:
        ids = value.reshape(-1).tolist()
        if self.prompt is None:
            self.prompt = ids
            return
        self.new.extend(i for i in ids if i not in self.stop)
        text = self._current()
        if not text.endswith("\ufffd"):
            self.write(text[len(self.text) :])
            self.text = text

    def end(self) -> None:
        text = self._current()
        self.write(text[len(self.text) :])
        self.text = text


def generate_ids(
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    s: SamplingOptions,
    stop_ids: list[int],
    streamer: Any = None,
) -> list[tuple[list[int], str]]:
    """Generate for prompts of token ids, together (left-padded). Returns, per prompt, the new ids
    without the final stop token and the finish reason."""
    import torch
    from transformers import LogitsProcessorList

    if any(not p for p in prompts):
        raise UserError("an empty prompt has no tokens (the tokenizer adds no BOS); give some text")
    width = max(map(len, prompts))
    gc = generation_config(model, tokenizer, s, stop_ids)
    pad = gc.pad_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=model.device)
    mask = torch.tensor(
        [[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=model.device
    )
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and width + s.max_new_tokens > limit:
        log.warning(
            "prompt + max_new_tokens (%d) exceed the model's context (%d)",
            width + s.max_new_tokens,
            limit,
        )
    torch.manual_seed(s.seed)
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            generation_config=gc,
            logits_processor=LogitsProcessorList([vocab_mask_processor(len(tokenizer))]),
            streamer=streamer,
        )
    results = []
    stops = set(stop_ids)
    for row in out[:, width:].tolist():
        end = next((i for i, t in enumerate(row) if t in stops), None)
        results.append((row, "length") if end is None else (row[:end], "stop"))
    return results


def check_sampling(s: SamplingOptions) -> None:
    """Refuse settings transformers would reject mid-run (or silently reinterpret)."""
    if s.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens {s.max_new_tokens}: must be >= 1")
    if s.greedy:
        return
    if not s.temperature > 0:  # also NaN
        raise UserError(
            f"--temperature {s.temperature}: must be > 0 when sampling; for the most likely "
            "token every time use --greedy"
        )
    if not 0 < s.top_p <= 1:
        raise UserError(f"--top-p {s.top_p}: must be in (0, 1]")
    if s.top_k < 0:
        raise UserError(f"--top-k {s.top_k}: must be >= 0 (0 = no limit)")
    if not s.repetition_penalty > 0:
        raise UserError(f"--repetition-penalty {s.repetition_penalty}: must be > 0")


def check_text(text: str, where: str) -> str:
    """Refuse a string that is not Unicode text: a lone UTF-16 surrogate (from a JSON escape such
    as "\\ud800" or a terminal's undecodable bytes) cannot be tokenized."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = text[e.start]
        hint = "undecodable input byte" if 0xDC80 <= ord(bad) <= 0xDCFF else "lone surrogate"
        raise UserError(
            f"{where}: not valid Unicode text ({hint} {bad!r} at character {e.start + 1}); "
            "give UTF-8 text"
        ) from None
    return text
