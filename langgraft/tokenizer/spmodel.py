"""Reading, checking and writing SentencePiece model protos.

A LLaMA-style tokenizer is a SentencePiece BPE model with byte fallback. Everything in
`langgraft.tokenizer` edits the `ModelProto` directly (as Chinese-LLaMA and Colossal do) and then
derives the Hugging Face files from it, so the slow (sentencepiece) and fast (tokenizers) views are
always built from one source of truth.
"""

from __future__ import annotations

from pathlib import Path

# Colossal forced the pure-python protobuf backend for these edits; protobuf>=4's upb backend works.
from sentencepiece import sentencepiece_model_pb2 as sp_pb2

from langgraft.errors import UserError

ModelProto = sp_pb2.ModelProto
Piece = sp_pb2.ModelProto.SentencePiece

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
BPE_MODEL = 2
WS = "\u2581"  # "▁", SentencePiece's visible whitespace


def resolve_model_path(src: str | Path) -> Path:
    """Accept a `tokenizer.model` file or a HF tokenizer/model directory that contains one."""
    p = Path(src)
    if p.is_dir():
        cand = p / "tokenizer.model"
        if not cand.is_file():
            raise UserError(
                f"{p}: directory has no tokenizer.model (langgraft expands SentencePiece tokenizers; "
                "pass the directory of a LLaMA-style tokenizer or the .model file itself)"
            )
        return cand
    if not p.exists():
        raise UserError(f"{p}: no such file or directory")
    return p


def load_proto(src: str | Path) -> ModelProto:
    """Parse a SentencePiece model; a corrupt or foreign file is a UserError naming the file."""
    path = resolve_model_path(src)
    data = path.read_bytes()
    proto = ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as e:  # protobuf raises DecodeError (and others on garbage)
        raise UserError(f"{path}: not a SentencePiece model ({type(e).__name__}: {e})") from None
    if len(proto.pieces) == 0:
        raise UserError(f"{path}: not a SentencePiece model (no pieces)")
    return proto


def check_llama_style(proto: ModelProto, where: str) -> None:
    """The expansion logic assumes BPE with byte fallback and the identity normalizer."""
    ts = proto.trainer_spec
    if ts.model_type != BPE_MODEL:
        raise UserError(
            f"{where}: source tokenizer must be a SentencePiece BPE model (LLaMA style); "
            f"this one is model_type={ts.model_type}. A unigram model can be merged into a BPE "
            "source with --merge-sp instead."
        )
    if not ts.byte_fallback:
        raise UserError(f"{where}: source tokenizer has no byte fallback; LLaMA-style BPE expected")
    ns = proto.normalizer_spec
    if ns.precompiled_charsmap or ns.name not in ("identity", ""):
        raise UserError(
            f"{where}: source tokenizer uses the {ns.name!r} normalizer; langgraft supports "
            "the identity normalizer (with or without whitespace folding) that LLaMA uses"
        )


def save_proto(proto: ModelProto, path: str | Path) -> None:
    Path(path).write_bytes(proto.SerializeToString())


def min_regular_score(proto: ModelProto) -> float:
    """Lowest score among the normal pieces, ignoring LLaMA's -1e9 whitespace-run outliers.

    New pieces are scored just below it; going below -1e9 would lose float32 precision (spacing 64)
    and bring back ties that the fast tokenizer cannot reproduce.
    """
    scores = [p.score for p in proto.pieces if p.type == NORMAL and p.score > -1e8]
    return min(scores) if scores else 0.0


def piece_index(proto: ModelProto) -> dict[str, int]:
    return {p.piece: i for i, p in enumerate(proto.pieces)}
