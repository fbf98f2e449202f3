"""Issue 23, item 3 (the smaller faults): each ended badly before (a wrong message, a wrong line,
exit 0 over a dropped subset, a 0600 weights file, a scratch file left forever, a traceback)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from langgraft.__main__ import main
from langgraft.errors import UserError

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def tok512(shared_data: Path) -> Path:
    return shared_data / "models" / "stories260K" / "tok512.model"


def prepare(corpus: Path, tok: Path, out: Path, *extra: str) -> int:
    return main(["prepare", "pretrain", "--input", f"en={corpus}", "--tokenizer", str(tok),
                 "--out", str(out), "--max-length", "64", "--no-progress", *extra])  # fmt: skip


def test_a_gz_that_is_not_gzip_is_named_as_such_not_as_empty(tok512: Path, tmp_path: Path, capsys) -> None:  # fmt: skip
    gz = tmp_path / "c.txt.gz"
    gz.write_text("plain text, not gzip\n\nanother block\n")
    assert prepare(gz, tok512, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "c.txt.gz:1: not a valid gzip file" in err and "empty file" not in err, err
    assert prepare(gz, tok512, tmp_path / "out", "--on-error", "skip") == 2
    err = capsys.readouterr().err
    assert "corrupt_file (files) 1" in err and "empty" not in err, err  # counted once


def test_non_utf8_csv_and_txt_name_the_line(tmp_path: Path) -> None:
    from langgraft.eval.data import read_csv_rows
    from langgraft.eval.text import read_corpus

    csv = tmp_path / "bio.csv"
    csv.write_bytes(b"q,A,B,C,D,answer\nfine,a,b,c,d,A\nbad \xff here,a,b,c,d,B\n")
    with pytest.raises(UserError, match=r"bio\.csv:3: not UTF-8 text \(byte 0xff at column 5\)"):
        list(read_csv_rows(csv, ["q", "A", "B", "C", "D", "answer"]))
    txt = tmp_path / "c.txt"
    txt.write_bytes(b"first line\nsecond \xfe line\n")
    with pytest.raises(UserError, match=r"c\.txt:2: not UTF-8 text \(byte 0xfe at column 8\)"):
        read_corpus(txt)


def test_read_jsonl_names_the_line_of_the_bad_byte(tmp_path: Path) -> None:
    from langgraft.jsonio import iter_jsonl

    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    rows = iter_jsonl(p)
    with pytest.raises(UserError, match=r"x\.jsonl:2: not UTF-8 text"):
        list(rows)


def _agieval(root: Path, rows: list[dict]) -> Path:
    v1 = root / "data" / "v1"
    v1.mkdir(parents=True)
    good = {"passage": "", "question": "q?", "options": ["(A)a", "(B)b", "(C)c", "(D)d"],
            "label": "B"}  # fmt: skip
    (v1 / "logiqa-en.jsonl").write_text(json.dumps(good) + "\n")
    (v1 / "gaokao-physics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_a_subset_with_no_scorable_row_is_an_error_not_a_silent_drop(tmp_path: Path) -> None:
    from langgraft.eval.tasks import load_task

    multi = {"passage": "", "question": "q?", "options": ["(A)a", "(B)b", "(C)c", "(D)d"],
             "label": ["A", "D"]}  # fmt: skip
    root = _agieval(tmp_path / "agieval", [multi, multi])
    with pytest.raises(UserError, match=r"gaokao-physics\.jsonl: none of its 2 rows can be scored \(multi-answer 2\)"):  # fmt: skip
        load_task("agieval", root)

    d = tmp_path / "gaokao" / "Data" / "Objective_Questions"
    d.mkdir(parents=True)
    rows = [{"question": "1. q A. a B. b C. c D. d", "answer": ["A", "C"]}] * 3
    (d / "2010-2022_Biology_MCQs.json").write_text(json.dumps({"example": rows}))
    good = [{"question": "1. q A. a B. b C. c D. d", "answer": ["B"]}]
    (d / "2010-2022_Chemistry_MCQs.json").write_text(json.dumps({"example": good}))
    with pytest.raises(UserError, match=r"Biology_MCQs\.json: none of its 3 rows can be scored"):
        load_task("gaokao", tmp_path / "gaokao")


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_import_llama2c_weights_follow_the_umask(shared_data: Path, tmp_path: Path, umask: int) -> None:  # fmt: skip
    d = shared_data / "models" / "stories260K"
    old = os.umask(umask)
    try:
        argv = ["model", "import-llama2c", "--checkpoint", str(d / "stories260K.bin"),
                "--tokenizer", str(d / "tok512.model"), "--out", str(tmp_path / "m")]  # fmt: skip
        assert main(argv) == 0
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "m").iterdir()}
    assert modes["model.safetensors"] == 0o666 & ~umask, modes
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_import_llama2c_full_disk_is_one_line_naming_the_file(shared_data: Path, tmp_path: Path, monkeypatch, capsys) -> None:  # fmt: skip
    from safetensors import SafetensorError
    from transformers import LlamaForCausalLM

    def full(self, *a, **k) -> None:  # noqa: ANN001, ANN002, ANN003
        raise SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No '
            'space left on device" })'
        )

    monkeypatch.setattr(LlamaForCausalLM, "save_pretrained", full)
    d = shared_data / "models" / "stories260K"
    argv = ["model", "import-llama2c", "--checkpoint", str(d / "stories260K.bin"),
            "--tokenizer", str(d / "tok512.model"), "--out", str(tmp_path / "m")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "model.safetensors: No space left on device; free some space" in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_metrics_rewrite_killed_midway_leaves_no_scratch_file(tmp_path: Path) -> None:
    from langgraft.train.metrics import MetricsLogger

    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    (out / ".metrics.jsonl.tmp-999999").write_text('{"step": 1}\n')  # a kill during the rewrite
    logger = MetricsLogger(out, tensorboard=False, resume_step=1)
    logger.close()
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl"]
    assert (out / "metrics.jsonl").read_text() == '{"step": 1}\n'


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_self_replay_refuses_a_temperature_that_is_not_a_finite_positive_number(value: str, tmp_path: Path, capsys) -> None:  # fmt: skip
    argv = ["data", "self-replay", "--model", str(tmp_path / "no-model"), "--out",
            str(tmp_path / "o"), f"--temperature={value}"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"--temperature {float(value)}: must be a finite number > 0" in err, err
