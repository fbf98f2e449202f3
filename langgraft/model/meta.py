"""`langgraft.json`: the metadata langgraft keeps beside a model directory.

One JSON object per model directory. Each stage that writes a model adds its own key (resolved
settings, inputs with sha256) and carries the keys of its input model over, so the file tells the
model's history. Two keys are read back by other stages:

- `chat_template`: the name of the chat template (`langgraft.templates`) the model was tuned with;
- `padding_rows`: `[first, end)` ids of embedding rows that exist only for a padded vocabulary
  (no tokenizer piece); they are never sampled (see `langgraft.generate`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from langgraft.errors import UserError

META_FILE = "langgraft.json"


def read_meta(model_dir: str | Path) -> dict[str, Any]:
    """The directory's metadata, or {} when it has none (any HF model directory is accepted)."""
    path = Path(model_dir) / META_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x})") from None
    except json.JSONDecodeError as e:
        raise UserError(
            f"{path}:{e.lineno}: invalid JSON ({e.msg}); fix or delete the file"
        ) from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def write_meta(
    model_dir: str | Path, updates: dict[str, Any], base: dict[str, Any] | None = None
) -> None:
    """Write `base` (default: the directory's current metadata) updated with `updates`."""
    data = dict(read_meta(model_dir) if base is None else base)
    data.update(updates)
    path = Path(model_dir) / META_FILE
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
