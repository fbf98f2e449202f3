"""Byte-level BPE expansion on Meta's real Llama-3 tiktoken file and the real shared corpora.

Oracles: tiktoken's own encoding of the original ranks file (English ids unchanged), decode(encode)
on every line of every corpus, special-token ids, AutoTokenizer, and `model expand` rows equal to
the mean of the source rows of each new token's old segmentation.
"""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from langgraft.__main__ import main
from langgraft.tokenizer.bytelevel_source import (
    LLAMA3_PATTERN,
    LLAMA3_SPECIALS,
    read_tiktoken_ranks,
)
from langgraft.tokenizer.sources import expand_paths, iter_texts

pytestmark = pytest.mark.slow
N_NEW = 6000


def lines_of(*paths):
    out: list[str] = []
    for f in expand_paths(list(paths)):
        if f.name == "jieba_dict.txt":
            continue
        for text, _ in iter_texts(f):
            out.extend(text.split("\n"))
    return out


@pytest.fixture(scope="session")
def llama3_file(shared_data):
    return shared_data / "tokenizers" / "llama3" / "tokenizer.model"


@pytest.fixture(scope="session")
def tiktoken_llama3(llama3_file):
    """tiktoken's Encoding of the original file (the oracle), built once per session."""
    tiktoken = pytest.importorskip("tiktoken", reason="dev extra: tiktoken==0.14.0")
    ranks = read_tiktoken_ranks(llama3_file)
    specials = {s: len(ranks) + i for i, s in enumerate(LLAMA3_SPECIALS)}
    return tiktoken.Encoding(
        "llama3", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens=specials
    )


@pytest.fixture(scope="session")
def llama3_zh(tmp_path_factory, shared_data, llama3_file):
    """Llama-3 + 6,000 merges learned from the modern corpus (its last 10% held out)."""
    out = tmp_path_factory.mktemp("l3") / "tok"
    rc = main(
        [
            "tokenizer", "expand", "--source", str(llama3_file),
            "--learn-from", str(shared_data / "corpus" / "zh-modern"),
            "--hold-out", "0.1", "--min-count", "3", "--no-measure-keep-cost",
            "--target-size", str(128256 + N_NEW), "--out", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    return out


@pytest.fixture(scope="session")
def corpora(shared_data):
    d = shared_data / "corpus"
    return {
        "en": lines_of(d / "en"),
        "zh": lines_of(d / "zh"),
        "zh-modern": lines_of(d / "zh-modern"),
    }


@pytest.fixture(scope="session")
def fast(llama3_zh):
    """The expanded tokenizer.json as `tokenizers` runs it (what AutoTokenizer wraps)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(llama3_zh / "tokenizer.json"))


def test_english_ids_equal_tiktoken(fast, tiktoken_llama3, corpora):
    en = corpora["en"]
    ours = [e.ids for e in fast.encode_batch(en, add_special_tokens=False)]
    theirs = tiktoken_llama3.encode_ordinary_batch(en)
    diff = [i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b]
    assert not diff, f"{len(diff)} English lines differ, first {en[diff[0]][:80]!r}"
    # ...and the expansion does act on Chinese: fewer tokens than tiktoken's.
    zh = corpora["zh-modern"][::10]
    n_new = sum(len(e.ids) for e in fast.encode_batch(zh, add_special_tokens=False))
    n_old = sum(map(len, tiktoken_llama3.encode_ordinary_batch(zh)))
    assert n_new < 0.85 * n_old


def test_round_trip_every_line(fast, corpora):
    for name, lines in corpora.items():
        ids = [e.ids for e in fast.encode_batch(lines, add_special_tokens=False)]
        back = fast.decode_batch(ids, skip_special_tokens=False)
        bad = [x for x, y in zip(lines, back, strict=True) if x != y]
        assert not bad, f"{name}: {len(bad)} lines do not round-trip, first {bad[0][:80]!r}"


def test_special_tokens_keep_ids(llama3_zh, tiktoken_llama3):
    tok = AutoTokenizer.from_pretrained(str(llama3_zh))
    for s in LLAMA3_SPECIALS:
        assert tok.convert_tokens_to_ids(s) == tiktoken_llama3.encode_single_token(s)
    ids = tok("<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>")["input_ids"]
    assert ids[0] == tok.bos_token_id == 128000 and ids[-1] == 128009
    assert tok.eos_token == "<|end_of_text|>" and len(tok) == 128256 + N_NEW


def test_new_tokens_are_merges_recorded_in_expansion_json(llama3_zh):
    data = json.loads((llama3_zh / "tokenizer.json").read_text())
    info = json.loads((llama3_zh / "expansion.json").read_text())
    assert len(data["added_tokens"]) == 256  # only Llama-3's special tokens
    added = info["added_pieces"]
    assert len(added) == info["added"] == N_NEW
    assert [a["id"] for a in added] == list(range(128256, 128256 + N_NEW))
    # The learned merges follow all of the source's merges, in order, one per new token.
    tail = data["model"]["merges"][-info["merges_added"] :]
    assert ["".join(m) for m in tail][-1] == added[-1]["token"]
    assert info["special_token_ids_moved"] == {}
    assert info["special_tokens"]["<|eot_id|>"] == 128009
    held = info["held_out"]
    assert held["samples"] > 50 and 0 <= held["never_used"] < N_NEW
    assert held["tokens_per_char"] < held["tokens_per_char_source"]
    assert "keep_segmentation_cost" not in held  # --no-measure-keep-cost


def test_model_expand_on_bytelevel_tokenizer(tmp_path, llama3_file, llama3_zh, fast):
    import torch
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM

    from langgraft.tokenizer.bytelevel import write_bytelevel_dir
    from langgraft.tokenizer.bytelevel_source import load_bytelevel_source

    src_dir = tmp_path / "tiny-l3"
    cfg = LlamaConfig(
        vocab_size=128256, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(src_dir)
    source = load_bytelevel_source(llama3_file)
    write_bytelevel_dir(source, src_dir)
    out = tmp_path / "tiny-l3-zh"
    rc = main(["model", "expand", "--model", str(src_dir), "--tokenizer", str(llama3_zh),
               "--out", str(out)])  # fmt: skip
    assert rc == 0
    name = "model.embed_tokens.weight"
    old = load_file(src_dir / "model.safetensors")[name]
    new = load_file(out / "model.safetensors")[name]
    assert new.shape == (128256 + N_NEW, 8) and torch.equal(new[:128256], old)
    src_tok = source.tokenizer()
    checked = 0
    for j in range(128256, 128256 + 200):
        text = fast.decode([j])
        if all("\u4e00" <= c <= "\u9fff" for c in text):  # whole CJK characters only
            # its row is the mean of the rows of the source's tokens for the same text
            sub = src_tok.encode(text, add_special_tokens=False).ids
            assert len(sub) > 1 and torch.allclose(new[j], old[sub].mean(0), atol=1e-6)
            checked += 1
    assert checked > 50
    info = json.loads((out / "langgraft.json").read_text())["model_expand"]
    assert info["n_added"] == N_NEW and info["n_init_from_global_mean"] == 0
    assert len(AutoTokenizer.from_pretrained(str(out))) == 128256 + N_NEW


def test_report_side_by_side(tmp_path, capsys, shared_data, llama2_model, llama3_file, llama3_zh):
    """SentencePiece model, tiktoken ranks file and tokenizer.json directory in one table."""
    argv = ["tokenizer", "report", "--tokenizer", str(llama2_model), str(llama3_file),
            str(llama3_zh), "--names", "llama2", "llama3", "llama3-zh",
            "--corpus", str(shared_data / "corpus" / "zh-modern"), "--tail", "0.1",
            "--out", str(tmp_path / "rep")]  # fmt: skip
    assert main(argv) == 0
    rows = {r["tokenizer"]: r for r in json.loads((tmp_path / "rep" / "report.json").read_text())}
    assert (
        rows["llama3"]["vocab_size"] == 128256 and rows["llama3-zh"]["vocab_size"] == 128256 + N_NEW
    )
    held = json.loads((llama3_zh / "expansion.json").read_text())["held_out"]
    # --tail 0.1 is the split --hold-out 0.1 kept out: the same figures as expansion.json
    assert rows["llama3-zh"]["tokens_per_char"] == pytest.approx(held["tokens_per_char"])
    assert rows["llama3"]["tokens_per_char"] == pytest.approx(held["tokens_per_char_source"])
    assert rows["llama3-zh"]["tokens_per_char"] < rows["llama3"]["tokens_per_char"]
    assert rows["llama2"]["tokens_per_char"] > rows["llama3"]["tokens_per_char"]
