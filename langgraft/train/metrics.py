"""Metrics rows: one JSON line per logged step in metrics.jsonl, the same values as TensorBoard
scalars. After a resume, rows past the checkpoint's step are dropped from both (they belong to
the timeline that was lost), so the file always tells one history."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import time
from dataclasses import dataclass
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


# MFU convention, the one used by the trainer and every bench (docs/train.md states it):
# model FLOPs of one forward + backward, per token and matmul weight (lm_head over the whole
# expanded vocabulary included, tied or not; the embedding lookup is no matmul):
#   forward 2 + gradient of the input 2 + gradient of the weight 2 = 6 for a trainable weight,
#   4 for a frozen one: autograd computes no weight gradient for it (an embeddings-only stage,
#   LoRA's base weights), but the gradient still passes through it to the trainable embeddings
#   or adapters below. (Frozen weights with nothing trainable below them cost only 2, e.g. LoRA's
#   first layer; we count 4, an over-count of at most 1/layers of the frozen part.)
# + attention 12 x layers x (heads x head_dim) x causal pairs, pairs = sum over documents of
#   n(n+1)/2 (QK^T and AV, 2 FLOPs per multiply-add, backward = 2x forward) at the real
#   per-document lengths: the work a block-causal kernel must do, not the masked L x L that sdpa
#   computes. Activation recomputation is not added (PaLM's model FLOPs, not hardware FLOPs).
# MFU = those FLOPs per second per device / the device's dense bf16 peak (below); no MFU at all
# on a device the table does not know.

PEAK_BF16_DENSE: dict[str, float] = {
    # NVIDIA H100 Tensor Core GPU datasheet: BF16 Tensor Core 1,979 (SXM) / 1,513 (PCIe) /
    # 1,671 (NVL) TFLOPS "with sparsity"; dense is half of each.
    "H100 SXM": 1979e12 / 2,
    "H100 PCIe": 1513e12 / 2,
    "H100 NVL": 1671e12 / 2,
    # NVIDIA H200 Tensor Core GPU datasheet: 1,979 (SXM) / 1,671 (NVL) TFLOPS with sparsity.
    "H200 SXM": 1979e12 / 2,
    "H200 NVL": 1671e12 / 2,
    # NVIDIA A100 Tensor Core GPU datasheet: BF16 Tensor Core 312 TFLOPS dense (624 with
    # sparsity), 40 and 80 GB, SXM4 and PCIe alike.
    "A100": 312e12,
    # NVIDIA A800 datasheet (SXM4 / PCIe 80 GB, A800 40GB Active): BF16 312 TFLOPS dense.
    "A800": 312e12,
    # NVIDIA L40S datasheet: BF16 Tensor Core 362.05 TFLOPS dense (733 with sparsity).
    "L40S": 362.05e12,
    # AMD Instinct MI300X data sheet: peak BF16 1,307.4 TFLOPS dense (2,614.9 with sparsity).
    "MI300X": 1307.4e12,
}

# torch.cuda.get_device_name() strings -> table key; the first match wins, so NVL and PCIe come
# before the SXM forms ("NVIDIA H100 80GB HBM3" is the SXM5 board, "NVIDIA H100 PCIe",
# "NVIDIA H100 NVL"; "NVIDIA H200" the SXM one). A bare "H100" that says none of them is not
# guessed; a MIG slice has a fraction of the peak, so it gets no MFU either.
_DEVICE_NAMES: tuple[tuple[str, str], ...] = (
    (r"\bMIG\b", ""),
    (r"\bH100\b.*\bNVL\b", "H100 NVL"),
    (r"\bH100\b.*\bPCIe\b", "H100 PCIe"),
    (r"\bH100\b.*\b(HBM3|SXM\d?)\b", "H100 SXM"),
    (r"\bH200\b.*\bNVL\b", "H200 NVL"),
    (r"\bH200\b", "H200 SXM"),
    (r"\bA100\b", "A100"),
    (r"\bA800\b", "A800"),
    (r"\bL40S\b", "L40S"),
    (r"\bMI300X\b", "MI300X"),
)


@dataclass(frozen=True)
class MatmulWeights:
    """Weights that take part in a matmul per token, split by whether they train this stage."""

    trainable: int
    frozen: int

    @property
    def total(self) -> int:
        return self.trainable + self.frozen


def matmul_params(model: Any) -> MatmulWeights:
    """Every nn.Linear's weight (lm_head included, also when it is tied to the embedding; LoRA
    adapters and their frozen base layers alike), global sizes under FSDP/TP (DTensor numel),
    split by requires_grad: call it after the stage's trainable set is configured."""
    import torch

    trainable = frozen = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            if m.weight.requires_grad:
                trainable += m.weight.numel()
            else:
                frozen += m.weight.numel()
    return MatmulWeights(trainable, frozen)


def attention_dim(config: Any) -> int:
    heads = config.num_attention_heads
    return heads * int(getattr(config, "head_dim", None) or config.hidden_size // heads)


def training_flops(
    weights: MatmulWeights | int, tokens: int, causal_pairs: int, layers: int, attn_dim: int
) -> float:
    """Model FLOPs of one forward + backward pass (convention above); an int `weights` means
    every matmul weight trains."""
    if isinstance(weights, int):
        weights = MatmulWeights(weights, 0)
    matmuls = (6.0 * weights.trainable + 4.0 * weights.frozen) * tokens
    return matmuls + 12.0 * layers * attn_dim * causal_pairs


@functools.cache
def device_peak_flops(name: str) -> float | None:
    """Dense bf16 peak of a device by its torch.cuda.get_device_name(), None if the table does
    not know it (then no MFU is reported: a wrong peak would make a wrong MFU)."""
    key = next((k for pattern, k in _DEVICE_NAMES if re.search(pattern, name, re.I)), None)
    if not key:
        log.warning(
            "no dense bf16 peak known for device %r: mfu is not reported (add it to "
            "PEAK_BF16_DENSE in langgraft/train/metrics.py with its datasheet)", name,
        )  # fmt: skip
        return None
    return PEAK_BF16_DENSE[key]


def peak_flops(device: Any) -> float | None:
    """Dense bf16 peak of a CUDA (or ROCm) device, None off CUDA or for an unknown device."""
    import torch

    if getattr(device, "type", device) != "cuda" or not torch.cuda.is_available():
        return None
    return device_peak_flops(torch.cuda.get_device_name(device))


def mfu(flops_per_s_per_device: float, device: Any) -> float | None:
    """Model FLOPs utilization, None where the device's peak is unknown."""
    peak = peak_flops(device)
    return flops_per_s_per_device / peak if peak else None
