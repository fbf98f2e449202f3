"""`langgraft chat`: two turns over stdin, the template exactly as in training data, one BOS,
context-window trimming, commands, and where the template name comes from.

The model is stories260K as the trainer exports it after a `prepare chat` (llama2) stage:
`export_hf` with `export_meta`'s langgraft.json, which also writes the template as Jinja into
tokenizer_config.json. Known answers: the exact prompt (string and pieces) for a fixed
conversation, checked against transformers' apply_chat_template on the same directory, and the
greedy reply, checked against transformers' generate."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from langgraft.__main__ import main
from langgraft.chat import ChatSession, repl
from langgraft.generate import GenerateOptions, SamplingOptions, load_model
from langgraft.templates import find_template_name, get_template

# A fixed conversation and, by hand, its llama2 (Colossal) layout with its system prompt.
HISTORY = [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello."}]
PROMPT = (
    "<s>Be brief.\n\nHuman: <s>Hi!</s>Assistant: <s>Hello.</s>Human: <s>Who is Lily?</s>"
    "Assistant: <s>"
)
# tok512's pieces for it as langgraft lays it out: every text part encoded alone (so "Human"
# after "\n\n" has SentencePiece's dummy prefix "▁"), BOS/EOS inserted by id.
PIECES = [
    "<s>", "▁B", "e", "▁b", "ri", "e", "f", ".", "<0x0A>", "<0x0A>",
    "▁H", "u", "m", "an", ":", "<s>", "▁H", "i", "!", "</s>",
    "▁", "A", "s", "s", "is", "t", "an", "t", ":", "<s>", "▁He", "ll", "o", ".", "</s>",
    "▁H", "u", "m", "an", ":", "<s>", "▁", "W", "h", "o", "▁", "is", "▁Lily", "?", "</s>",
    "▁", "A", "s", "s", "is", "t", "an", "t", ":", "<s>",
]  # fmt: skip
# stories260K's greedy reply (12 tokens) to that prompt.
REPLY = "Once upon a time, there was a little girl"


@pytest.fixture(scope="module")
def stories(stories: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """stories260K through the trainer's export (not a hand-written langgraft.json)."""
    from transformers import AutoModelForCausalLM

    from langgraft.distributed.export import export_hf
    from langgraft.tokenizer.hf import load_tokenizer
    from langgraft.train.exportmeta import export_meta

    stage = SimpleNamespace(name="sft", data=[SimpleNamespace(path="sft-data", weight=1.0)])
    plan = SimpleNamespace(stage=stage, index=0, total_steps=2)
    meta = export_meta(SimpleNamespace(model=stories), plan, "llama2", {"global_step": 2, "tokens_seen": 128})  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(stories)
    out = tmp_path_factory.mktemp("chat") / "export"
    return export_hf(model, load_tokenizer(stories), out, {"recipe": "test"}, meta)


@pytest.fixture(scope="module")
def loaded(stories: Path) -> tuple[object, object]:
    return load_model(GenerateOptions(model=stories))


def session(loaded: tuple[object, object], **kw: object) -> ChatSession:
    model, tok = loaded
    return ChatSession(
        model, tok, get_template("llama2"), SamplingOptions(greedy=True, max_new_tokens=12), **kw
    )


def test_two_turns_over_stdin(stories: Path, loaded: tuple[object, object], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    stdin = io.StringIO("Hi!\nWho is Lily?\n/exit\nnot read\n")
    monkeypatch.setattr("sys.stdin", stdin)
    rc = main(["chat", "--model", str(stories), "--greedy", "--max-new-tokens", "12"])
    assert rc == 0
    replies = capsys.readouterr().out.splitlines()
    assert len(replies) == 2 and all(r.strip() for r in replies)
    assert stdin.read() == "not read\n"  # stopped at /exit
    # the template came from the export: the first reply is the greedy one for its layout
    model, tok = loaded
    prompt = get_template("llama2").render_prompt([{"role": "user", "content": "Hi!"}], tok)
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=12)
    assert replies[0] == tok.decode(out[0, len(prompt) :], skip_special_tokens=True).strip()


def test_prompt_is_the_training_layout_with_one_bos(loaded: tuple[object, object]) -> None:
    s = session(loaded)
    _, tok = loaded
    out: list[str] = []
    first = s.send("Hi!", out.append, out.append)
    second = s.send("Who is Lily?", out.append, out.append)
    assert first and second and "".join(out).startswith(first)
    history = [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "Who is Lily?"},
    ]
    template = get_template("llama2")
    assert s.last_prompt_ids == template.render_prompt(history, tok)
    # what `prepare chat` trains on for the full conversation starts with exactly this prompt
    train = [
        i
        for ids, _ in template.encode([*history, {"role": "assistant", "content": second}], tok)
        for i in ids
    ]
    assert train[: len(s.last_prompt_ids)] == s.last_prompt_ids
    assert s.last_prompt_ids[0] == tok.bos_token_id != s.last_prompt_ids[1]
    text = tok.decode(s.last_prompt_ids)
    assert text.count("Human:") == 2 and text.count("Assistant:") == 2
    assert s.turns[-1] == {"role": "assistant", "content": second}


def test_known_prompt_and_reply_for_a_fixed_conversation(
    stories: Path, loaded: tuple[object, object]
) -> None:
    from transformers import AutoTokenizer

    model, tok = loaded
    s = session(loaded, system="Be brief.")
    s.turns = list(HISTORY)
    reply = s.send("Who is Lily?", lambda t: None, lambda t: None)
    assert tok.convert_ids_to_tokens(s.last_prompt_ids) == PIECES
    assert reply == REPLY
    # transformers' generate, greedy, from the same ids: the same reply
    with torch.no_grad():
        out = model.generate(torch.tensor([s.last_prompt_ids]), do_sample=False, max_new_tokens=12)
    assert tok.decode(out[0, len(PIECES) :], skip_special_tokens=True).strip() == REPLY
    # the export's own chat template (tokenizer_config.json) renders the same prompt; its ids
    # differ only where two text parts meet ("\n\n" + "Human: ", one string for HF)
    hf = AutoTokenizer.from_pretrained(stories)
    msgs = s.messages([*HISTORY, {"role": "user", "content": "Who is Lily?"}])
    assert hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == PROMPT
    ids = hf.apply_chat_template(msgs, add_generation_prompt=True)["input_ids"]
    got = hf.convert_ids_to_tokens(ids)
    assert len(got) == len(PIECES)
    assert [(i, a, b) for i, (a, b) in enumerate(zip(got, PIECES, strict=True)) if a != b] == [
        (10, "H", "▁H")
    ]


def test_oldest_turns_are_dropped_and_said_so(loaded: tuple[object, object]) -> None:
    s = session(loaded)
    notes: list[str] = []
    for q in ["one", "two", "three"]:
        s.send(q, lambda t: None, notes.append)
    full = len(
        s.template.render_prompt(
            s.messages([*s.turns, {"role": "user", "content": "four"}]), s.tokenizer
        )
    )
    s.context = full + s.sampling.max_new_tokens - 1  # one token short of room for everything
    s.send("four", lambda t: None, notes.append)
    assert any("dropped the 1 oldest" in n for n in notes)
    assert [t["content"] for t in s.turns if t["role"] == "user"] == ["two", "three", "four"]
    assert len(s.last_prompt_ids) + s.sampling.max_new_tokens <= s.context
    s.context = 10  # nothing fits: the message is refused, history untouched
    assert s.send("five", lambda t: None, notes.append) is None
    assert "does not fit" in notes[-1] and s.turns[-2]["content"] == "four"


def test_commands_clear_and_system(loaded: tuple[object, object]) -> None:
    s = session(loaded)
    out, err = io.StringIO(), io.StringIO()
    repl(s, ["Hi!", "/clear", "/system Be brief.", "Hello", "/exit", "After"], out, err, tty=False)
    assert s.system == "Be brief." and [t["content"] for t in s.turns][0] == "Hello"
    assert len(s.turns) == 2 and "cleared" in err.getvalue()
    prompt = s.tokenizer.decode(s.last_prompt_ids)
    assert "Be brief." in prompt and "A chat between" not in prompt and "Hi!" not in prompt


def test_template_comes_from_model_or_dataset(stories: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert find_template_name(stories) == "llama2"
    bare = tmp_path / "bare"
    bare.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.json").write_text(
        json.dumps({"template": {"name": "chatml", "stop_token_ids": [7]}})
    )
    assert find_template_name(bare, data) == "chatml"
    assert find_template_name(bare) is None
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg/config.json").write_text("{}")
    assert main(["chat", "--model", str(tmp_path / "cfg")]) == 2
    assert "--template" in capsys.readouterr().err
    # tok512 lacks chatml's special tokens: a clear error before any input is read
    assert main(["chat", "--model", str(stories), "--template", "chatml"]) == 2
    assert "<|im_start|>" in capsys.readouterr().err
