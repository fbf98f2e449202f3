"""`langgraft model expand` on the real stories260K model and a real expansion of its tokenizer
(tok512 + pieces of Chinese-LLaMA's chinese_sp.model, appended the way Chinese-LLaMA merges)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from langgraft.__main__ import main
from langgraft.tokenizer.hf import load_tokenizer, write_hf_tokenizer
from langgraft.tokenizer.spmodel import NORMAL, load_proto

N_ZH = 200


def append_pieces(proto, pieces: list[str]):  # noqa: ANN001, ANN201
    """NORMAL pieces appended with distinct, decreasing scores below the lowest existing one."""
    low = min(p.score for p in proto.pieces if p.type == NORMAL)
    for k, text in enumerate(pieces):
        new = proto.pieces.add()
        new.piece, new.score, new.type = text, low - 1 - k, NORMAL
    return proto


@pytest.fixture(scope="module")
def tok_zh(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tok512 + the first N_ZH new pieces of chinese_sp.model + two pieces with known sub-tokens."""
    src = load_proto(shared_data / "models/stories260K/tok512.model")
    have = {p.piece for p in src.pieces}
    zh = [p.piece for p in load_proto(shared_data / "tokenizers/chinese-llama-sp/chinese_sp.model").pieces
          if p.type == NORMAL and p.piece not in have][:N_ZH]  # fmt: skip
    out = tmp_path_factory.mktemp("tok") / "tok_zh"
    write_hf_tokenizer(append_pieces(src, [*zh, "▁中国", "▁princess"]), out)
    return out


@pytest.fixture(scope="module")
def expanded(stories: Path, tok_zh: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exp") / "stories-zh"
    assert expand(stories, tok_zh, out, "--pad-to-multiple-of", "64") == 0
    return out


def expand(model: Path, tok: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "model",
            "expand",
            "--model",
            str(model),
            "--tokenizer",
            str(tok),
            "--out",
            str(out),
            *extra,
        ]
    )


def tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        with safe_open(f, framework="pt") as st:
            out.update({k: st.get_tensor(k) for k in st.keys()})  # noqa: SIM118
    return out


def max_old_logit_error(src: Path, dst: Path, n_old: int) -> float:
    a = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    b = AutoModelForCausalLM.from_pretrained(dst, dtype=torch.float32).eval()
    ids = torch.randint(0, n_old, (4, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return (a(ids).logits - b(ids).logits[..., :n_old]).abs().max().item()


def test_known_values_of_subtoken_mean_init(stories: Path, expanded: Path) -> None:
    old = tensors(stories)["model.embed_tokens.weight"]
    new = tensors(expanded)["model.embed_tokens.weight"]
    tok = AutoTokenizer.from_pretrained(expanded)
    vocab = tok.get_vocab()
    byte = {b: 3 + b for b in range(256)}  # tok512: <0x00> is id 3
    ws = 410  # tok512's lone "▁"
    zhong = [byte[b] for b in "中".encode()]  # E4 B8 AD
    guo = [byte[b] for b in "国".encode()]
    expect = {
        # word-internal piece: its UTF-8 bytes only, NOT the dummy-prefix "▁" Colossal averages in
        "中": old[zhong].mean(0),
        # word-initial piece: its own "▁" counts
        "▁中国": old[[ws, *zhong, *guo]].mean(0),
        # tok512 segments " princess" as ▁p r in ce s s
        "▁princess": old[[282, 420, 271, 331, 419, 419]].mean(0),
    }
    for piece, row in expect.items():
        torch.testing.assert_close(new[vocab[piece]], row, rtol=0, atol=1e-7)
    assert not torch.allclose(new[vocab["中"]], old[[ws, *zhong]].mean(0))
    assert torch.equal(new[:512], old)  # old rows bit for bit
    assert new.shape[0] == 768 and torch.count_nonzero(new[len(tok) :]) == 0  # zero padding rows
    summary = json.loads((expanded / "langgraft.json").read_text())
    assert summary["padding_rows"] == [len(tok), 768]
    assert summary["model_expand"]["n_added"] == N_ZH + 2


def test_function_preserved_tied(stories: Path, expanded: Path) -> None:
    err = max_old_logit_error(stories, expanded, 512)
    assert err <= 1e-6, err


def test_output_loads_with_auto_classes(expanded: Path, tok_zh: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(expanded)
    tok = AutoTokenizer.from_pretrained(expanded)
    assert len(tok) == 512 + N_ZH + 2 <= model.config.vocab_size == 768
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    text = "从前有一个小女孩, Lily, 在中国。"
    assert tok(text).input_ids == load_tokenizer(tok_zh)(text).input_ids
    gen = json.loads((expanded / "generation_config.json").read_text())
    assert gen["suppress_tokens"] == list(range(len(tok), 768))


def test_untied_sharded_bf16(shared_data: Path, tok_zh: Path, tmp_path: Path) -> None:
    """A random untied model saved in two shards; expanded with --dtype bf16 and mean init."""
    src = tmp_path / "untied"
    cfg = LlamaConfig(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(src, max_shard_size="40KB")
    write_hf_tokenizer(load_proto(shared_data / "models/stories260K/tok512.model"), src)
    assert (src / "model.safetensors.index.json").is_file()
    out = tmp_path / "out"
    assert expand(src, tok_zh, out, "--init", "mean", "--dtype", "bf16") == 0
    old, new = tensors(src), tensors(out)
    assert set(old) == set(new) and len(list(out.glob("*.safetensors"))) > 1
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert new[name].dtype == torch.bfloat16 and new[name].shape[0] == 512 + N_ZH + 2
        assert torch.equal(new[name][:512], old[name].bfloat16())
        want = old[name].mean(0).bfloat16().expand(N_ZH + 2, -1)
        assert torch.equal(new[name][512:], want)  # each matrix from its own old rows
    assert not torch.equal(new["lm_head.weight"][512:], new["model.embed_tokens.weight"][512:])
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == sum(
        t.numel() * t.element_size() for t in new.values()
    )
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.bfloat16 and not model.config.tie_word_embeddings


def test_function_preserved_untied_fp32(shared_data: Path, tok_zh: Path, tmp_path: Path) -> None:
    src = tmp_path / "untied"
    cfg = LlamaConfig(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)  # fmt: skip
    torch.manual_seed(1)
    LlamaForCausalLM(cfg).save_pretrained(src)
    write_hf_tokenizer(load_proto(shared_data / "models/stories260K/tok512.model"), src)
    assert expand(src, tok_zh, tmp_path / "out", "--pad-to-multiple-of", "128") == 0
    err = max_old_logit_error(src, tmp_path / "out", 512)
    assert err <= 1e-6, err


@pytest.mark.parametrize("method", ["zeros", "mean-cov"])
def test_other_init_methods(stories: Path, tok_zh: Path, tmp_path: Path, method: str) -> None:
    assert expand(stories, tok_zh, tmp_path / "a", "--init", method, "--seed", "3") == 0
    old = tensors(stories)["model.embed_tokens.weight"]
    new = tensors(tmp_path / "a")["model.embed_tokens.weight"][512:]
    if method == "zeros":
        assert torch.count_nonzero(new) == 0
        return
    # 1e-9 x covariance: samples sit within ~1e-4 of the mean but are not all equal
    assert (new - old.mean(0)).abs().max() < 1e-3
    assert not torch.equal(new[0], new[1])
    assert expand(stories, tok_zh, tmp_path / "b", "--init", method, "--seed", "3") == 0
    assert torch.equal(tensors(tmp_path / "b")["model.embed_tokens.weight"][512:], new)


def test_expanding_an_expanded_padded_model(expanded: Path, tok_zh: Path, tmp_path: Path) -> None:
    """Padding rows recorded in langgraft.json are dropped, not mistaken for a tokenizer mismatch."""
    proto = append_pieces(load_proto(tok_zh / "tokenizer.model"), ["龙", "凤"])
    write_hf_tokenizer(proto, tmp_path / "tok2")
    assert expand(expanded, tmp_path / "tok2", tmp_path / "out") == 0
    new = tensors(tmp_path / "out")["model.embed_tokens.weight"]
    assert new.shape[0] == len(proto.pieces)
    assert "padding_rows" not in json.loads((tmp_path / "out/langgraft.json").read_text())
    assert "suppress_tokens" not in json.loads(
        (tmp_path / "out/generation_config.json").read_text()
    )


def bad_inputs(
    stories: Path, tok_zh: Path, shared_data: Path, tmp: Path
) -> dict[str, tuple[Path, Path, str]]:
    """name -> (model dir, tokenizer, expected message fragment)."""
    swapped = load_proto(tok_zh / "tokenizer.model")
    swapped.pieces[300].piece, swapped.pieces[301].piece = (
        swapped.pieces[301].piece,
        swapped.pieces[300].piece,
    )
    write_hf_tokenizer(swapped, tmp / "swapped")
    small = load_proto(shared_data / "models/stories260K/tok512.model")
    del small.pieces[-10:]
    write_hf_tokenizer(small, tmp / "small")
    mismatch = tmp / "mismatch"
    shutil.copytree(stories, mismatch)
    shutil.copyfile(shared_data / "tokenizers/llama2/tokenizer.model", mismatch / "tokenizer.model")
    no_config = tmp / "no_config"
    shutil.copytree(stories, no_config)
    (no_config / "config.json").unlink()
    no_weights = tmp / "no_weights"
    shutil.copytree(stories, no_weights)
    (no_weights / "model.safetensors").unlink()
    return {
        "not a superset": (stories, tmp / "swapped", "id 300"),
        "smaller target": (stories, tmp / "small", "fewer than the source's 512"),
        "llama2 vocab is not tok512's": (
            stories,
            shared_data / "tokenizers/llama2/tokenizer.model",
            "id 259 ",
        ),
        "tokenizer/model mismatch": (mismatch, tok_zh, "tokenizer/model mismatch"),
        "missing config": (no_config, tok_zh, "no config.json"),
        "missing weights": (no_weights, tok_zh, "no model.safetensors"),
        "missing tokenizer": (stories, tmp / "nope.model", "no such file"),
        "missing model": (tmp / "nope", tok_zh, "no such model directory"),
    }


def test_bad_input_exit_2_nothing_written(stories: Path, tok_zh: Path, shared_data: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    cases = bad_inputs(stories, tok_zh, shared_data, tmp_path)
    outs = tmp_path / "outs"
    outs.mkdir()
    for name, (model, tok, fragment) in cases.items():
        rc = expand(model, tok, outs / "x")
        err = capsys.readouterr().err
        assert rc == 2, name
        assert err.count("\n") == 1 and fragment in err, (name, err)
        assert list(outs.iterdir()) == [], name  # no output, no scratch directory left


def test_existing_output_is_refused(stories: Path, tok_zh: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert expand(stories, tok_zh, out) == 2
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
