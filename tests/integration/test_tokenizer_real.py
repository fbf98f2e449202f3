"""Tokenizer expansion on the real LLaMA-2 tokenizer and the real shared corpora.

Oracles: the 49,953-piece Chinese-LLaMA merge, slow (sentencepiece) == fast (tokenizers) on every
line of the zh and en corpora, decode(encode(x)) == x, and zero changed lines of English.
"""

from __future__ import annotations

import json

import pytest
import sentencepiece as spm
from transformers import AutoTokenizer

from langgraft.__main__ import main
from langgraft.tokenizer.sources import expand_paths, iter_texts

pytestmark = pytest.mark.slow


def corpus_lines(shared_data, lang):
    lines: list[str] = []
    for f in expand_paths([shared_data / "corpus" / lang]):
        if f.name == "jieba_dict.txt":
            continue  # a word list, covered by the learned run
        for text, _ in iter_texts(f):
            lines.extend(text.split("\n"))
    return lines


@pytest.fixture(scope="module")
def zh(shared_data):
    return corpus_lines(shared_data, "zh")


@pytest.fixture(scope="module")
def en(shared_data):
    lines = corpus_lines(shared_data, "en")
    assert any("<unk>" in x for x in lines)  # WikiText's literal <unk> is exercised
    return lines


def _expand(tmp_path_factory, name, source, *args):
    out = tmp_path_factory.mktemp(name) / "tok"
    assert main(["tokenizer", "expand", "--source", str(source), "--out", str(out), *args]) == 0
    return out


@pytest.fixture(scope="module")
def merged_49953(tmp_path_factory, shared_data, llama2_model):
    csp = shared_data / "tokenizers" / "chinese-llama-sp" / "chinese_sp.model"
    return _expand(
        tmp_path_factory, "cn", llama2_model, "--merge-sp", str(csp), "--no-keep-segmentation"
    )


@pytest.fixture(scope="module")
def merged_keep(tmp_path_factory, shared_data, llama2_model):
    csp = shared_data / "tokenizers" / "chinese-llama-sp" / "chinese_sp.model"
    return _expand(tmp_path_factory, "keep", llama2_model, "--merge-sp", str(csp))


@pytest.fixture(scope="module")
def learned(tmp_path_factory, shared_data, llama2_model):
    zh = shared_data / "corpus" / "zh"
    return _expand(
        tmp_path_factory,
        "learn",
        llama2_model,
        "--learn-from",
        str(zh / "hongloumeng.txt"),
        str(zh / "chinese-poetry"),
        "--target-size",
        "40000",
        "--hold-out",
        "0.1",
        "--min-count",
        "3",
        "--no-measure-keep-cost",
    )


def assert_slow_equals_fast(tok_dir, lines):
    sp = spm.SentencePieceProcessor(model_file=str(tok_dir / "tokenizer.model"))
    fast = AutoTokenizer.from_pretrained(str(tok_dir))
    slow_ids = sp.encode(lines)
    fast_ids = fast(lines, add_special_tokens=False)["input_ids"]
    diff = [i for i, (a, b) in enumerate(zip(slow_ids, fast_ids, strict=True)) if a != b]
    assert not diff, f"{len(diff)} lines differ, first: {lines[diff[0]][:80]!r}"
    bad_rt = [x for x, ids in zip(lines, slow_ids, strict=True) if fast.decode(ids) != x]
    assert not bad_rt, f"{len(bad_rt)} lines do not round-trip, first: {bad_rt[0][:80]!r}"
    return slow_ids


def assert_english_unchanged(tok_dir, llama2_model, en):
    before = spm.SentencePieceProcessor(model_file=str(llama2_model)).encode(en)
    after = spm.SentencePieceProcessor(model_file=str(tok_dir / "tokenizer.model")).encode(en)
    changed = sum(a != b for a, b in zip(before, after, strict=True))
    assert changed == 0, f"{changed} English lines tokenize differently"


def test_chinese_llama_merge_known_answer(merged_49953, zh, en):
    info = json.loads((merged_49953 / "expansion.json").read_text())
    assert info["final_size"] == 49953
    assert len(AutoTokenizer.from_pretrained(str(merged_49953))) == 49953
    assert_slow_equals_fast(merged_49953, zh)
    assert_slow_equals_fast(merged_49953, en)


def test_merge_keep_segmentation(merged_keep, llama2_model, zh, en):
    info = json.loads((merged_keep / "expansion.json").read_text())
    assert info["unreachable"] == 0 and info["final_size"] > 45000
    assert_english_unchanged(merged_keep, llama2_model, en)
    ids = assert_slow_equals_fast(merged_keep, zh)
    assert_slow_equals_fast(merged_keep, en)
    n_tokens = sum(map(len, ids))
    base = sum(map(len, spm.SentencePieceProcessor(model_file=str(llama2_model)).encode(zh)))
    assert n_tokens < 0.6 * base  # Chinese got much shorter


def test_learned_pieces(learned, llama2_model, zh, en):
    info = json.loads((learned / "expansion.json").read_text())
    assert info["final_size"] == 40000 and info["unreachable"] == 0
    assert info["never_used_on_corpus"] is not None and info["check_corpus_samples"] > 1000
    held = info["held_out"]  # the last 10% of each corpus, never learned from
    assert held["samples"] > 500 and 0 < held["never_used"] < info["added"]
    assert held["tokens_per_char"] < 0.7 * held["tokens_per_char_source"]
    assert info["sources"]["learner"] == "merges" and info["added_intermediate"] < 50
    assert_english_unchanged(learned, llama2_model, en)
    assert_slow_equals_fast(learned, zh)
    assert_slow_equals_fast(learned, en[:5000])


def test_report_outputs(tmp_path, capsys, shared_data, llama2_model, merged_keep):
    out = tmp_path / "rep"
    zh_file = shared_data / "corpus" / "zh" / "hongloumeng.txt"
    rc = main(
        [
            "tokenizer",
            "report",
            "--tokenizer",
            str(llama2_model),
            str(merged_keep),
            "--names",
            "llama2",
            "zh",
            "--corpus",
            str(zh_file),
            str(shared_data / "corpus" / "en" / "tinyshakespeare.txt"),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    table = capsys.readouterr().out
    assert "| hongloumeng.txt | zh |" in table and "tokens/char" in table
    rows = json.loads((out / "report.json").read_text())
    by = {(r["corpus"].rsplit("/", 1)[1], r["tokenizer"]): r for r in rows}
    base, new = by[("hongloumeng.txt", "llama2")], by[("hongloumeng.txt", "zh")]
    assert new["tokens_per_char"] < 0.6 * base["tokens_per_char"]
    assert new["relative_length"] == pytest.approx(new["tokens"] / base["tokens"])
    assert base["byte_fallback_share"] > 0.3 > new["byte_fallback_share"]
    shakespeare = [r for r in rows if r["corpus"].endswith("tinyshakespeare.txt")]
    assert shakespeare[0]["tokens"] == shakespeare[1]["tokens"]
    assert (out / "report.csv").read_text().startswith("tokenizer,corpus,")
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tok512_whitespace_folding_and_expansion(tmp_path_factory, shared_data, zh, en):
    """stories260K's tok512 folds runs of spaces (sentencepiece's default normalizer spec): the
    fast tokenizer must fold exactly like it, before and after adding Chinese pieces."""
    tok512 = shared_data / "models" / "stories260K" / "tok512.model"
    edge = ["  a  b  ", " ", "", "\t x \n", "x   ", "a \nb", " \u3000 x"]
    from langgraft.tokenizer import load_tokenizer

    sp = spm.SentencePieceProcessor(model_file=str(tok512))
    fast = load_tokenizer(tok512)
    lines = en + zh[:2000] + edge
    assert sp.encode(lines) == fast(lines, add_special_tokens=False)["input_ids"]
    out = _expand(
        tmp_path_factory,
        "tok512zh",
        tok512,
        "--learn-from",
        str(shared_data / "corpus" / "zh" / "hongloumeng.txt"),
        "--target-size",
        "4096",
    )
    new_sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    new_fast = AutoTokenizer.from_pretrained(str(out))
    assert new_sp.get_piece_size() == 4096
    assert new_sp.encode(lines) == new_fast(lines, add_special_tokens=False)["input_ids"]
    assert sp.encode(en) == new_sp.encode(en)  # English ids unchanged
    zh_tokens = sum(map(len, new_sp.encode(zh[:2000])))
    assert zh_tokens < 0.5 * sum(map(len, sp.encode(zh[:2000])))
