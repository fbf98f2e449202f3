"""Input discovery and the row stream: order, line numbers, text blocks, problems, hashes."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest

from langgraft.data.sources import (
    BAD_FILE,
    BAD_ROW,
    JSON_ROW,
    TEXT_ROW,
    discover_inputs,
    read_items,
)
from langgraft.errors import UserError


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_directories_are_recursive_sorted_and_skip_hidden_and_other_files(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    for rel in ["b.jsonl", "a/z.txt", "a/y.jsonl.gz", "c.txt.gz", ".hidden.jsonl", "x/.d/e.txt"]:
        _write(root / rel, b"x\n")
    _write(root / "notes.md", b"x\n")
    files = discover_inputs([str(root)])
    assert [f.display for f in files] == [
        str(root / "a/y.jsonl.gz"),
        str(root / "a/z.txt"),
        str(root / "b.jsonl"),
        str(root / "c.txt.gz"),
    ]
    assert [(f.fmt, f.gz) for f in files] == [
        ("jsonl", True),
        ("txt", False),
        ("jsonl", False),
        ("txt", True),
    ]
    assert {f.label for f in files} == {"corpus"}


def test_labels_from_name_prefix_or_file_stem(tmp_path: Path) -> None:
    a = _write(tmp_path / "wiki.txt.gz", b"")
    _write(tmp_path / "d" / "x.jsonl", b"")
    files = discover_inputs([str(a), f"zh={tmp_path / 'd'}"])
    assert [f.label for f in files] == ["wiki", "zh"]


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: [str(p / "missing.jsonl")], "no such file"),
        (lambda p: [str(_write(p / "data.csv", b"a"))], "unsupported file type"),
        (lambda p: [str(_write(p / "e" / "x.md", b"a").parent)], "no .*jsonl.* files"),
        (lambda p: [str(_write(p / "a.jsonl", b"")), str(p)], "already an input"),
        (lambda p: [f"={_write(p / 'a.jsonl', b'')}"], "empty NAME"),
    ],
)
def test_bad_inputs_are_user_errors(tmp_path: Path, make, match: str) -> None:
    with pytest.raises(UserError, match=match):
        discover_inputs(make(tmp_path))


def test_jsonl_lines_numbers_blank_lines_bom_and_hash(tmp_path: Path) -> None:
    data = b'\xef\xbb\xbf{"a": 1}\n\n   \n{"b": 2}\r\n{"c": 3}'
    path = _write(tmp_path / "x.jsonl", data)
    files = discover_inputs([str(path)])
    items = list(read_items(files))
    assert [(i[1], i[2]) for i in items] == [(1, JSON_ROW), (4, JSON_ROW), (5, JSON_ROW)]
    assert items[0][3] == b'{"a": 1}\n'
    assert files[0].rows == 3 and files[0].bytes == len(data)
    assert files[0].sha256 == hashlib.sha256(data).hexdigest()


def test_gzip_rows_and_hash_of_compressed_bytes(tmp_path: Path) -> None:
    data = gzip.compress(b'{"a": 1}\n{"b": 2}\n', mtime=0)
    files = discover_inputs([str(_write(tmp_path / "x.jsonl.gz", data))])
    items = list(read_items(files))
    assert [i[3] for i in items] == [b'{"a": 1}\n', b'{"b": 2}\n']
    assert files[0].sha256 == hashlib.sha256(data).hexdigest()


def test_corrupt_gzip_keeps_rows_before_and_reports_the_file(tmp_path: Path) -> None:
    data = gzip.compress(b'{"a": 1}\n' * 2000, mtime=0)
    files = discover_inputs([str(_write(tmp_path / "x.jsonl.gz", data[: len(data) // 2]))])
    items = list(read_items(files))
    assert items[-1][2] == BAD_FILE and items[-1][3][0] == "corrupt_file"
    assert all(i[2] == JSON_ROW for i in items[:-1])
    assert files[0].sha256 == hashlib.sha256(data[: len(data) // 2]).hexdigest()


def test_txt_blocks_crlf_whitespace_lines_and_first_line_numbers(tmp_path: Path) -> None:
    text = "Title\r\n\r\n  first para\r\nline two\r\n \t\r\n\u3000\r\nsecond\r\n\r\n\r\n"
    files = discover_inputs([str(_write(tmp_path / "a.txt", text.encode()))])
    items = list(read_items(files))
    assert [(i[1], i[2], i[3]) for i in items] == [
        (1, TEXT_ROW, "Title"),
        (3, TEXT_ROW, "  first para\nline two"),
        (7, TEXT_ROW, "second"),
    ]


def test_txt_whole_file_mode_is_one_document(tmp_path: Path) -> None:
    files = discover_inputs([str(_write(tmp_path / "a.txt", b"\nA\n\nB\n\n"))])
    items = list(read_items(files, whole_file_txt=True))
    assert [(i[1], i[3]) for i in items] == [(1, "A\n\nB")]


def test_invalid_utf8_in_txt_rejects_its_block_with_the_bad_line(tmp_path: Path) -> None:
    files = discover_inputs([str(_write(tmp_path / "a.txt", b"ok\n\nfine\nbad \xff\n\nok2\n"))])
    items = list(read_items(files))
    assert [(i[1], i[2]) for i in items] == [(1, TEXT_ROW), (4, BAD_ROW), (6, TEXT_ROW)]
    assert items[1][3][0] == "invalid_utf8"


@pytest.mark.parametrize("name, data", [("a.jsonl", b""), ("a.jsonl", b"\n \n"), ("a.txt", b"\n")])
def test_empty_files_are_file_problems(tmp_path: Path, name: str, data: bytes) -> None:
    files = discover_inputs([str(_write(tmp_path / name, data))])
    items = list(read_items(files))
    assert [(i[2], i[3][0]) for i in items] == [(BAD_FILE, "empty_file")]
