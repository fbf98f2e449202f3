"""`langgraft chat`: two turns over stdin, the template exactly as in training data, one BOS,
context-window trimming, commands, and where the template name comes from."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from langgraft.__main__ import main
from langgraft.chat import ChatSession, repl
from langgraft.generate import GenerateOptions, SamplingOptions, load_model
from langgraft.model.meta import write_meta
from langgraft.templates import find_template_name, get_template


@pytest.fixture(scope="module")
def stories(stories: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("chat") / "stories260K"
    shutil.copytree(stories, out)
    write_meta(out, {"chat_template": "llama2"})
    return out


@pytest.fixture(scope="module")
def loaded(stories: Path) -> tuple[object, object]:
    return load_model(GenerateOptions(model=stories))


def session(loaded: tuple[object, object], **kw: object) -> ChatSession:
    model, tok = loaded
    return ChatSession(
        model, tok, get_template("llama2"), SamplingOptions(greedy=True, max_new_tokens=12), **kw
    )


def test_two_turns_over_stdin(stories: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    stdin = io.StringIO("Hi!\nWho is Lily?\n/exit\nnot read\n")
    monkeypatch.setattr("sys.stdin", stdin)
    rc = main(["chat", "--model", str(stories), "--greedy", "--max-new-tokens", "12"])
    assert rc == 0
    replies = capsys.readouterr().out.splitlines()
    assert len(replies) == 2 and all(r.strip() for r in replies)
    assert stdin.read() == "not read\n"  # stopped at /exit


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
