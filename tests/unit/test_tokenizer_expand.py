"""Tokenizer expansion: sources, rules, reachability and bad input (small, fast cases)."""

from __future__ import annotations

import gzip
import json
import random

import pytest
import sentencepiece as spm

from langgraft.__main__ import main
from langgraft.tokenizer.expand import reject_reason, segment
from langgraft.tokenizer.spmodel import NORMAL, load_proto


def expand(tmp_path, source, *args, name="out"):
    out = tmp_path / name
    rc = main(["tokenizer", "expand", "--source", str(source), "--out", str(out), *args])
    return rc, out


def pieces(path):
    return spm.SentencePieceProcessor(model_file=str(path / "tokenizer.model"))


def test_segment_matches_sentencepiece(shared_data):
    """Our BPE simulation (used to plan merge paths) agrees with sentencepiece itself."""
    model = shared_data / "models" / "stories260K" / "tok512.model"
    proto = load_proto(model)
    sp = spm.SentencePieceProcessor(model_file=str(model))
    scores = {p.piece: p.score for p in proto.pieces if p.type == NORMAL}
    rng = random.Random(0)
    words = "the a cat sat on mat and Lily Tim was happy dog ran big".split()
    for _ in range(300):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 8)))
        assert segment("▁" + text.replace(" ", "▁"), scores) == sp.encode_as_pieces(text)


@pytest.mark.parametrize(
    "piece,bad",
    [
        ("", True),
        ("<s>", True),
        ("<0x0A>", True),
        ("a b", True),
        ("a\tb", True),
        ("人工", False),
        ("▁人工", False),
    ],
)
def test_reject_reason(piece, bad):
    assert (reject_reason(piece) is not None) is bad


def test_four_char_word_is_made_reachable(tmp_path, llama2_model):
    f = tmp_path / "p.jsonl"
    f.write_text('{"piece": "人工智能"}\n{"piece": "人工智能"}\n')
    rc, out = expand(tmp_path, llama2_model, "--pieces", str(f))
    assert rc == 0
    sp = pieces(out)
    assert "人工智能" in sp.encode_as_pieces("我们研究人工智能。")
    info = json.loads((out / "expansion.json").read_text())
    assert info["unreachable"] == 0 and info["added"] == sp.get_piece_size() - 32000
    assert info["added_intermediate"] >= 1  # 人工智能 needs a path (e.g. 人工 or 智能)
    # Appended verbatim (Colossal/Chinese-LLaMA style), the same word never fires.
    rc, raw = expand(
        tmp_path, llama2_model, "--pieces", str(f), "--no-keep-segmentation", name="raw"
    )
    assert rc == 0
    assert "人工智能" not in pieces(raw).encode_as_pieces("我们研究人工智能。")
    assert json.loads((raw / "expansion.json").read_text())["unreachable"] == 1


def test_scores_distinct_and_below_source(tmp_path, llama2_model):
    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps({"piece": w}) + "\n" for w in ["你好", "世界", "中文"]))
    rc, out = expand(tmp_path, llama2_model, "--pieces", str(f))
    assert rc == 0
    src = load_proto(llama2_model)
    lowest = min(p.score for p in src.pieces if p.type == NORMAL and p.score > -1e8)
    new = [p.score for p in load_proto(out / "tokenizer.model").pieces[32000:]]
    assert len(set(new)) == len(new) and max(new) < lowest
    assert new == sorted(new, reverse=True)  # falling in insertion order


def test_freq_list_top_and_skips(tmp_path, llama2_model):
    f = tmp_path / "dict.txt"
    f.write_text("中国 300 ns\nthe 900 x\n你好 200 l\n一二 5 m\n世界 100 n\n")
    rc, out = expand(tmp_path, llama2_model, "--pieces", str(f), "--top", "3")
    assert rc == 0
    info = json.loads((out / "expansion.json").read_text())
    cands = [a["piece"] for a in info["added_pieces"] if a["role"] == "candidate"]
    assert cands == ["中国", "你好"]  # top 3 by frequency minus "the" (source merges t, h, e)
    skipped = {s["piece"]: s["reason"] for s in info["skipped_pieces"]}
    assert "the" in skipped and "世界" not in skipped and "世界" not in cands


def test_keep_segmentation_rejects_digits_and_latin(tmp_path, llama2_model):
    f = tmp_path / "p.jsonl"
    f.write_text('{"piece": "2016"}\n{"piece": "ing"}\n{"piece": "年2016"}\n{"piece": "年"}\n')
    rc, out = expand(tmp_path, llama2_model, "--pieces", str(f))
    info = json.loads((out / "expansion.json").read_text())
    reasons = {s["piece"]: s["reason"] for s in info["skipped_pieces"]}
    assert "digit" in reasons["2016"] and "digit" in reasons["年2016"]
    assert "ing" in reasons  # in the source already
    assert rc == 0


def test_autotokenizer_loads_result(tmp_path, llama2_model):
    from transformers import AutoTokenizer

    f = tmp_path / "p.jsonl"
    f.write_text('{"piece": "红楼梦"}\n')
    rc, out = expand(tmp_path, llama2_model, "--pieces", str(f))
    tok = AutoTokenizer.from_pretrained(str(out))
    sp = pieces(out)
    assert len(tok) == sp.get_piece_size()
    text = "读红楼梦 <unk> and </s> stay text"
    assert tok(text, add_special_tokens=False)["input_ids"] == sp.encode(text)
    assert tok(text)["input_ids"][0] == 1 and tok.decode(sp.encode(text)) == text
    for name in [
        "tokenizer.model",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "expansion.json",
    ]:
        assert (out / name).is_file()


# --- bad input: one clear line naming file and line, exit 2, nothing at the output path ---


def _assert_clean_failure(capsys, tmp_path, rc, out, *needles):
    err = capsys.readouterr().err
    assert rc == 2, err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")]
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "error:" in lines[0], err
    for n in needles:
        assert n in lines[0], lines[0]


def test_missing_source(tmp_path, capsys):
    f = tmp_path / "p.jsonl"
    f.write_text('{"piece": "你好"}\n')
    rc, out = expand(tmp_path, tmp_path / "nope.model", "--pieces", str(f))
    _assert_clean_failure(capsys, tmp_path, rc, out, "nope.model")


def test_corrupt_model(tmp_path, capsys):
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"\x00\xffnot a proto" * 10)
    f = tmp_path / "p.jsonl"
    f.write_text('{"piece": "你好"}\n')
    rc, out = expand(tmp_path, bad, "--pieces", str(f))
    _assert_clean_failure(capsys, tmp_path, rc, out, "bad.model", "not a SentencePiece model")


def test_bad_jsonl_line(tmp_path, capsys, llama2_model):
    f = tmp_path / "p.jsonl"
    f.write_text('{"piece": "你好"}\n{"piece": "世界"\n')
    rc, out = expand(tmp_path, llama2_model, "--pieces", str(f))
    _assert_clean_failure(capsys, tmp_path, rc, out, "p.jsonl:2", "invalid JSON")


def test_wrong_jsonl_shape(tmp_path, capsys, llama2_model):
    f = tmp_path / "p.jsonl"
    f.write_text('{"word": "你好"}\n')
    rc, out = expand(tmp_path, llama2_model, "--pieces", str(f))
    _assert_clean_failure(capsys, tmp_path, rc, out, "p.jsonl:1", '"piece"')


def test_non_utf8(tmp_path, capsys, llama2_model):
    f = tmp_path / "dict.txt"
    f.write_bytes("你好 3\n".encode() + "世界 2\n".encode("gbk"))
    rc, out = expand(tmp_path, llama2_model, "--pieces", str(f))
    _assert_clean_failure(capsys, tmp_path, rc, out, "dict.txt:2", "UTF-8")


def test_bad_word_list_line(tmp_path, capsys, llama2_model):
    f = tmp_path / "dict.txt"
    f.write_text("你好 3 n\n世界 lots of words here\n")
    rc, out = expand(tmp_path, llama2_model, "--pieces", str(f))
    _assert_clean_failure(capsys, tmp_path, rc, out, "dict.txt:2")


def test_learn_needs_target(tmp_path, capsys, llama2_model):
    f = tmp_path / "c.txt"
    f.write_text("你好世界\n")
    rc, out = expand(tmp_path, llama2_model, "--learn-from", str(f))
    _assert_clean_failure(capsys, tmp_path, rc, out, "--target-size")


def test_existing_output_refused(tmp_path, capsys, llama2_model):
    f = tmp_path / "p.jsonl"
    f.write_text('{"piece": "你好"}\n')
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    rc, _ = expand(tmp_path, llama2_model, "--pieces", str(f))
    assert rc == 2 and "already exists" in capsys.readouterr().err
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_invalid_pieces_reported_with_line(tmp_path, llama2_model):
    f = tmp_path / "p.jsonl.gz"
    with gzip.open(f, "wt", encoding="utf-8") as w:
        w.write('{"piece": ""}\n{"piece": "a b"}\n{"piece": "<0x41>"}\n{"piece": "好人"}\n')
    rc, out = expand(tmp_path, llama2_model, "--pieces", str(f))
    assert rc == 0
    info = json.loads((out / "expansion.json").read_text())
    origins = {s["origin"].rsplit(":", 1)[1]: s["reason"] for s in info["skipped_pieces"]}
    assert set(origins) == {"1", "2", "3"}
    assert "empty" in origins["1"] and "whitespace" in origins["2"] and "byte" in origins["3"]


def test_chained_expansion_from_hf_directory(tmp_path, llama2_model):
    """A HF tokenizer directory (our own output) is a valid source; old ids stay put."""
    f1, f2 = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    f1.write_text('{"piece": "你好"}\n')
    f2.write_text('{"piece": "世界"}\n')
    rc, first = expand(tmp_path, llama2_model, "--pieces", str(f1), name="first")
    assert rc == 0
    rc, second = expand(tmp_path, first, "--pieces", str(f2), name="second")
    assert rc == 0
    a, b = load_proto(first / "tokenizer.model"), load_proto(second / "tokenizer.model")
    assert [p.piece for p in b.pieces[: len(a.pieces)]] == [p.piece for p in a.pieces]
    assert pieces(second).encode_as_pieces("你好世界")[-2:] == ["你好", "世界"]


def test_learn_with_budget_below_character_count(tmp_path, shared_data):
    """A target smaller than the corpus alphabet still trains (most frequent characters win)."""
    tok512 = shared_data / "models" / "stories260K" / "tok512.model"
    corpus = tmp_path / "zh.txt"
    lines = (shared_data / "corpus" / "zh" / "hongloumeng.txt").read_text("utf-8").splitlines()
    corpus.write_text("\n".join(lines[:300]), encoding="utf-8")
    rc, out = expand(tmp_path, tok512, "--learn-from", str(corpus), "--target-size", "700")
    assert rc == 0
    info = json.loads((out / "expansion.json").read_text())
    assert info["final_size"] == 700 and info["skipped_by_reason"]["target size reached"] > 0
    assert "的" in {a["piece"] for a in info["added_pieces"]}


@pytest.mark.parametrize("learner", ["merges", "sentencepiece"])
def test_learners_on_sentencepiece_source(tmp_path, shared_data, learner):
    """Both learners reach the target; the merge learner's pieces need no intermediates (each is
    formed from two pieces present when it is added)."""
    tok512 = shared_data / "models" / "stories260K" / "tok512.model"
    corpus = tmp_path / "zh.txt"
    lines = (shared_data / "corpus" / "zh" / "hongloumeng.txt").read_text("utf-8").splitlines()
    corpus.write_text("\n".join(lines[:400]), encoding="utf-8")
    rc, out = expand(tmp_path, tok512, "--learn-from", str(corpus), "--target-size", "1500",
                     "--learner", learner)  # fmt: skip
    assert rc == 0
    info = json.loads((out / "expansion.json").read_text())
    assert info["final_size"] == 1500 and info["unreachable"] == 0
    assert info["sources"]["learner"] == learner
    if learner == "merges":
        assert info["added_intermediate"] == 0
