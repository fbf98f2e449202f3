"""Byte-level BPE expansion on a small synthetic tiktoken file: learned merges, the segmentation
guarantee, errors. The real Llama-3 file is in tests/integration/test_tokenizer_bytelevel.py."""

from __future__ import annotations

import base64
import json

import pytest
from tokenizers import Tokenizer

from langgraft.__main__ import main
from langgraft.errors import UserError
from langgraft.tokenizer.bytelevel import token_kind
from langgraft.tokenizer.bytelevel_source import LLAMA3_PATTERN, load_bytelevel_source
from langgraft.tokenizer.learn import ANCHOR, BLOCKED, PLAIN, cut_fragments

ENGLISH = ["the cat sat on the mat", "then they went there", "  indented\tline\n", "x = f(42)"]
CHINESE = (
    "我们的软件可以帮助你打开文件。我们的文件在这里。" * 20
    + "\n"
    + "文件打开了，帮助你的软件。" * 20
)


def write_ranks(path, merges):
    """256 byte tokens, then each merge (bytes) in rank order."""
    tokens = [bytes([b]) for b in range(256)] + merges
    path.write_text("".join(f"{base64.b64encode(t).decode()} {i}\n" for i, t in enumerate(tokens)))
    return path


@pytest.fixture
def ranks(tmp_path):
    """A few English merges, and each Chinese character of the test text as one token (as in
    Llama-3, which has most CJK characters; a character split into three single bytes cannot be
    learned under --keep-segmentation, since two bare continuation bytes say nothing)."""
    merges = [b"th", b"the", b" t", b" the", b"at", b"he"]
    for ch in dict.fromkeys(CHINESE.replace("\n", "")):
        b = ch.encode()
        merges += [m for m in (b[:2], b) if m not in merges]
    return write_ranks(tmp_path / "tiny.tiktoken", merges)


def expand(tmp_path, source, *args):
    out = tmp_path / "out"
    argv = ["tokenizer", "expand", "--source", str(source), "--out", str(out), *args]
    assert main(argv) == 0
    return out


def test_token_kinds():
    assert token_kind(b"hello") == PLAIN
    assert token_kind(" 帮".encode()) == ANCHOR
    assert token_kind("，".encode()) == ANCHOR  # fullwidth punctuation: never in English text
    assert token_kind("é".encode()) == PLAIN  # Latin script stays protected
    assert token_kind("中".encode()[:2]) == ANCHOR  # the start of a CJK character
    assert token_kind("é".encode()[:1]) == PLAIN
    assert token_kind("中".encode()[1:]) == PLAIN  # a tail alone says nothing


def test_cut_fragments_keeps_plain_pairs_apart():
    kinds = bytes([PLAIN, PLAIN, ANCHOR, BLOCKED, PLAIN])
    assert list(cut_fragments([0, 1, 2, 0, 3, 4, 2], kinds, True)) == [(0,), (1, 2, 0), (4, 2)]
    assert list(cut_fragments([0, 1, 2, 3, 4], kinds, False)) == [(0, 1, 2), (4,)]


def test_learned_merges_keep_english_and_shorten_chinese(tmp_path, ranks):
    corpus = tmp_path / "zh.txt"
    corpus.write_text(CHINESE + "\n" + "the cat the mat the hat\n" * 50, encoding="utf-8")
    out = expand(tmp_path, ranks, "--pattern", LLAMA3_PATTERN, "--learn-from", str(corpus),
                 "--target-size", "320", "--min-count", "2")  # fmt: skip
    src = load_bytelevel_source(ranks, LLAMA3_PATTERN).tokenizer()
    new = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert new.get_vocab_size() == 320
    for line in ENGLISH:
        assert new.encode(line).ids == src.encode(line).ids
    zh = CHINESE[:200]
    assert len(new.encode(zh).ids) < 0.3 * len(src.encode(zh).ids)
    assert new.decode(new.encode(CHINESE).ids) == CHINESE
    info = json.loads((out / "expansion.json").read_text())
    n_src = info["source_size"]
    assert n_src == len(ranks.read_text().splitlines()) and info["final_size"] == 320
    assert all(a["id"] >= n_src for a in info["added_pieces"])
    assert all(any("\u4e00" <= c <= "\u9fff" or c in "，。" for c in a["text"])
               for a in info["added_pieces"])  # fmt: skip


def test_no_keep_segmentation_may_merge_english(tmp_path, ranks):
    corpus = tmp_path / "en.txt"
    corpus.write_text("the cat sat on the mat\n" * 100)
    out = expand(tmp_path, ranks, "--pattern", LLAMA3_PATTERN, "--learn-from", str(corpus),
                 "--target-size", "306", "--no-keep-segmentation")  # fmt: skip
    new = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert "\u0120cat" in new.get_vocab()  # " cat": allowed only without the guarantee
    assert len(new.encode("the cat sat").ids) < 5


def test_min_count_floor_and_held_out_figures(tmp_path, ranks):
    corpus = tmp_path / "zh.txt"
    corpus.write_text("\n".join(["独一无二的句子"] + [CHINESE] * 9), encoding="utf-8")
    out = expand(tmp_path, ranks, "--pattern", LLAMA3_PATTERN, "--learn-from", str(corpus),
                 "--target-size", "100000", "--min-count", "50", "--hold-out", "0.2")  # fmt: skip
    info = json.loads((out / "expansion.json").read_text())
    assert info["stopped_early"] and info["final_size"] < 1000  # the floor stops learning
    held = info["held_out"]
    assert not any("独" in a["text"] for a in info["added_pieces"])  # seen once: below the floor
    assert held["samples"] == 3 and held["tokens_per_char"] < held["tokens_per_char_source"]
    cost = held["keep_segmentation_cost"]
    assert cost["this_run"] == "keep" and cost["relative_cost"] >= -1e-9


def test_tokenizer_json_directory_source(tmp_path, ranks):
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    load_bytelevel_source(ranks, LLAMA3_PATTERN).tokenizer().save(str(src_dir / "tokenizer.json"))
    corpus = tmp_path / "zh.txt"
    corpus.write_text(CHINESE, encoding="utf-8")
    out = expand(tmp_path, src_dir, "--learn-from", str(corpus), "--target-size", "310")
    assert Tokenizer.from_file(str(out / "tokenizer.json")).get_vocab_size() == 310


def test_errors_name_the_file_and_line(tmp_path, ranks, capsys):
    bad = tmp_path / "bad.tiktoken"
    bad.write_text(ranks.read_text() + "not-base64!! 7\n")
    with pytest.raises(UserError, match=r"bad.tiktoken:299: expected `base64-token rank`"):
        load_bytelevel_source(bad, LLAMA3_PATTERN)
    with pytest.raises(UserError, match="not Meta's Llama-3 file; pass its pre-tokenizer"):
        load_bytelevel_source(ranks)
    corpus = tmp_path / "c.txt"
    corpus.write_text(CHINESE, encoding="utf-8")
    argv = ["tokenizer", "expand", "--source", str(ranks), "--pattern", LLAMA3_PATTERN,
            "--merge-sp", str(ranks), "--target-size", "300", "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 2
    assert "byte-level BPE source grows only by learned merges" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_sweep_table_png_and_knee(tmp_path, ranks):
    from langgraft.tokenizer.sweep import knee, parse_sizes

    assert parse_sizes("300:310:5") == [300, 305, 310] and parse_sizes("9,3") == [3, 9]
    assert knee([0, 1, 2, 3], [1.0, 0.3, 0.2, 0.1]) == 1
    corpus = tmp_path / "zh.txt"
    corpus.write_text("\n".join([CHINESE] * 10), encoding="utf-8")
    out = tmp_path / "sweep"
    argv = ["tokenizer", "sweep", "--source", str(ranks), "--pattern", LLAMA3_PATTERN,
            "--learn-from", str(corpus), "--hold-out", "0.2", "--sizes", "299,305,315,320",
            "--hidden-size", "8", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    rows = json.loads((out / "sweep.json").read_text())
    assert [r["vocab_size"] for r in rows] == [299, 305, 315, 320]
    rates = [r["tokens_per_char[held-out tail]"] for r in rows]
    assert rates == sorted(rates, reverse=True) and rates[-1] < rates[0]
    assert rows[1]["embedding_params_added"] == (305 - 298) * 8 * 2
    assert sum(r["knee"] for r in rows) == 1
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 305" in (out / "sweep.md").read_text()


def test_report_reads_a_tiktoken_file(tmp_path, ranks, capsys):
    from langgraft.tokenizer.bytelevel_source import looks_like_tiktoken

    assert looks_like_tiktoken(ranks)
    corpus = tmp_path / "c.txt"
    corpus.write_text(CHINESE, encoding="utf-8")
    argv = ["tokenizer", "report", "--tokenizer", str(ranks), "--corpus", str(corpus)]
    assert main(argv) == 2
    assert "pass its pre-tokenizer regex" in capsys.readouterr().err
    assert main([*argv, "--pattern", LLAMA3_PATTERN, "--tail", "0.5"]) == 0
    row = capsys.readouterr().out.splitlines()[-1]
    assert "| c.txt | tiny.tiktoken | 298 |" in row
