"""Checks on a model directory before anything loads it, so that a broken or mismatched input is
one clear error naming the file instead of a traceback, or worse, a model that runs with random
layers.

`check_model_dir` reads config.json strictly, refuses custom code unless trusted, finds the
weights, reads their headers (never unpickling anything but tensors) and compares every tensor
name and shape with the model that config.json describes (built on the meta device, so a 7B
check allocates nothing). transformers itself would initialise missing layers randomly and only
log a warning.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from langgraft.errors import UserError
from langgraft.jsonio import read_json_object

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# Buffers that older checkpoints saved and transformers now recomputes.
_IGNORED = re.compile(r"(^|\.)rotary_emb\.inv_freq$|\.masked_bias$|\.attn\.bias$")
_LAYER = re.compile(r"\blayers\.(\d+)\.")


def read_model_config(
    model_dir: str | Path, trust_remote_code: bool = False, remote_code_flag: bool = True
) -> dict[str, Any]:
    """config.json as a dict; refuses custom code (auto_map) unless trusted. `remote_code_flag`:
    whether the calling command has --trust-remote-code (the message says how to allow it)."""
    path = Path(model_dir)
    if not path.is_dir():
        raise UserError(f"{path}: no such model directory")
    if not (path / "config.json").is_file():
        raise UserError(f"{path}: not a model directory (no config.json)")
    config = read_json_object(path / "config.json", "config")
    if config.get("auto_map") and not trust_remote_code:
        names = ", ".join(sorted(map(str, config["auto_map"])))[:120]
        allow = (
            "unless you pass --trust-remote-code, which executes that directory's code with "
            "your permissions (only for a model you trust)"
            if remote_code_flag
            else "here (this command has no --trust-remote-code)"
        )
        raise UserError(
            f"{path}/config.json: the model asks to run its own Python code (auto_map: {names}); "
            f"langgraft loads only built-in architectures {allow}"
        )
    return config


def weight_files(model_dir: Path) -> list[Path]:
    """The weight files transformers would load, in its order of preference."""
    for name in WEIGHT_FILES:
        p = model_dir / name
        if not p.is_file():
            continue
        if name.endswith(".index.json"):
            index = read_json_object(p, "index")
            wmap = index.get("weight_map")
            if not isinstance(wmap, dict) or not wmap:
                raise UserError(f"{p}: no weight_map; not a sharded-checkpoint index")
            shards = sorted(set(map(str, wmap.values())))
            for s in shards:
                if not (model_dir / s).is_file():
                    raise UserError(f"{p}: names shard {s}, which is missing")
            return [model_dir / s for s in shards]
        return [p]
    raise UserError(f"{model_dir}: no weights file (expected one of {', '.join(WEIGHT_FILES)})")


def weight_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, from safetensors headers or a weights-only, meta-device torch.load."""
    from langgraft.fsutil import load_tensors
    from langgraft.model.safetensors_io import read_header

    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        if f.name.endswith(".safetensors"):
            infos, _, _ = read_header(f)
            shapes.update((t.name, t.shape) for t in infos)
            continue
        try:
            state = load_tensors(f, map_location="meta", mmap=True)
        except UserError:
            raise
        except Exception as e:  # torch raises RuntimeError for a truncated or non-zip file
            raise UserError(f"{f}: not a readable PyTorch weights file ({e})") from None
        if not isinstance(state, dict):
            raise UserError(f"{f}: expected a dict of tensors, got {type(state).__name__}")
        shapes.update((k, tuple(v.shape)) for k, v in state.items() if hasattr(v, "shape"))
    return shapes


def expected_shapes(model_dir: Path, trust_remote_code: bool) -> tuple[dict, set[str], str]:
    """(name -> shape that config.json implies, names that may be absent (tied), base prefix)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(
            str(model_dir), local_files_only=True, trust_remote_code=trust_remote_code
        )
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except (ValueError, KeyError, TypeError, AttributeError, ZeroDivisionError) as e:
        raise UserError(
            f"{model_dir}/config.json: cannot build the model it describes ({e})"
        ) from None
    state = model.state_dict()
    unique = {n for n, _ in model.named_parameters()}
    every = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    return shapes, every - unique, model.base_model_prefix


def _layers(names: set[str]) -> int:
    return 1 + max((int(m.group(1)) for n in names if (m := _LAYER.search(n))), default=-1)


def check_model_dir(
    model_dir: str | Path, trust_remote_code: bool = False, remote_code_flag: bool = True
) -> dict[str, Any]:
    """Raise a UserError unless `model_dir` holds a config of a supported family
    (model/families.py) and weights that agree; return the config dict."""
    from langgraft.model.families import family

    path = Path(model_dir)
    config = read_model_config(path, trust_remote_code, remote_code_flag)
    family(config.get("model_type"), str(path / "config.json"))  # exact, or refused here
    if (path / "generation_config.json").is_file():  # transformers ignores a broken one silently
        read_json_object(path / "generation_config.json")
    found = weight_shapes(weight_files(path))
    want, tied, prefix = expected_shapes(path, trust_remote_code)
    if found and not set(found) & set(want):  # a base-model checkpoint without its prefix
        found = {f"{prefix}.{k}": v for k, v in found.items()}
    missing = sorted(set(want) - set(found) - tied)
    extra = sorted(k for k in set(found) - set(want) if not _IGNORED.search(k))
    cfg_file = path / "config.json"
    if missing or extra:
        n_cfg, n_w = _layers(set(want)), _layers(set(found))
        layers = (
            f"config.json says {n_cfg} layers, the weights hold {n_w}; " if n_cfg != n_w else ""
        )
        which = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        raise UserError(
            f"{cfg_file}: does not match the weights ({layers}{len(missing)} tensors missing, "
            f"{len(extra)} unexpected, e.g. {which}); refusing to run with random or dropped layers"
        )
    for name, shape in want.items():
        if name in found and found[name] != shape:
            raise UserError(
                f"{cfg_file}: does not match the weights: {name} has shape {list(found[name])} "
                f"but config.json implies {list(shape)}"
            )
    return config


def tokenizer_load_error(directory: Path, error: BaseException) -> UserError:
    """A clear error for a tokenizer directory transformers/tokenizers could not load."""
    for name in ("tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"):
        if (directory / name).is_file():
            try:
                read_json_object(directory / name)
            except UserError as e:
                return UserError(f"corrupt tokenizer: {e}")
    tj = directory / "tokenizer.json"
    if tj.is_file():
        text = str(error).strip().splitlines()[-1][:200] if str(error).strip() else ""
        if type(error) is Exception:  # tokenizers' own parse errors are bare Exceptions
            return UserError(f"{tj}: not a valid tokenizer.json ({text})")
    return UserError(f"{directory}: cannot load the tokenizer ({type(error).__name__}: {error})")


def check_tokenizer_json(path: Path, n_pieces: int | None = None) -> None:
    """A tokenizer.json that `tokenizers` loads (and, if given, with n_pieces tokens)."""
    from tokenizers import Tokenizer

    read_json_object(path)
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises bare Exception
        raise UserError(f"{path}: not a valid tokenizer.json ({e})") from None
    size = tok.get_vocab_size(with_added_tokens=True)
    if n_pieces is not None and size != n_pieces:
        raise UserError(
            f"{path}: has {size} tokens but tokenizer.model beside it has {n_pieces}; the two "
            "files disagree (rebuild tokenizer.json from tokenizer.model)"
        )
