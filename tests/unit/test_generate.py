"""`langgraft generate`: the llama2.c reference, batching, padding rows, prompts, streaming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from langgraft.__main__ import build_parser, main
from langgraft.errors import UserError
from langgraft.generate import (
    GenerateOptions,
    SamplingOptions,
    TextStream,
    completion_text,
    generate,
    generate_ids,
    load_model,
    read_prompts,
)
from langgraft.model.expand import ExpandConfig, expand_model
from langgraft.tokenizer.hf import load_tokenizer, write_hf_tokenizer
from langgraft.tokenizer.spmodel import NORMAL, load_proto


@pytest.fixture(scope="module")
def padded(stories: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """stories260K expanded by 3 pieces and padded to 576 rows, padding rows made irresistible."""
    proto = load_proto(stories / "tokenizer.model")
    low = min(p.score for p in proto.pieces if p.type == NORMAL)
    for k, text in enumerate(["中", "国", "▁中国"]):
        new = proto.pieces.add()
        new.piece, new.score, new.type = text, low - 1 - k, NORMAL
    tmp = tmp_path_factory.mktemp("padded")
    write_hf_tokenizer(proto, tmp / "tok")
    out = tmp / "model"
    expand_model(ExpandConfig(model=stories, tokenizer=tmp / "tok", out=out, pad_to_multiple_of=64))
    weights = load_file(out / "model.safetensors")
    emb = weights["model.embed_tokens.weight"]  # tied: these rows are also the output rows
    emb[515:] = 50 * emb[:512].mean(0) + 5 * torch.randn(emb[515:].shape)
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    return out


def test_greedy_reproduces_llama2c_reference(stories: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    args = ["--prompt", "", "--greedy", "--max-new-tokens", "200", "--dtype", "fp32"]
    rc = main(["generate", "--model", str(stories), *args])
    assert rc == 0
    expected = (shared_data / "models/stories260K/expected_greedy_n200.txt").read_text()
    assert capsys.readouterr().out == expected + "\n"


def test_flags_are_real_booleans() -> None:
    p = build_parser()
    assert p.parse_args(["generate", "--model", "m", "--greedy"]).greedy is True
    assert p.parse_args(["generate", "--model", "m"]).greedy is False
    assert p.parse_args(["generate", "--model", "m", "--no-greedy"]).greedy is False
    assert p.parse_args(["generate", "--model", "m"]).trust_remote_code is False
    with pytest.raises(SystemExit):
        p.parse_args(["generate", "--model", "m", "--greedy", "False"])


def test_batched_equals_one_by_one_and_jsonl_records(stories: Path, tmp_path: Path) -> None:
    prompts = ["Once upon a time", "Lily", "The big dog ran to the"]
    common = dict(model=stories, prompt=prompts, greedy=True, max_new_tokens=30, dtype="fp32")
    out = tmp_path / "batch.jsonl"
    batched = generate(GenerateOptions(**common, batch_size=3, out=out), print)
    single = generate(GenerateOptions(**common, batch_size=1), lambda s: None)
    assert [c.token_ids for c in batched] == [c.token_ids for c in single]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in records] == prompts
    for r, c in zip(records, batched, strict=True):
        assert r["completion"] == c.completion and r["completion_tokens"] == len(c.token_ids)
        assert r["finish_reason"] == "length" and r["settings"]["greedy"] is True
        assert r["settings"]["max_new_tokens"] == 30
    # the completion continues the prompt's text, leading space included
    tok = load_tokenizer(stories)
    for c in batched:
        assert c.prompt + c.completion == tok.decode(
            tok(c.prompt).input_ids + c.token_ids, skip_special_tokens=True
        )
    assert batched[0].completion.startswith(",")  # "Once upon a time" + ", there was ..."
    assert batched[1].completion.startswith(" ")


def test_padding_rows_are_never_sampled(padded: Path) -> None:
    model, tok = load_model(GenerateOptions(model=padded))
    assert len(tok) == 515 and model.config.vocab_size == 576
    ids = torch.tensor([[1, 403, 407]], device=model.device)
    # negative control: without any masking, the doctored padding rows win
    raw = model.generate(ids, max_new_tokens=5, do_sample=False, suppress_tokens=None)
    assert (raw[0, 3:] >= 515).any()
    # transformers' own generate, with the generation config langgraft wrote (suppress_tokens)
    plain = AutoModelForCausalLM.from_pretrained(padded).generate(  # on CPU
        ids.cpu(), max_new_tokens=20, do_sample=True, top_k=0
    )
    assert (plain[0, 3:] < 515).all()
    # langgraft's generate: masks ids >= len(tokenizer) even if the config forgets to
    model.generation_config.suppress_tokens = None
    s = SamplingOptions(max_new_tokens=40, temperature=2.0, top_p=1.0)
    for new, _ in generate_ids(model, tok, [[1, 403, 407], [1]], s, [2]):
        assert new and max(new) < 515


def test_sampling_is_seeded(stories: Path) -> None:
    def run(seed: int) -> list[int]:
        opts = GenerateOptions(
            model=stories, prompt=["Lily"], max_new_tokens=20, temperature=1.0, seed=seed
        )
        return generate(opts, lambda s: None)[0].token_ids

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_stream_holds_back_partial_utf8_characters(stories: Path) -> None:
    tok = load_tokenizer(stories)
    written: list[str] = []
    stream = TextStream(tok, written.append, stop_ids=[2])
    prompt = tok("Lily said").input_ids
    new = tok("中国!", add_special_tokens=False).input_ids  # "▁" + byte pieces of 中 and 国 + "!"
    stream.put(torch.tensor([prompt]))
    for i in [*new, 2]:
        stream.put(torch.tensor([i]))
    stream.end()
    assert "".join(written) == " 中国!" == completion_text(tok, prompt, new)
    assert not any("\ufffd" in w for w in written)


def test_prompts_from_files(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("one\n\ntwo\n")
    (tmp_path / "p.jsonl").write_text('{"prompt": "three"}\n"four"\n\n')
    opts = GenerateOptions(model=tmp_path, prompt=["zero"], prompts_file=tmp_path / "p.txt")
    assert read_prompts(opts) == ["zero", "one", "two"]
    assert read_prompts(GenerateOptions(model=tmp_path, prompts_file=tmp_path / "p.jsonl")) == [
        "three",
        "four",
    ]
    (tmp_path / "bad.jsonl").write_text('{"prompt": "ok"}\n{"text": 1}\n')
    with pytest.raises(UserError, match="bad.jsonl:2:"):
        read_prompts(GenerateOptions(model=tmp_path, prompts_file=tmp_path / "bad.jsonl"))
    with pytest.raises(UserError, match="no prompts"):
        read_prompts(GenerateOptions(model=tmp_path))


def test_missing_model_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--model", str(tmp_path / "nope"), "--prompt", "x"]) == 2
    assert "nope: no such model directory" in capsys.readouterr().err
