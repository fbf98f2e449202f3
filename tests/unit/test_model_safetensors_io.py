"""The tensor-at-a-time safetensors writer/reader agrees with the safetensors library."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from langgraft.errors import UserError
from langgraft.model.safetensors_io import (
    StreamingWriter,
    TensorInfo,
    dtype_code,
    iter_tensors,
    read_header,
)


def sample() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "a.f32": torch.randn(3, 5, generator=g),
        "b.bf16": torch.randn(7, generator=g).bfloat16(),
        "c.f16": torch.randn(2, 2, 3, generator=g).half(),
        "d.i64": torch.arange(5),
        "e.bool": torch.tensor([True, False, True]),
        "f.empty": torch.zeros(0, 4),
    }


def test_streamed_file_reads_back_with_safetensors(tmp_path: Path) -> None:
    ts = sample()
    specs = [TensorInfo(k, dtype_code(t.dtype), tuple(t.shape)) for k, t in ts.items()]
    with StreamingWriter(tmp_path / "x.safetensors", specs, {"format": "pt"}) as w:
        for k, t in ts.items():
            w.write(k, t)
    with safe_open(tmp_path / "x.safetensors", framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        for k, t in ts.items():
            assert torch.equal(f.get_tensor(k), t) and f.get_tensor(k).dtype == t.dtype


def test_reader_reads_library_files(tmp_path: Path) -> None:
    ts = sample()
    save_file(ts, tmp_path / "y.safetensors", metadata={"format": "pt"})
    got = {info.name: t for info, t in iter_tensors(tmp_path / "y.safetensors")}
    assert got.keys() == ts.keys()
    for k, t in ts.items():
        assert torch.equal(got[k], t) and got[k].dtype == t.dtype
    assert read_header(tmp_path / "y.safetensors")[1] == {"format": "pt"}


def test_writer_rejects_undeclared_tensors_and_missing_ones(tmp_path: Path) -> None:
    spec = [TensorInfo("w", "F32", (2,))]
    with pytest.raises(ValueError, match="does not match"):
        with StreamingWriter(tmp_path / "z.safetensors", spec, {}) as w:
            w.write("w", torch.zeros(3))
    w = StreamingWriter(tmp_path / "z.safetensors", spec, {})
    with pytest.raises(ValueError, match="not written"):
        w.close()


def test_garbage_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "g.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(UserError, match="not a safetensors file"):
        read_header(tmp_path / "g.safetensors")
