"""Stage 1: tokenizer expansion (piece lists, SentencePiece merges, corpus-learned pieces) and the
compression report. `load_tokenizer` is the single tokenizer loader used by every later stage."""

from langgraft.tokenizer.hf import load_tokenizer, write_hf_tokenizer

__all__ = ["load_tokenizer", "write_hf_tokenizer"]
