"""`langgraft demo --model`: the sizes chosen for stories260K (the tuned FULL / QUICK, unchanged)
and for SmolLM2-135M (budgets scaled to its cost per token, with floors), the asset lookup that
no longer needs stories260K's files, and the import step's handling of a Hugging Face directory.
The real SmolLM2 demo takes minutes (README, BENCHMARKS.md); these checks take seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langgraft.__main__ import main
from langgraft.demo.recipe import (
    FLOOR,
    FULL,
    QUICK,
    QUICK_FLOOR,
    STORIES260K_WEIGHTS_PER_TOKEN,
    Scale,
    scale_for,
    weights_per_token,
)
from langgraft.demo.steps import ASSETS, find_assets, import_base, model_name
from langgraft.errors import UserError

# SmolLM2-135M-Instruct's config.json (as `model import-gguf` writes it), the shape fields only
SMOLLM2 = {
    "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
    "num_key_value_heads": 3, "head_dim": 64, "intermediate_size": 1536, "vocab_size": 49152,
}  # fmt: skip


def train_tokens(s: Scale) -> int:
    return sum(s.steps) * s.micro_batch * s.accumulation * s.max_length


def test_stories260k_keeps_the_tuned_sizes(stories: Path) -> None:
    config = json.loads((stories / "config.json").read_text())
    assert weights_per_token(config) == STORIES260K_WEIGHTS_PER_TOKEN
    assert scale_for(config, quick=False) == FULL
    assert scale_for(config, quick=True) == QUICK
    assert (FULL.vocab, QUICK.vocab, FULL.max_length, FULL.micro_batch) == (2048, 1024, 256, 8)


@pytest.mark.parametrize("quick", [False, True])
def test_smollm2_sizes_scale_to_its_cost(quick: bool) -> None:
    s, base = scale_for(SMOLLM2, quick), (QUICK if quick else FULL)
    floor = QUICK_FLOOR if quick else FLOOR
    ratio = weights_per_token(SMOLLM2) / STORIES260K_WEIGHTS_PER_TOKEN
    assert 500 < ratio < 540  # 134.5M weights per token (lm_head included) vs 259K
    # byte-level BPE of 49,152: + a twelfth (a 24th --quick), rounded up to 64
    assert s.vocab == 49152 + (4096 if not quick else 2048)
    assert (s.max_length, s.micro_batch, s.accumulation) == (128, 2, 1)
    # budgets divided by the cost ratio fall below the floors, so the floors hold
    assert train_tokens(base) / ratio < floor["train_tokens"]
    assert floor["train_tokens"] <= train_tokens(s) < floor["train_tokens"] + 3 * 256
    assert s.replay_tokens == floor["replay_tokens"] < base.replay_tokens
    assert s.heldout_chars == floor["heldout_chars"] < base.heldout_chars
    # the stages keep the tuned proportions (warm-up : injection : replay)
    for k in range(3):
        assert s.steps[k] / sum(s.steps) == pytest.approx(base.steps[k] / sum(base.steps), abs=0.03)
    assert s.cmmlu_limit == 0 and s.eval_interval == 0  # no CMMLU, no mid-stage evaluations
    assert s.replay_max_new == 64 and s.eval_rows < base.eval_rows
    # the probe is a quarter of ~30 samples: never empty (10% of 18 once was)
    assert s.replay_tokens / s.replay_max_new * s.replay_heldout >= 7
    assert s.zh_train_chars == base.zh_train_chars


def test_a_model_between_gets_budgets_between() -> None:
    """8x stories260K's width squared: budgets fall with the cost, above SmolLM2's floors."""
    mid = {"hidden_size": 256, "num_hidden_layers": 5, "num_attention_heads": 8,
           "num_key_value_heads": 4, "intermediate_size": 688, "vocab_size": 512}  # fmt: skip
    ratio = weights_per_token(mid) / STORIES260K_WEIGHTS_PER_TOKEN
    s = scale_for(mid, quick=False)
    assert 10 < ratio < 20
    assert train_tokens(s) == pytest.approx(train_tokens(FULL) / ratio, rel=0.02)
    assert train_tokens(scale_for(SMOLLM2, False)) < train_tokens(s) < train_tokens(FULL)
    assert s.replay_tokens == round(FULL.replay_tokens / ratio)
    assert s.vocab == FULL.vocab  # a 512-piece source grows like stories260K's


def fake_assets(root: Path, skip: tuple[str, ...] = ()) -> Path:
    for key, rel in ASSETS.items():
        if key not in skip:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text("x")
    return root


def test_find_assets_with_model_needs_no_stories260k(tmp_path: Path) -> None:
    root = fake_assets(tmp_path / "assets", skip=("checkpoint", "tokenizer"))
    gguf = tmp_path / "Some-Model.Q4_1.gguf"
    gguf.write_bytes(b"GGUF")
    a = find_assets(root, gguf)
    assert a["model"] == gguf and "checkpoint" not in a and model_name(a) == "Some-Model"
    with pytest.raises(UserError, match="models/stories260K/stories260K.bin not found"):
        find_assets(root)
    with pytest.raises(UserError, match="no such file"):
        find_assets(root, tmp_path / "missing.gguf")


def test_import_base_uses_a_hf_directory_in_place(stories: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert import_base({"model": stories}, out) == stories
    assert not (out / "base").exists()
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.json", "model.safetensors"):
        (bare / f).write_bytes((stories / f).read_bytes())
    with pytest.raises(UserError, match="no tokenizer.json or tokenizer.model"):
        import_base({"model": bare}, out)


def test_demo_refuses_an_out_inside_the_model(stories: Path, shared_data: Path, tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    for f in stories.iterdir():
        (model / f.name).write_bytes(f.read_bytes())
    argv = ["demo", "--quick", "--model", str(model), "--assets", str(shared_data),
            "--out", str(model / "demo"), "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    assert "the input" in capsys.readouterr().err
    assert not (model / "demo").exists()


def test_demo_help_names_model(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "--model MODEL" in capsys.readouterr().out
