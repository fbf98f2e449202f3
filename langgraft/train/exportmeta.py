"""What every export carries besides weights and tokenizer: `langgraft.json` (the source model's
history and padding rows carried over, this training appended, and the chat template of the
run's `prepare chat` data) and, for a chat model, the same template as Jinja in
`tokenizer_config.json`, so that

    langgraft prepare chat ... && langgraft train ... && langgraft chat --model runs/x/export/stage-0-sft

needs no --template, and `AutoTokenizer.from_pretrained(export).apply_chat_template(...)` lays a
conversation out as training did.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from langgraft.errors import UserError
from langgraft.model.meta import read_meta, write_meta


def stage_templates(
    recipe: Any, datasets: dict[str, Any], where: str = "recipe"
) -> list[str | None]:
    """Per stage: the chat template the model has been tuned with by the end of that stage —
    the template of the latest stage with `prepare chat` data, else the source model's own.
    Two templates within one stage is an error (the model would learn both layouts)."""
    current = read_meta(recipe.model).get("chat_template")
    if isinstance(current, dict):
        current = current.get("name")
    out: list[str | None] = []
    for i, stage in enumerate(recipe.stages):
        names = {}
        for d in stage.data:
            info = datasets[d.path].manifest.get("template")
            if info:
                names[d.path] = info["name"] if isinstance(info, dict) else str(info)
        if len(set(names.values())) > 1:
            listed = ", ".join(f"{p} ({n})" for p, n in names.items())
            raise UserError(
                f"{where}: stages[{i}].data: chat datasets with different templates: {listed}; "
                "prepare them with one --template"
            )
        if names:
            current = next(iter(names.values()))
        out.append(current)
    return out


def export_meta(recipe: Any, plan: Any, template: str | None, trainer_state: dict) -> dict:
    """The exported model's langgraft.json: the source model's keys, `chat_template`, and one
    more entry in `train` (this run's stage, budget and data)."""
    meta = dict(read_meta(recipe.model))
    history = meta.get("train")
    history = list(history) if isinstance(history, list) else ([history] if history else [])
    history.append({
        "source_model": str(recipe.model),
        "stage": plan.stage.name,
        "stage_index": plan.index,
        "steps": plan.total_steps,
        "global_step": trainer_state["global_step"],
        "tokens_seen": trainer_state["tokens_seen"],
        "data": [{"path": d.path, "weight": d.weight} for d in plan.stage.data],
        "chat_template": template,
    })  # fmt: skip
    meta["train"] = history
    if template is not None:
        meta["chat_template"] = template
    return meta


def write_export_meta(directory: Path, meta: dict[str, Any]) -> None:
    """Write `meta` as the directory's langgraft.json; with a chat template also put its Jinja
    into tokenizer_config.json (after `save_pretrained` wrote that file)."""
    from langgraft.templates import jinja_template

    write_meta(directory, meta, base={})
    name = meta.get("chat_template")
    if not name:
        return
    path = directory / "tokenizer_config.json"
    cfg = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    cfg["chat_template"] = jinja_template(name)
    # The Jinja writes BOS/EOS as text; HF must parse them back into their ids.
    cfg["split_special_tokens"] = False
    path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    jinja = directory / "chat_template.jinja"  # a stale one would take precedence over ours
    if jinja.exists():
        jinja.unlink()
