"""Resize a model's embeddings and lm_head for an expanded tokenizer, initialising the new rows.

    langgraft model expand --model runs/stories260K --tokenizer runs/tok-zh --out runs/stories-zh
    langgraft model expand --model llama-2-7b-hf --tokenizer tok-zh --out llama-2-7b-zh \\
        --init subtoken-mean --pad-to-multiple-of 64 --dtype bf16

Tensors are streamed one at a time from the source safetensors files to the output files (same
sharding, same names), so a 7B model is rewritten while holding only its embedding matrices in
memory; everything is checked before anything is written, and the output appears atomically.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from langgraft.config import to_dict
from langgraft.errors import UserError
from langgraft.model.init import InitMethod, expanded_rows, subtoken_ids
from langgraft.model.safetensors_io import TensorInfo

log = logging.getLogger(__name__)

DTYPE_CODES = {"fp32": "F32", "bf16": "BF16", "fp16": "F16"}
CONFIG_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
VOCAB_TENSORS = ("model.embed_tokens.weight", "lm_head.weight")
TOKENIZER_FILES = (
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


@dataclass
class ExpandConfig:
    model: Path
    """Source HF model directory (safetensors weights); its tokenizer.model is the source tokenizer."""
    tokenizer: Path
    """Expanded tokenizer: a tokenizer.model file or a directory holding one (from `tokenizer expand`)."""
    out: Path
    """Output model directory (written atomically)."""
    init: InitMethod = "subtoken-mean"
    """How new rows start: subtoken-mean (mean of the rows of the piece's source sub-tokens,
    without the dummy-prefix '▁'), mean (of all old rows), mean-cov (sampled from the old rows'
    mean and 1e-9 x covariance, as transformers does), zeros."""
    pad_to_multiple_of: int = 1
    """Round the vocabulary up to a multiple of N (e.g. 64 for tensor cores); the padding rows are
    zero and masked at generation (generation_config suppress_tokens)."""
    dtype: Literal["fp32", "bf16", "fp16"] | None = None
    """Dtype of the saved floating-point weights (default: keep the source's)."""
    seed: int = 0
    """Random seed for --init mean-cov."""
    overwrite: bool = False
    """Replace an existing output directory."""


@dataclass
class ExpandPlan:
    """Everything checked and resolved before the first byte is written."""

    cfg: ExpandConfig
    config: dict[str, Any]
    weight_files: list[str]
    index: dict[str, Any] | None
    src_proto: Any
    tgt_proto: Any
    n_source: int  # source tokenizer pieces (= old rows kept)
    n_target: int
    old_vocab: int  # rows in the source matrices
    new_vocab: int
    vocab_tensors: dict[str, TensorInfo] = field(default_factory=dict)
    tokenizer_json: bool = False  # src/tgt_proto are {id: token} of tokenizer.json files

    @property
    def padding_rows(self) -> tuple[int, int]:
        return self.n_target, self.new_vocab


def _weight_files(model_dir: Path) -> tuple[list[str], dict[str, Any] | None]:
    index_path = model_dir / "model.safetensors.index.json"
    if index_path.is_file():
        from langgraft.jsonio import read_json_object

        index = read_json_object(index_path, "index")
        if not isinstance(index.get("weight_map"), dict):
            raise UserError(f"{index_path}: no weight_map; not a sharded-checkpoint index")
        files = sorted(set(map(str, index["weight_map"].values())))
        missing = [f for f in files if not (model_dir / f).is_file()]
        if missing:
            raise UserError(f"{index_path}: lists {missing[0]}, which is missing from {model_dir}")
        return files, index
    if (model_dir / "model.safetensors").is_file():
        return ["model.safetensors"], None
    if any(model_dir.glob("*.bin")) or any(model_dir.glob("*.pt*")):
        raise UserError(
            f"{model_dir}: has only PyTorch pickle weights; langgraft reads safetensors. Convert "
            "first: load with from_pretrained and save_pretrained(safe_serialization=True)"
        )
    raise UserError(f"{model_dir}: no model.safetensors or model.safetensors.index.json")


def plan_expansion(cfg: ExpandConfig) -> ExpandPlan:
    """Validate the inputs (files, tokenizer superset, tokenizer/model agreement)."""
    from langgraft.model.checks import check_model_dir, check_tokenizer_json
    from langgraft.model.meta import read_meta
    from langgraft.model.safetensors_io import read_header
    from langgraft.tokenizer.spmodel import load_proto

    model_dir = Path(cfg.model)
    if not model_dir.is_dir():
        raise UserError(f"{model_dir}: no such model directory")
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise UserError(f"{model_dir}: no config.json; pass a Hugging Face model directory")
    if not 1 <= cfg.pad_to_multiple_of <= 1 << 16:
        raise UserError(
            f"--pad-to-multiple-of must be between 1 and 65536, got {cfg.pad_to_multiple_of}"
        )
    files, index = _weight_files(model_dir)
    config = check_model_dir(model_dir, remote_code_flag=False)
    if not (model_dir / "tokenizer.model").is_file() and (model_dir / "tokenizer.json").is_file():
        check_tokenizer_json(model_dir / "tokenizer.json")
        return _plan_tokenizer_json(cfg, config, files, index, model_dir)
    if not (model_dir / "tokenizer.model").is_file():
        raise UserError(
            f"{model_dir}: no tokenizer.model; the source tokenizer must be the SentencePiece model "
            "the model was trained with (copy it into the model directory)"
        )
    src = load_proto(model_dir / "tokenizer.model")
    tgt = load_proto(cfg.tokenizer)
    n_src, n_tgt = len(src.pieces), len(tgt.pieces)
    old_vocab = int(config.get("vocab_size", 0))

    vocab_tensors: dict[str, TensorInfo] = {}
    for name in files:
        for info in read_header(model_dir / name)[0]:
            if info.name in VOCAB_TENSORS:
                vocab_tensors[info.name] = info
    if "model.embed_tokens.weight" not in vocab_tensors:
        raise UserError(
            f"{model_dir}: no model.embed_tokens.weight; a LLaMA-family model is expected"
        )
    for info in vocab_tensors.values():
        if info.shape[0] != old_vocab:
            raise UserError(
                f"{config_path}: vocab_size {old_vocab} but {info.name} has {info.shape[0]} rows"
            )
    padding = read_meta(model_dir).get("padding_rows")
    if n_src != old_vocab and padding != [n_src, old_vocab]:
        raise UserError(
            f"{model_dir}: tokenizer/model mismatch: tokenizer.model has {n_src} pieces but the "
            f"model has {old_vocab} embedding rows; put the model's own tokenizer in the directory"
        )
    if n_tgt < n_src:
        raise UserError(
            f"{cfg.tokenizer}: has {n_tgt} pieces, fewer than the source's {n_src}; the expanded "
            "tokenizer must keep every source piece at its id"
        )
    for i, (a, b) in enumerate(zip(src.pieces, tgt.pieces, strict=False)):
        if a.piece != b.piece or a.type != b.type:
            raise UserError(
                f"{cfg.tokenizer}: id {i} is {b.piece!r} (type {b.type}) but the source tokenizer "
                f"has {a.piece!r} (type {a.type}) there; the target must extend the source "
                "tokenizer (same pieces at the same ids, new pieces appended)"
            )
    if Path(cfg.tokenizer).is_dir() and (Path(cfg.tokenizer) / "tokenizer.json").is_file():
        check_tokenizer_json(Path(cfg.tokenizer) / "tokenizer.json", n_tgt)  # it is copied as is
    m = cfg.pad_to_multiple_of
    new_vocab = -(-n_tgt // m) * m
    return ExpandPlan(
        cfg, config, files, index, src, tgt, n_src, n_tgt, old_vocab, new_vocab, vocab_tensors
    )


def _plan_tokenizer_json(
    cfg: ExpandConfig, config: dict[str, Any], files: list[str], index: Any, model_dir: Path
) -> ExpandPlan:
    """A model whose tokenizer is only a tokenizer.json (byte-level BPE such as Llama-3): the
    expanded tokenizer must be a directory whose tokenizer.json keeps every source id."""
    from langgraft.model.safetensors_io import read_header
    from langgraft.tokenizer.bytelevel import check_extends

    tgt_json = Path(cfg.tokenizer) / "tokenizer.json"
    if not tgt_json.is_file():
        raise UserError(
            f"{cfg.tokenizer}: the model's tokenizer is a tokenizer.json; pass the expanded "
            "tokenizer's directory (from `tokenizer expand`), which holds one too"
        )
    from langgraft.model.checks import check_tokenizer_json

    check_tokenizer_json(tgt_json)  # it is copied as is
    src, tgt = check_extends(model_dir / "tokenizer.json", tgt_json)
    n_src, n_tgt = max(src) + 1, max(tgt) + 1
    old_vocab = int(config.get("vocab_size", 0))
    vocab_tensors = {
        info.name: info
        for name in files
        for info in read_header(model_dir / name)[0]
        if info.name in VOCAB_TENSORS
    }
    if "model.embed_tokens.weight" not in vocab_tensors:
        raise UserError(
            f"{model_dir}: no model.embed_tokens.weight; a LLaMA-family model is expected"
        )
    if n_src > old_vocab or any(i.shape[0] != old_vocab for i in vocab_tensors.values()):
        raise UserError(
            f"{model_dir}: tokenizer/model mismatch: tokenizer.json has {n_src} ids but the model "
            f"has {old_vocab} embedding rows"
        )
    # Rows past the source tokenizer's ids (if any) are padding; the new tokens start after them
    # only when the tokenizer says so, so require the tokenizer to cover every row.
    if n_src != old_vocab:
        raise UserError(
            f"{model_dir}: the model has {old_vocab} rows but its tokenizer.json {n_src} ids; "
            "expanding would put new tokens on padding rows"
        )
    m = cfg.pad_to_multiple_of
    new_vocab = -(-n_tgt // m) * m
    return ExpandPlan(
        cfg, config, files, index, src, tgt, n_src, n_tgt, old_vocab, new_vocab, vocab_tensors,
        tokenizer_json=True,
    )  # fmt: skip


def _out_code(info: TensorInfo, cfg: ExpandConfig) -> str:
    if cfg.dtype and info.dtype in CONFIG_DTYPES:  # only floating tensors change dtype
        return DTYPE_CODES[cfg.dtype]
    return info.dtype


def _write_weights(plan: ExpandPlan, out: Path, sub_ids: list[list[int]] | None) -> int:
    from tqdm import tqdm

    from langgraft.model.safetensors_io import (
        StreamingWriter,
        iter_tensors,
        read_header,
        torch_dtype,
    )

    model_dir, cfg = Path(plan.cfg.model), plan.cfg
    total = sum((model_dir / f).stat().st_size for f in plan.weight_files)
    written = 0
    with tqdm(total=total, unit="B", unit_scale=True, desc="expand", disable=None) as bar:
        for fname in plan.weight_files:
            infos, metadata, _ = read_header(model_dir / fname)
            specs = []
            for info in infos:
                shape = info.shape
                if info.name in VOCAB_TENSORS:
                    shape = (plan.new_vocab, *shape[1:])
                specs.append(TensorInfo(info.name, _out_code(info, cfg), shape))
            metadata = {**metadata, "format": metadata.get("format", "pt")}
            with StreamingWriter(out / fname, specs, metadata) as writer:
                for info, tensor in iter_tensors(model_dir / fname):
                    dtype = torch_dtype(_out_code(info, cfg))
                    if info.name in VOCAB_TENSORS:
                        writer.write_rows(info.name, expanded_rows(tensor, plan, sub_ids, dtype))
                    else:
                        writer.write(info.name, tensor.to(dtype))
                    bar.update(info.nbytes)
                    del tensor
            written += writer.total_bytes
    return written


def expand_model(cfg: ExpandConfig) -> dict[str, Any]:
    """Check, then write the expanded model directory. Returns the summary kept in langgraft.json."""
    from langgraft.fsutil import atomic_output_dir, sha256_file
    from langgraft.model.meta import read_meta, write_meta
    from langgraft.tokenizer.hf import write_hf_tokenizer
    from langgraft.tokenizer.spmodel import BYTE, resolve_model_path

    plan = plan_expansion(cfg)
    model_dir = Path(cfg.model)
    new_ids = range(plan.n_source, plan.n_target)
    sub_ids = None
    if cfg.init == "subtoken-mean" and plan.tokenizer_json:
        from langgraft.tokenizer.bytelevel import subtoken_ids_bytelevel

        sub_ids = subtoken_ids_bytelevel(model_dir / "tokenizer.json", plan.tgt_proto, new_ids)
    elif cfg.init == "subtoken-mean":
        sub_ids = subtoken_ids(plan.src_proto, plan.tgt_proto, new_ids)
    src_tok = model_dir / ("tokenizer.json" if plan.tokenizer_json else "tokenizer.model")
    tgt_tok = (
        Path(cfg.tokenizer) / "tokenizer.json"
        if plan.tokenizer_json
        else resolve_model_path(cfg.tokenizer)
    )
    tied = "lm_head.weight" not in plan.vocab_tensors
    log.info(
        "expanding %s: %d -> %d pieces (%d new), %d rows (%d padding), %s embeddings, init %s",
        model_dir, plan.n_source, plan.n_target, len(new_ids), plan.new_vocab,
        plan.new_vocab - plan.n_target, "tied" if tied else "untied", cfg.init,
    )  # fmt: skip
    summary: dict[str, Any] = {
        "config": to_dict(cfg),
        "source_tokenizer_sha256": sha256_file(src_tok),
        "target_tokenizer_sha256": sha256_file(tgt_tok),
        "n_source_pieces": plan.n_source,
        "n_target_pieces": plan.n_target,
        "n_added": len(new_ids),
        "old_vocab_size": plan.old_vocab,
        "vocab_size": plan.new_vocab,
        "tied_embeddings": tied,
    }
    if sub_ids is not None:
        byte_ids = (
            set()
            if plan.tokenizer_json
            else {i for i, p in enumerate(plan.src_proto.pieces) if p.type == BYTE}
        )
        summary["n_init_from_global_mean"] = sum(not ids for ids in sub_ids)
        summary["n_init_with_byte_subtokens"] = sum(
            any(i in byte_ids for i in ids) for ids in sub_ids
        )
        summary["mean_subtokens_per_piece"] = round(
            sum(map(len, sub_ids)) / max(len(sub_ids), 1), 3
        )

    with atomic_output_dir(cfg.out, cfg.overwrite, inputs=[cfg.model, cfg.tokenizer]) as tmp:
        total = _write_weights(plan, tmp, sub_ids)
        if plan.index is not None:
            index = {
                **plan.index,
                "metadata": {**plan.index.get("metadata", {}), "total_size": total},
            }
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        config = dict(plan.config, vocab_size=plan.new_vocab)
        if cfg.dtype:
            config["dtype"] = CONFIG_DTYPES[DTYPE_CODES[cfg.dtype]]
            if "torch_dtype" in config:  # written by transformers 4.x
                config["torch_dtype"] = config["dtype"]
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        _write_generation_config(model_dir, tmp, config, plan)
        _write_tokenizer(cfg.tokenizer, plan, tmp, write_hf_tokenizer)
        meta = read_meta(model_dir)
        meta.pop("padding_rows", None)
        updates: dict[str, Any] = {"model_expand": summary}
        if plan.new_vocab > plan.n_target:
            updates["padding_rows"] = list(plan.padding_rows)
        write_meta(tmp, updates, base=meta)
    log.info("wrote %s (%.1f MB of weights)", cfg.out, total / 1e6)
    return summary


def _write_generation_config(
    src: Path, out: Path, config: dict[str, Any], plan: ExpandPlan
) -> None:
    """Copy the generation config, masking padding rows through `suppress_tokens`, which
    transformers' own `generate` applies, so plain HF users never sample a padding row either."""
    path = src / "generation_config.json"
    gen = json.loads(path.read_text()) if path.is_file() else {}
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if key not in gen and config.get(key) is not None:
            gen[key] = config[key]
    old_pad = set(range(plan.n_source, plan.old_vocab))
    suppress = {int(i) for i in gen.get("suppress_tokens") or [] if int(i) not in old_pad}
    suppress |= set(range(*plan.padding_rows))
    if suppress:
        gen["suppress_tokens"] = sorted(suppress)
    else:
        gen.pop("suppress_tokens", None)
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")


def _write_tokenizer(src: Path, plan: ExpandPlan, out: Path, write_hf_tokenizer: Any) -> None:
    """Copy a HF tokenizer directory (or build the HF files from a bare tokenizer.model) with
    the model's own length limit: `tokenizer expand` knows no model, and a limit above the
    model's positions makes transformers warn on every long text (issue 22)."""
    from langgraft.tokenizer.hf import model_max_length_of

    max_len = model_max_length_of(plan.cfg.model)
    src = Path(src)
    if not (src.is_dir() and (src / "tokenizer.json").is_file()):
        write_hf_tokenizer(plan.tgt_proto, out, model_max_length=max_len)
        return
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
    tok_cfg = out / "tokenizer_config.json"
    if max_len is not None and tok_cfg.is_file():
        data = json.loads(tok_cfg.read_text("utf-8"))
        if isinstance(data, dict) and data.get("model_max_length") != max_len:
            data["model_max_length"] = max_len
            tok_cfg.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", "utf-8")
