"""Metrics rows: one JSON line per logged step in metrics.jsonl, the same values as TensorBoard
scalars. After a resume, rows past the checkpoint's step are dropped from both (they belong to
the timeline that was lost), so the file always tells one history."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from langgraft.errors import UserError

log = logging.getLogger(__name__)


def _rows_up_to(path: Path, step: int) -> list[str]:
    """The lines of metrics.jsonl with step <= `step`. A torn last line (a kill in mid-write)
    is dropped with a warning; a bad line before it is corruption, named file:line."""
    lines = path.read_bytes().decode("utf-8", errors="replace").split("\n")
    kept = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            if all(not rest.strip() for rest in lines[i + 1 :]):
                log.warning("%s:%d: dropping a torn last line (the run was killed)", path, i + 1)
                break
            raise UserError(
                f"{path}:{i + 1}: not a JSON metrics row; fix or remove the line to resume"
            ) from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{i + 1}: not a JSON object; fix or remove the line")
        if row.get("step", 0) <= step:
            kept.append(line)
    return kept


def _replace_atomically(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, fsync it, rename it over `path`: a kill
    at any moment leaves either the old file or the new one, never a truncated one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # a failed write (full disk) leaves no scratch file


class MetricsLogger:
    def __init__(self, out: Path, tensorboard: bool, resume_step: int | None = None) -> None:
        self.path = out / "metrics.jsonl"
        out.mkdir(parents=True, exist_ok=True)
        # A rewrite killed midway left its scratch file; this run holds out/'s lock
        # (train/rundir.py), so no other process is writing one now.
        for stale in out.glob(f".{self.path.name}.tmp-*"):
            stale.unlink(missing_ok=True)
        if resume_step is not None and self.path.exists():
            kept = _rows_up_to(self.path, resume_step)
            _replace_atomically(self.path, "".join(k + "\n" for k in kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()  # train/rundir.py allowed it: this run's own leftovers
        # O_APPEND + one os.write per row: a row is never interleaved or half-buffered.
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._tb: Any = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides events past the resumed step from the TensorBoard view.
            purge = None if resume_step is None else resume_step + 1
            self._tb = SummaryWriter(str(out / "tensorboard"), purge_step=purge)

    def write(self, row: dict[str, Any]) -> None:
        data = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        while data:  # a regular file takes it in one write; loop only for a short write
            data = data[os.write(self._fd, data) :]
        if self._tb is not None:
            step = row["step"]
            for k, v in row.items():
                if k != "step" and isinstance(v, int | float) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        os.close(self._fd)
        if self._tb is not None:
            self._tb.close()


class NoMetrics:
    """The metrics sink of ranks other than 0 (one writer per run directory)."""

    def write(self, row: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class Throughput:
    """Tokens and model FLOPs per second over the steps since the last `rate()` call (excludes
    eval and saves). Steps are timed on the host without a device sync; the window is closed
    on a logging step right after the step's values were read (which waits for the device), so
    the sum of the step intervals covers the device's work of the window."""

    def __init__(self) -> None:
        self.flops = 0.0
        self.seconds = 0.0
        self.flops_per_s = 0.0
        """Of the window closed by the last `rate()` call."""
        self._t0: float | None = None

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop(self, flops: float = 0.0) -> None:
        if self._t0 is not None:
            self.seconds += time.perf_counter() - self._t0
            self.flops += flops
            self._t0 = None

    def rate(self, tokens: int) -> float:
        """Tokens per second of the window (`tokens`: the window's tokens over every rank)."""
        r = tokens / self.seconds if self.seconds else 0.0
        self.flops_per_s = self.flops / self.seconds if self.seconds else 0.0
        self.flops, self.seconds = 0.0, 0.0
        return r


# MFU convention (written next to every figure): model FLOPs of forward + backward =
#   6 x (weights of every matmul, lm_head over the whole expanded vocabulary included, the
#        embedding lookup excluded) x tokens
# + 12 x layers x (heads x head_dim) x causal pairs, pairs = sum over documents of n(n+1)/2
#   (QK^T and AV, 2 FLOPs per multiply-add, backward = 2x forward), at the real per-document
#   lengths: the work a block-causal kernel must do, not the masked L x L that sdpa computes.
# Frozen weights (an embeddings-only stage) and activation recomputation are not discounted
# or added (PaLM's model FLOPs). MFU = those FLOPs per second per device / the device's dense
# bf16 peak.
PEAK_BF16_DENSE = {"H100": 989e12, "H200": 989e12, "H800": 989e12, "H20": 148e12,
                   "A100": 312e12, "A800": 312e12, "L40S": 181e12, "A10G": 125e12}  # fmt: skip


def matmul_params(model: Any) -> int:
    """Weights that take part in a matmul per token: every nn.Linear, lm_head included (also
    when it is tied to the embedding), global sizes under FSDP/TP (DTensor numel)."""
    import torch

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def attention_dim(config: Any) -> int:
    heads = config.num_attention_heads
    return heads * int(getattr(config, "head_dim", None) or config.hidden_size // heads)


def training_flops(
    matmul_weights: int, tokens: int, causal_pairs: int, layers: int, attn_dim: int
) -> float:
    """Model FLOPs of one forward + backward pass (convention above)."""
    return 6.0 * matmul_weights * tokens + 12.0 * layers * attn_dim * causal_pairs


def peak_flops(device: Any) -> float:
    """Dense bf16 peak of a CUDA device by name, 0 if unknown (then no MFU is reported)."""
    import torch

    if getattr(device, "type", device) != "cuda" or not torch.cuda.is_available():
        return 0.0
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_DENSE.items() if k in name), 0.0)


def mfu(flops_per_s_per_device: float, device: Any) -> float:
    peak = peak_flops(device)
    return flops_per_s_per_device / peak if peak else 0.0
