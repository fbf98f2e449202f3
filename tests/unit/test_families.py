"""Every accepted family trains exactly as the model defines itself; the rest are refused.

Oracle (issue 21): the packed-document training loss (the trainer's collate + forward_nll, with
documents longer than the sliding windows, padded rows and single-document rows) equals the
model's own forward over each document alone, within 1e-5 relative, fp32, for every attention
kernel that runs on CPU. The same masks without the windows are measurably wrong, so the test
can fail. Unsupported families are refused in one line by every command that loads a model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_train_loss import doc, packed_row, separate_nll  # VOCAB 97, as there
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
    Qwen3Config,
)

from langgraft.__main__ import main
from langgraft.errors import UserError
from langgraft.model.families import FAMILIES, attention_groups, family, layer_windows
from langgraft.train.data import Row
from langgraft.train.loss import collate, forward_nll

torch.set_num_threads(1)
VOCAB = 97
WINDOW = 6
SHAPE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)  # fmt: skip


def config(model_type: str, impl: str):
    """A tiny random config of the family with its attention features switched on."""
    kw = dict(SHAPE, attn_implementation=impl)
    if model_type == "llama":
        return LlamaConfig(**kw, attention_bias=True)
    if model_type == "mistral":
        return MistralConfig(**kw, sliding_window=WINDOW)
    # qwen: layers >= max_window_layers slide; the others see the whole document
    cls = Qwen2Config if model_type == "qwen2" else Qwen3Config
    return cls(**kw, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1)


def model_of(model_type: str, impl: str, seed: int = 0):
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config(model_type, impl)).float().eval()


def packed_nll(model, rows: list[Row], impl: str, windows) -> float:
    with torch.no_grad():
        return float(forward_nll(model, collate(rows, 0, impl, windows=windows)).sum())


@pytest.mark.parametrize("impl", ["sdpa", "eager", "flex_attention"])
@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_packed_loss_equals_the_models_own_forward_per_document(model_type, impl) -> None:
    model = model_of(model_type, impl)
    ref = model_of(model_type, "eager")  # the same weights, one document at a time
    rng = np.random.default_rng(1)
    packed = [[doc(rng, n) for n in (15, 4, 11)], [doc(rng, n) for n in (9, 13)]]  # padded
    rows = [packed_row(d) for d in packed]
    windows = tuple(attention_groups(model.config).items())
    with torch.no_grad():
        want = separate_nll(ref, [d for ds in packed for d in ds])
    got = packed_nll(model, rows, impl, windows)
    assert abs(got - want) / want < 1e-5, (model_type, impl, got, want)
    # Single-document rows without pads take the no-mask path: HF's own (windowed) mask.
    singles = [doc(rng, 14), doc(rng, 14)]
    got = packed_nll(model, [packed_row([d]) for d in singles], impl, windows)
    with torch.no_grad():
        want = separate_nll(ref, singles)
    assert abs(got - want) / want < 1e-5, (model_type, impl, "single", got, want)
    if set(layer_windows(model.config)) != {None}:
        # The oracle has teeth: the same documents with the windows ignored are off.
        blind = packed_nll(model, rows, impl, (("all", None),))
        want = separate_nll(ref, [d for ds in packed for d in ds])
        assert abs(blind - want) / want > 1e-4, (model_type, impl, blind, want)


def test_each_family_reads_its_windows_as_its_attention_does() -> None:
    assert layer_windows(config("llama", "sdpa")) == [None, None, None]
    assert layer_windows(config("mistral", "sdpa")) == [WINDOW] * 3
    assert layer_windows(config("qwen2", "sdpa")) == [None, WINDOW, WINDOW]
    assert attention_groups(config("qwen3", "sdpa")) == {
        "full_attention": None, "sliding_attention": WINDOW}  # fmt: skip
    assert layer_windows(MistralConfig(**SHAPE, sliding_window=None)) == [None] * 3
    # Qwen with use_sliding_window false: no window anywhere, whatever sliding_window says.
    assert layer_windows(Qwen2Config(**SHAPE, sliding_window=WINDOW)) == [None] * 3


@pytest.mark.parametrize("model_type", ["gemma2", "gemma3", "phi3", None])
def test_other_families_are_refused_in_one_line(model_type) -> None:
    with pytest.raises(UserError, match=f"model_type {model_type!r} is not supported") as e:
        family(model_type, "config.json")
    assert "llama, mistral, qwen2, qwen3" in str(e.value) and "\n" not in str(e.value)


def test_every_command_refuses_gemma2_before_loading(tmp_path, capsys) -> None:
    from train_helpers import TOK512, prepared, tiny_model, write_recipe
    from transformers import AutoModelForCausalLM as Auto

    from langgraft.tokenizer import load_tokenizer

    gemma = tmp_path / "gemma2"
    Auto.from_config(Gemma2Config(**dict(SHAPE, vocab_size=512), head_dim=8)).save_pretrained(gemma)
    load_tokenizer(TOK512).save_pretrained(gemma)
    llama = tiny_model(tmp_path / "llama")
    data = prepared(tmp_path / "data", llama, {"en": 8})
    recipe = write_recipe(tmp_path / "r.yaml", {
        "model": str(gemma), "out": str(tmp_path / "run"), "progress": False,
        "stages": [{"name": "s", "data": [{"path": str(data)}], "steps": 1}],
    })  # fmt: skip
    (tmp_path / "text.txt").write_text("the cat sat on the mat\n")
    commands = {
        "train": ["train", "--config", str(recipe)],
        "generate": [
            "generate",
            "--model",
            str(gemma),
            "--prompt",
            "the",
            "--max-new-tokens",
            "2",
            "--greedy",
        ],  # fmt: skip
        "eval": [
            "eval",
            "text",
            "--model",
            str(gemma),
            "--data",
            str(tmp_path / "text.txt"),
            "--out",
            str(tmp_path / "ev"),
        ],  # fmt: skip
        "model": [
            "model",
            "expand",
            "--model",
            str(gemma),
            "--tokenizer",
            str(gemma),
            "--out",
            str(tmp_path / "exp"),
        ],  # fmt: skip
    }
    for name, argv in commands.items():
        capsys.readouterr()
        assert main(argv) == 2, name
        err = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
        assert len(err) == 1 and "model_type 'gemma2' is not supported" in err[0], (name, err)
        assert str(gemma / "config.json") in err[0], (name, err)
    assert not (tmp_path / "run").exists() and not (tmp_path / "exp").exists()
    assert json.loads((gemma / "config.json").read_text())["model_type"] == "gemma2"
