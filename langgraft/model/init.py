"""Embedding init for the rows an expanded tokenizer adds (stage 2 of the pipeline).

`subtoken-mean` (the default of `langgraft model expand`): each new row is the mean of the old
rows of the piece's sub-tokens under the source tokenizer, so a new piece starts where the
source model's reading of the same text was. `mean`, `mean-cov` (transformers' mean_resizing)
and `zeros` are the baselines. Old rows are never touched: `expanded_rows` yields them bit for
bit before the new ones.
"""

from __future__ import annotations

from typing import Any, Literal

InitMethod = Literal["subtoken-mean", "mean", "mean-cov", "zeros"]
CHUNK_ROWS = 1024  # new rows initialised (and old rows reduced) per step


def subtoken_ids(src_proto: Any, tgt_proto: Any, new_ids: range) -> list[list[int]]:
    """For each new piece, its sub-token ids under the source tokenizer, as the piece appears in text.

    The piece is encoded with SentencePiece's dummy prefix switched off: a word-initial piece
    ("▁中国") already carries its own "▁", and a word-internal one ("国") must not get one. Colossal
    encodes with the prefix on, so the "▁" row enters almost every mean. Byte-fallback sub-tokens
    (<0xE4>...) are kept: for a character outside the source vocabulary they are the only input
    the source model ever saw for it. Control and unknown pieces have no surface text: [].
    """
    import sentencepiece as spm

    from langgraft.tokenizer.spmodel import NORMAL, USER_DEFINED, WS, ModelProto

    proto = ModelProto()
    proto.CopyFrom(src_proto)
    # Also no whitespace folding (tok512 has it on), which would drop the "▁" of "▁中国".
    proto.normalizer_spec.add_dummy_prefix = False
    proto.normalizer_spec.remove_extra_whitespaces = False
    sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
    out = []
    for j in new_ids:
        p = tgt_proto.pieces[j]
        out.append(sp.encode(p.piece.replace(WS, " ")) if p.type in (NORMAL, USER_DEFINED) else [])
    return out


class RowInit:
    """Initial float32 rows for the new pieces, computed a chunk at a time from the old rows.

    Statistics of the old rows are accumulated in chunks too, so that expanding a 7B model never
    holds a float32 copy of its embedding matrix (0.5 GB for LLaMA-2) next to the others.
    """

    def __init__(self, old: Any, method: InitMethod, sub_ids: list[list[int]] | None, seed: int):
        import torch

        self.old, self.method, self.sub_ids = old, method, sub_ids
        n, d = old.shape
        total = torch.zeros(d, dtype=torch.float64)
        for i in range(0, n, CHUNK_ROWS):
            total += old[i : i + CHUNK_ROWS].double().sum(0)
        self.mean = (total / n).float()
        self.chol = None
        if method == "mean-cov":
            # transformers' mean_resizing: N(mean, 1e-9 * covariance of the old rows)
            cov = torch.zeros(d, d, dtype=torch.float64)
            for i in range(0, n, CHUNK_ROWS):
                centered = old[i : i + CHUNK_ROWS].double() - total / n
                cov += centered.T @ centered
            try:
                self.chol = torch.linalg.cholesky(cov / n * 1e-9)
            except torch.linalg.LinAlgError:
                pass  # not positive definite: transformers falls back to the mean too
            self.gen = torch.Generator().manual_seed(seed)

    def rows(self, start: int, stop: int) -> Any:
        """Rows for new pieces start..stop-1 (0 = the first new piece)."""
        import torch

        n, d = stop - start, self.old.shape[1]
        if self.method == "zeros":
            return torch.zeros(n, d)
        if self.method == "mean" or (self.method == "mean-cov" and self.chol is None):
            return self.mean.expand(n, d).clone()
        if self.method == "mean-cov":
            noise = torch.randn(n, d, generator=self.gen, dtype=torch.float64)
            return (self.mean.double() + noise @ self.chol.T).float()
        assert self.sub_ids is not None
        bags = self.sub_ids[start:stop]
        flat = torch.tensor([i for ids in bags for i in ids], dtype=torch.long)
        seg = torch.tensor([k for k, ids in enumerate(bags) for _ in ids], dtype=torch.long)
        sums = torch.zeros(n, d).index_add_(0, seg, self.old[flat].float())
        counts = torch.tensor([len(ids) for ids in bags], dtype=torch.float32)
        rows = sums / counts.clamp(min=1)[:, None]
        rows[counts == 0] = self.mean  # control pieces and the like: no sub-tokens
        return rows


def expanded_rows(old: Any, plan: Any, sub_ids: list[list[int]] | None, dtype: Any) -> Any:
    """The expanded matrix as row chunks: old rows bit for bit (cast only if the dtype changes),
    then the new rows, then zero padding rows."""
    import torch

    n_src, n_new = plan.n_source, plan.n_target - plan.n_source
    yield old[:n_src].to(dtype)
    if n_new:
        init = RowInit(old[:n_src], plan.cfg.init, sub_ids, plan.cfg.seed)
        for i in range(0, n_new, CHUNK_ROWS):
            yield init.rows(i, min(i + CHUNK_ROWS, n_new)).to(dtype)
    if plan.new_vocab > plan.n_target:
        yield torch.zeros(plan.new_vocab - plan.n_target, old.shape[1], dtype=dtype)
