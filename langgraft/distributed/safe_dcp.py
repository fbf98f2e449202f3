"""Reading a DCP checkpoint without running code from it.

`torch.distributed.checkpoint` unpickles two things a checkpoint directory supplies: `.metadata`
(`FileSystemReader.read_metadata`, plain `pickle.load`) and every non-tensor value of the state
dict (`DefaultLoadPlanner.load_bytes`, `torch.load(weights_only=False)`). A pickle can call any
importable function, so a checkpoint the user did not write could run code the moment
`--resume` or `--init-from` opened it.

Threat model: `--resume` and `--init-from` accept checkpoint directories from anyone. What they
load: JSON (`trainer_state.json`, `recipe.json`), tensors and plain containers
(`torch.load(weights_only=True)`: `scheduler.pt`, `scaler.pt`, `rng*.pt`, DCP's tensor shards and
its non-tensor values) and `dcp/.metadata` through `SafeUnpickler`, which resolves only the DCP
metadata classes, `torch.Size`, dtypes, layouts and `pathlib` paths. Anything else is refused
before it is constructed, in one line naming the file. A crafted checkpoint can still hold wrong
numbers (it is someone else's model); it cannot run code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch

from langgraft.errors import UserError

_DCP_METADATA = "torch.distributed.checkpoint.metadata"
_ALLOWED: dict[str, frozenset[str]] = {
    _DCP_METADATA: frozenset({
        "Metadata", "MetadataIndex", "StorageMeta", "TensorStorageMetadata",
        "BytesStorageMetadata", "ChunkStorageMetadata", "TensorProperties",
        "_MEM_FORMAT_ENCODING",
    }),
    "torch.distributed.checkpoint.filesystem": frozenset({"_StorageInfo"}),
    "torch.serialization": frozenset({"_get_layout"}),  # maps a layout's name to the object
    "torch": frozenset({"Size"}),
    "pathlib": frozenset({"Path", "PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath"}),
    "collections": frozenset({"OrderedDict"}),
}  # fmt: skip


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the names DCP metadata is made of."""

    def find_class(self, module: str, name: str) -> Any:
        if name in _ALLOWED.get(module, ()):
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"it asks for {module}.{name}, which DCP metadata never holds")


def read_metadata(path: Path) -> Any:
    """The DCP `Metadata` in file `path`, unpickled with `SafeUnpickler`; a UserError naming the
    file for anything else (a pickle that would run code, a damaged file, another object)."""
    from torch.distributed.checkpoint.metadata import Metadata

    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read the checkpoint metadata ({e.strerror})") from None
    try:
        md = SafeUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as e:
        raise UserError(
            f"{path}: refusing to load this checkpoint: {e} (only DCP metadata is unpickled)"
        ) from None
    except Exception as e:  # truncated or not a pickle at all
        raise UserError(
            f"{path}: damaged checkpoint metadata ({type(e).__name__}: {str(e)[:120]})"
        ) from None
    if not isinstance(md, Metadata) or not isinstance(md.state_dict_metadata, dict):
        raise UserError(f"{path}: not DCP checkpoint metadata ({type(md).__name__})")
    return md


def reader(dcp_dir: Path) -> Any:
    """A `FileSystemReader` for `dcp_dir` whose metadata goes through `read_metadata`."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class SafeFileSystemReader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            md = read_metadata(Path(self._get_metadata_path(kwargs.get("rank"))))
            if getattr(md, "storage_meta", None) is None:
                md.storage_meta = StorageMeta()
            md.storage_meta.load_id = self.load_id
            return md

    return SafeFileSystemReader(str(dcp_dir))


def planner() -> Any:
    """DCP's default load planner with non-tensor values read `weights_only` (DCP's own reads
    them with `weights_only=False`)."""
    from torch.distributed.checkpoint import DefaultLoadPlanner
    from torch.distributed.checkpoint._traverse import set_element

    class SafeLoadPlanner(DefaultLoadPlanner):
        def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
            fqn = read_item.dest_index.fqn
            try:
                obj = torch.load(value, weights_only=True)
            except pickle.UnpicklingError as e:
                last = str(e).strip().splitlines()[-1][:200] if str(e).strip() else ""
                raise UserError(
                    f"refusing to unpickle the checkpoint value {fqn!r}: it holds more than "
                    f"tensors and plain containers ({last})"
                ) from None
            if self.flatten_state_dict:
                set_element(self.original_state_dict, self.mappings[fqn], obj)
            else:
                self.state_dict[fqn] = obj

    return SafeLoadPlanner()
