"""Tensor-at-a-time safetensors reading and writing, so that a 7B checkpoint can be rewritten
while holding one tensor in memory (the `safetensors` Python API writes a file from a dict of
all its tensors, and its reader memory-maps the file, which counts towards the process RSS).

The format: 8-byte little-endian header length, a JSON header {name: {dtype, shape,
data_offsets: [begin, end]}, "__metadata__": {str: str}} padded with spaces to a multiple of 8,
then the raw little-endian tensor bytes, contiguous and without holes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langgraft.errors import UserError

DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}
ITEMSIZE = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}


def torch_dtype(code: str) -> Any:
    import torch

    return getattr(torch, DTYPES[code])


def dtype_code(dtype: Any) -> str:
    name = str(dtype).removeprefix("torch.")
    for code, n in DTYPES.items():
        if n == name:
            return code
    raise ValueError(f"unsupported dtype {dtype}")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # safetensors code, e.g. "BF16"
    shape: tuple[int, ...]
    begin: int = 0  # byte offsets within the data section
    end: int = 0

    @property
    def nbytes(self) -> int:
        n = ITEMSIZE[self.dtype]
        for s in self.shape:
            n *= s
        return n


def read_header(path: str | Path) -> tuple[list[TensorInfo], dict[str, str], int]:
    """(tensors in file order, metadata, byte offset of the data section)."""
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise UserError(f"{path}: not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw)
        if n > 100_000_000:
            raise UserError(f"{path}: not a safetensors file (header length {n})")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(f"{path}: not a safetensors file (bad header)") from None
    if not isinstance(header, dict):
        raise UserError(f"{path}: not a safetensors file (header is not a JSON object)")
    meta = header.pop("__metadata__", None) or {}
    infos = [_tensor_info(path, k, v) for k, v in header.items()]
    infos.sort(key=lambda t: t.begin)
    data = path.stat().st_size - 8 - n
    end = max((t.end for t in infos), default=0)
    if end > data:
        raise UserError(
            f"{path}: truncated safetensors file ({data:,} bytes of tensor data, the header "
            f"needs {end:,})"
        )
    return infos, meta, 8 + n


def _tensor_info(path: Path, name: str, v: Any) -> TensorInfo:
    try:
        info = TensorInfo(name, v["dtype"], tuple(int(s) for s in v["shape"]), *v["data_offsets"])
        ok = info.dtype in ITEMSIZE and info.end - info.begin == info.nbytes and info.begin >= 0
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise UserError(f"{path}: not a safetensors file (bad header entry for {name!r})")
    return info


def read_tensor(f: Any, data_start: int, info: TensorInfo) -> Any:
    """Read one tensor with a plain file read (no mmap), into a fresh buffer."""
    import torch

    buf = torch.empty(info.nbytes, dtype=torch.uint8)
    f.seek(data_start + info.begin)
    if info.nbytes and f.readinto(buf.numpy()) != info.nbytes:
        raise UserError(f"{f.name}: truncated safetensors file (tensor {info.name})")
    return buf.view(torch_dtype(info.dtype)).reshape(info.shape)


def iter_tensors(path: str | Path) -> Iterator[tuple[TensorInfo, Any]]:
    infos, _, start = read_header(path)
    with open(path, "rb") as f:
        for info in infos:
            yield info, read_tensor(f, start, info)


class StreamingWriter:
    """Write a safetensors file whose tensor names, dtypes and shapes are known up front; tensors
    are then passed one at a time, in the declared order."""

    def __init__(self, path: str | Path, specs: list[TensorInfo], metadata: dict[str, str]) -> None:
        self.path = Path(path)
        header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
        self.specs: list[TensorInfo] = []
        pos = 0
        for s in specs:
            info = TensorInfo(s.name, s.dtype, tuple(s.shape), pos, pos + s.nbytes)
            self.specs.append(info)
            header[s.name] = {
                "dtype": s.dtype,
                "shape": list(s.shape),
                "data_offsets": [pos, pos + s.nbytes],
            }
            pos += s.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self._f = open(self.path, "wb")  # noqa: SIM115 -- closed in close()
        self._f.write(struct.pack("<Q", len(raw)) + raw)
        self._next = 0
        self.total_bytes = pos

    def write(self, name: str, tensor: Any) -> None:
        self.write_rows(name, [tensor])

    def write_rows(self, name: str, chunks: Iterable[Any]) -> None:
        """Write one tensor given as consecutive chunks along its first dimension."""
        import torch

        spec = self.specs[self._next]
        rows = 0
        for chunk in chunks:
            if (
                name != spec.name
                or dtype_code(chunk.dtype) != spec.dtype
                or tuple(chunk.shape[1:]) != spec.shape[1:]
            ):
                raise ValueError(
                    f"tensor {name} {chunk.dtype} {tuple(chunk.shape)} does not match {spec}"
                )
            t = chunk.detach().contiguous().cpu()
            if t.numel():
                self._f.write(t.view(-1).view(torch.uint8).numpy().data)
            rows += t.shape[0] if t.dim() else 1
        if rows != (spec.shape[0] if spec.shape else 1):
            raise ValueError(f"tensor {name}: {rows} rows written does not match {spec}")
        self._next += 1

    def close(self) -> None:
        if self._next != len(self.specs):
            self._f.close()
            raise ValueError(
                f"{self.path}: {len(self.specs) - self._next} tensors were not written"
            )
        self._f.close()

    def __enter__(self) -> StreamingWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self._f.close()
