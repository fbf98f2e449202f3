"""prepare chat -> train -> chat, with no --template anywhere: every export carries the chat
template (langgraft.json and, as Jinja, tokenizer_config.json, so transformers'
apply_chat_template lays a conversation out exactly as training did), the source model's
padding rows and history, and this run's training entry."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from train_helpers import TOK512, tiny_model, write_recipe  # noqa: E402

from langgraft.__main__ import main  # noqa: E402
from langgraft.templates import get_template  # noqa: E402

CONVOS = [
    [{"role": "system", "content": "Be brief."},
     {"role": "user", "content": "the cat sat on a mat"},
     {"role": "assistant", "content": "a dog ran to the park"}],
    [{"role": "user", "content": "one day a little girl"},
     {"role": "assistant", "content": "found a big red ball"},
     {"role": "user", "content": "in the garden"},
     {"role": "assistant", "content": "she was happy"}],
]  # fmt: skip


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    from langgraft.data.config import ChatPrepareConfig
    from langgraft.data.prepare import prepare
    from langgraft.model.meta import write_meta

    torch.set_num_threads(1)
    t = tmp_path_factory.mktemp("chat-export")
    model = tiny_model(t / "model")
    write_meta(model, {"padding_rows": [512, 512], "model_expand": {"note": "source history"}})
    src = t / "sft.jsonl"
    src.write_text(
        "".join(json.dumps({"messages": c, "category": "qa"}) + "\n" for c in CONVOS * 8)
    )
    prepare(ChatPrepareConfig(input=[str(src)], tokenizer=TOK512, out=t / "sft", max_length=64,
                              progress=False))  # fmt: skip
    cfg = write_recipe(t / "r.yaml", {
        "model": str(model), "out": str(t / "run"), "progress": False, "tensorboard": False,
        "train": {"micro_batch_size": 2, "warmup_steps": 0},
        "stages": [{"name": "sft", "data": [{"path": str(t / "sft")}], "steps": 2}],
    })  # fmt: skip
    assert main(["train", "--config", str(cfg)]) == 0
    return t / "run" / "export" / "stage-0-sft"


def test_export_records_template_padding_rows_and_history(export: Path) -> None:
    meta = json.loads((export / "langgraft.json").read_text())
    assert meta["chat_template"] == "llama2"
    assert meta["padding_rows"] == [512, 512]  # carried from the source model
    assert meta["model_expand"] == {"note": "source history"}
    (entry,) = meta["train"]
    assert (
        entry["stage"] == "sft" and entry["global_step"] == 2 and entry["chat_template"] == "llama2"
    )


@pytest.mark.parametrize("generation_prompt", [False, True])
def test_apply_chat_template_lays_out_conversations_as_training_did(
    export: Path, generation_prompt: bool
) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(export)
    template = get_template("llama2")
    for messages in CONVOS:
        msgs = messages[:-1] if generation_prompt else messages
        parts = template.parts(msgs, add_generation_prompt=generation_prompt)
        expected = "".join(
            p.text if p.text is not None
            else tok.convert_ids_to_tokens(template.special_id(tok, p.special))
            for p in parts
        )  # fmt: skip
        rendered = tok.apply_chat_template(
            msgs, tokenize=False, add_generation_prompt=generation_prompt
        )
        assert rendered == expected
        ids = tok.apply_chat_template(msgs, add_generation_prompt=generation_prompt)["input_ids"]
        specials = [i for i in ids if i in (tok.bos_token_id, tok.eos_token_id)]
        want = [template.special_id(tok, p.special) for p in parts if p.special is not None]
        assert specials == want  # BOS/EOS come back as their ids, where training put them
        # The ordinary text between them can tokenize differently where two text parts meet
        # (langgraft encodes each part alone, with SentencePiece's dummy prefix; HF encodes the
        # rendered string): `langgraft chat` / `generate` reproduce training's ids exactly.


def test_chat_finds_the_template_without_flags(export: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("the cat sat\n/exit\n"))
    args = ["chat", "--model", str(export), "--greedy", "--max-new-tokens", "4", "--system", "Hi."]
    assert main(args) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip()  # a reply was streamed
