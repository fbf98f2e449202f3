"""`langgraft prepare pretrain` end to end on small inputs: masks, boundaries, chunking, buckets,
determinism, the jsonl mirror, every bad-input case, and the CLI surface."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from langgraft.__main__ import main
from langgraft.data.config import PrepareConfig
from langgraft.data.prepare import prepare

ROWS = [
    {"source": "Q: what is one plus one?", "target": " two", "category": "math"},
    {"source": "", "target": "Once upon a time there was a cat.", "category": "story"},
    {"target": "The dog ran home and slept.", "category": "story"},
    {"source": "Translate: cat", "target": " chat", "category": "math"},
] + [
    {"target": f"Story number {i} is about a bird that sang {i} songs.", "category": "story"}
    for i in range(40)
]


@pytest.fixture(scope="module")
def tok512(shared_data: Path) -> Path:
    return shared_data / "models" / "stories260K" / "tok512.model"


def _jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _cfg(inputs: list[str], tok: Path, out: Path, **kw) -> PrepareConfig:
    kw.setdefault("max_length", 64)
    kw.setdefault("num_bins", 2)
    return PrepareConfig(input=inputs, tokenizer=tok, out=out, progress=False, **kw)


def _segments(row: dict) -> list[tuple[list[int], list[int]]]:
    out, start = [], 0
    for n in row["doc_lens"]:
        out.append(
            (list(row["input_ids"][start : start + n]), list(row["labels"][start : start + n]))
        )
        start += n
    return out


def test_pretrain_masks_boundaries_buckets_and_accounting(tmp_path: Path, tok512: Path) -> None:
    import datasets

    from langgraft.tokenizer.hf import load_tokenizer

    data = _jsonl(tmp_path / "in" / "a.jsonl", ROWS)
    result = prepare(_cfg([str(data)], tok512, tmp_path / "out"))
    m = result.manifest
    tok = load_tokenizer(tok512)
    expected = []
    for r in ROWS:
        # the row tokenized whole; trained: the tokens that begin in the target
        cut = len(r.get("source") or "")
        got = tok(r.get("source", "") + r["target"], add_special_tokens=False,
                  return_offsets_mapping=True)  # fmt: skip
        ids = [tok.bos_token_id, *got.input_ids, tok.eos_token_id]
        pairs = zip(got.input_ids, got.offset_mapping, strict=True)
        trained = [i if a >= cut else -100 for i, (a, _) in pairs]
        labels = [-100, *trained, tok.eos_token_id]
        expected.append((ids, labels, r["category"]))
    dd = datasets.load_from_disk(str(tmp_path / "out"))
    assert list(dd) == ["bucket_00", "bucket_01"]
    got = []
    for name in dd:
        assert dd[name].features["input_ids"].feature.dtype == "int32"
        for row in dd[name]:
            assert len(row["input_ids"]) <= 64 and sum(row["doc_lens"]) == len(row["input_ids"])
            for ids, labels in _segments(row):
                assert labels[0] == -100, "no loss across a document boundary"
                got.append((ids, labels, row["category"]))
    # every document appears exactly once, whole, with source (and BOS) masked
    assert sorted(map(repr, got)) == sorted(map(repr, expected))
    c = m["counts"]
    assert c["rows"] == {
        "in": len(ROWS), "packed": len(ROWS), "rejected": {}, "boundary_inside_token": 0
    }  # fmt: skip
    assert (
        c["tokens"]["target_in"]
        == c["tokens"]["supervised_out"]
        == sum(sum(1 for x in e[1] if x != -100) for e in expected)
    )
    assert c["tokens"]["out"] == sum(len(e[0]) for e in expected)
    assert set(m["categories"]) == {"math", "story"}
    # bucket k = bin k of every category
    for k, bucket in enumerate(m["buckets"]):
        for cat, n in bucket["categories"].items():
            assert m["categories"][cat]["bins"][k]["sequences"] == n
        assert sum(1 for r in dd[bucket["name"]] for _ in [r]) == bucket["sequences"]
    assert m["tokenizer"]["sha256"] and m["template"] is None
    assert json.loads((tmp_path / "out" / "config.json").read_text())["num_bins"] == 2


def test_long_documents_are_split_not_truncated(tmp_path: Path, tok512: Path) -> None:
    import datasets

    text = " ".join(f"word{i}" for i in range(300))
    data = _jsonl(tmp_path / "a.jsonl", [{"text": text}])
    m = prepare(_cfg([str(data)], tok512, tmp_path / "out", text_field="text", num_bins=1)).manifest
    rows = list(datasets.load_from_disk(str(tmp_path / "out"))["bucket_00"])
    chunks = [seg for r in rows for seg in _segments(r)]
    n_chunks = len(chunks)
    assert n_chunks > 3 and m["counts"]["documents"]["split"] == 1
    assert m["counts"]["tokens"]["overlap_added"] == n_chunks - 1
    from langgraft.tokenizer.hf import load_tokenizer

    doc = [1, *load_tokenizer(tok512)(text, add_special_tokens=False).input_ids, 2]
    # chunk j starts at 63 * j: the first holds 64 tokens, later ones the previous chunk's last
    # token (untrained context) + 63 new tokens; together they cover the document exactly
    spans = []
    for ids, labels in chunks:
        at = [i for i in range(len(doc)) if doc[i : i + len(ids)] == ids]
        assert len(at) == 1
        spans.append((at[0], at[0] + len(ids)))
        assert labels[0] == -100 and labels[1:] == ids[1:]
    spans.sort()
    assert [a for a, _ in spans] == [63 * j for j in range(n_chunks)]
    assert all(b == a2 + 1 for (_, b), (a2, _) in zip(spans, spans[1:], strict=False))
    assert spans[-1][1] == len(doc)


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "config.json"
    }


def test_deterministic_across_runs_and_worker_counts(tmp_path: Path, tok512: Path) -> None:
    data = _jsonl(tmp_path / "in" / "a.jsonl", ROWS)
    _jsonl(tmp_path / "in" / "sub" / "b.jsonl", ROWS[::-1])
    inputs = [str(tmp_path / "in")]
    a = prepare(_cfg(inputs, tok512, tmp_path / "a", jsonl=True)).manifest
    b = prepare(_cfg(inputs, tok512, tmp_path / "b", jsonl=True, workers=2)).manifest
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert a["content_sha256"] == b["content_sha256"]
    c = prepare(_cfg(inputs, tok512, tmp_path / "c", seed=7)).manifest
    assert c["content_sha256"] != a["content_sha256"]
    assert data.exists()


def test_jsonl_mirror_matches_arrow(tmp_path: Path, tok512: Path) -> None:
    import datasets

    data = _jsonl(tmp_path / "a.jsonl", ROWS)
    prepare(_cfg([str(data)], tok512, tmp_path / "out", jsonl=True))
    dd = datasets.load_from_disk(str(tmp_path / "out"))
    for name in dd:
        mirror = [json.loads(x) for x in (tmp_path / "out" / "jsonl" / f"{name}.jsonl").open()]
        assert mirror == list(dd[name])
        arr = dd[name].with_format("numpy", dtype=np.int32)[0]["input_ids"]
        assert arr.dtype == np.int32


BAD_CASES = [
    ("malformed.jsonl", b'{"target": "a", "category": "c"}\n{"target": \n', 2, "malformed JSON"),
    (
        "types.jsonl",
        b'{"target": "a", "category": "c"}\n\n{"target": 7, "category": "c"}\n',
        3,
        "expected a string",
    ),
    ("missing.jsonl", b'{"source": "a", "category": "c"}\n', 1, "missing field 'target'"),
    ("nocat.jsonl", b'{"target": "a"}\n', 1, "--allow-missing-category"),
    (
        "utf8.jsonl",
        b'{"target": "a", "category": "c"}\n{"target": "\xff", "category": "c"}\n',
        2,
        "invalid UTF-8",
    ),
    ("surrogate.jsonl", b'{"target": "\\udc00", "category": "c"}\n', 1, "lone surrogate"),
    ("array.jsonl", b'["target"]\n', 1, "expected a JSON object"),
    ("empty.jsonl", b"", None, "empty file"),
    ("utf8.txt", b"good\n\nbad \xfe\n", 3, "invalid UTF-8"),
]


@pytest.mark.parametrize("name, data, line, message", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_input_fails_with_file_line_exit_2_and_no_output(
    tmp_path: Path,
    tok512: Path,
    capsys: pytest.CaptureFixture,
    name: str,
    data: bytes,
    line,
    message: str,
) -> None:
    good = _jsonl(tmp_path / "in" / "0good.jsonl", ROWS)
    bad = tmp_path / "in" / name
    bad.write_bytes(data)
    out = tmp_path / "out"
    rc = main(
        [
            "prepare",
            "pretrain",
            "--input",
            str(good),
            str(bad),
            "--tokenizer",
            str(tok512),
            "--max-length",
            "64",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    where = f"{bad}:{line}:" if line else f"{bad}:"
    assert where in err and message in err and "--on-error skip" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".out*")), "nothing half-written"


def test_corrupt_gzip_fails_naming_the_file(tmp_path: Path, tok512: Path, capsys) -> None:
    blob = gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in ROWS * 50), mtime=0)
    bad = tmp_path / "x.jsonl.gz"
    bad.write_bytes(blob[: len(blob) // 2])
    rc = main(
        [
            "prepare",
            "pretrain",
            "--input",
            str(bad),
            "--tokenizer",
            str(tok512),
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and f"{bad}:" in err and "corrupt gzip" in err
    assert not (tmp_path / "out").exists()


def test_skip_mode_counts_every_reason(tmp_path: Path, tok512: Path) -> None:
    files = [str(_jsonl(tmp_path / "in" / "0good.jsonl", ROWS))]
    for name, data, _, _ in BAD_CASES:
        (tmp_path / "in" / name).write_bytes(data)
        files.append(str(tmp_path / "in" / name))
    _jsonl(tmp_path / "in" / "filtered.jsonl", [{"source": "s", "target": "", "category": "c"}])
    files.append(str(tmp_path / "in" / "filtered.jsonl"))
    m = prepare(_cfg(files, tok512, tmp_path / "out", on_error="skip")).manifest
    rows = m["counts"]["rows"]
    assert rows["rejected"] == {
        "empty_target": 1,
        "invalid_unicode": 1,
        "invalid_utf8": 2,
        "malformed_json": 1,
        "missing_field": 2,
        "not_an_object": 1,
        "wrong_type": 1,
    }
    assert rows["in"] == rows["packed"] + sum(rows["rejected"].values())
    assert rows["packed"] == len(ROWS) + 4  # good lines in malformed, types, utf8 (jsonl, txt)
    assert m["counts"]["files"]["problems"] == {"empty_file": 1}
    assert any("types.jsonl:3: wrong_type" in e for e in m["counts"]["rejected_examples"])


def test_empty_target_is_reported_even_in_fail_mode(tmp_path: Path, tok512: Path) -> None:
    rows = [*ROWS, {"source": "only a prompt", "target": "", "category": "math"}]
    m = prepare(_cfg([str(_jsonl(tmp_path / "a.jsonl", rows))], tok512, tmp_path / "out")).manifest
    assert m["counts"]["rows"]["rejected"] == {"empty_target": 1}


def test_too_many_bins_is_a_user_error(tmp_path: Path, tok512: Path, capsys) -> None:
    data = _jsonl(tmp_path / "a.jsonl", ROWS[:2])
    rc = main(
        [
            "prepare",
            "pretrain",
            "--input",
            str(data),
            "--tokenizer",
            str(tok512),
            "--num-bins",
            "5",
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    assert rc == 2 and "use fewer bins" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_surface(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    text = capsys.readouterr().out
    assert "pretrain" in text and "chat" in text
    with pytest.raises(SystemExit):
        main(["prepare", "chat", "--help"])
    text = capsys.readouterr().out
    for flag in [
        "--input",
        "--tokenizer",
        "--max-length",
        "--num-bins",
        "--out",
        "--seed",
        "--workers",
        "--jsonl",
        "--on-error",
        "--template",
        "--allow-missing-category",
    ]:
        assert flag in text
    assert "{llama2,llama3,chatml}" in text


def test_bad_row_with_workers_still_fails_cleanly(tmp_path: Path, tok512: Path, capsys) -> None:
    rows = [json.dumps(r) for r in ROWS * 60]
    rows[2000] = '{"target": 1, "category": "c"}'
    data = tmp_path / "a.jsonl"
    data.write_text("\n".join(rows) + "\n")
    rc = main(
        ["prepare", "pretrain", "--input", str(data), "--tokenizer", str(tok512), "--workers", "2",
         "--out", str(tmp_path / "out"), "--no-progress"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and f"{data}:2001: field 'target': expected a string" in err
    assert not (tmp_path / "out").exists()


def test_gzipped_text_and_overwrite(tmp_path: Path, tok512: Path) -> None:
    src = tmp_path / "books" / "a.txt.gz"
    src.parent.mkdir()
    src.write_bytes(gzip.compress(b"First block.\r\n\r\nSecond block\r\nline two.\r\n", mtime=0))
    out = tmp_path / "out"
    m = prepare(_cfg([str(src.parent)], tok512, out, num_bins=1)).manifest
    assert m["inputs"][0]["rows"] == 2 and set(m["categories"]) == {"books"}
    (out / "stale").write_text("x")
    m2 = prepare(_cfg([f"lit={src}"], tok512, out, num_bins=1, overwrite=True)).manifest
    assert set(m2["categories"]) == {"lit"} and not (out / "stale").exists()
