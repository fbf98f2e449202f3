"""`langgraft eval mc` / `eval text` end to end on a saved tiny model directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_helpers import CMMLU, SHARED_DATA, save_tiny_model_dir

from langgraft.__main__ import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


def test_eval_mc_end_to_end_and_compare(model_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cmmlu"
    args = ["eval", "mc", "--task", "cmmlu", "--data", str(CMMLU), "--model", str(model_dir)]
    args += ["--out", str(out), "--mode", "both", "--limit", "2", "--subjects", "agronomy", "arts"]
    assert main(args) == 0
    assert "cmmlu (4 questions): first_token_acc" in capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert res["model"] == "model" and res["task"] == "cmmlu" and res["overall"]["n"] == 4
    assert res["config"]["shots"] == 5 and res["config"]["mode"] == "both"
    assert res["templates"]["zh"]["answer_cue"] == "答案："
    assert {v["piece"] for v in res["letter_variants"]["B"]} == {"B", "▁B"}
    assert set(res["categories"]) == {"Humanities", "Other"}
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["source"].rsplit("/", 1)[-1] for p in preds[:2]] == [
        "agronomy.csv:2",
        "agronomy.csv:3",
    ]
    assert json.loads((out / "config.json").read_text())["task"] == "cmmlu"

    assert main(["eval", "mc", "--compare", str(out), str(out / "results.json")]) == 0
    table = capsys.readouterr().out.splitlines()
    # --mode both: a column per scoring mode (the loglik column used to be dropped)
    assert table[0] == "| Model | CMMLU first_token | CMMLU loglik |" and len(table) == 3

    # The same output again without --overwrite is refused, and nothing is half-written.
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err


def test_eval_mc_bad_input_exits_2(model_dir: Path, tmp_path: Path, capsys) -> None:
    assert (
        main(
            [
                "eval",
                "mc",
                "--task",
                "mmlu",
                "--data",
                str(CMMLU),
                "--model",
                str(model_dir),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("langgraft eval: error: ") and "_test.csv" in err
    assert (
        main(["eval", "mc", "--task", "cmmlu", "--data", str(CMMLU), "--out", str(tmp_path / "o")])
        == 2
    )
    assert "--model is required" in capsys.readouterr().err
    assert (
        main(
            [
                "eval",
                "mc",
                "--task",
                "cmmlu",
                "--data",
                str(CMMLU),
                "--model",
                str(tmp_path),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "no config.json" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_eval_text_end_to_end(model_dir: Path, tmp_path: Path, capsys) -> None:
    corpora = [
        SHARED_DATA / "corpus" / "zh" / "hongloumeng.txt",
        SHARED_DATA / "corpus" / "en" / "tinyshakespeare.txt",
    ]
    out = tmp_path / "text"
    args = ["eval", "text", "--model", str(model_dir), "--out", str(out), "--max-chars", "300"]
    assert main(args + ["--max-length", "64", "--data", *map(str, corpora)]) == 0
    assert "| hongloumeng.txt |" in capsys.readouterr().out
    res = json.loads((out / "text_results.json").read_text())
    zh, en = res["corpora"]
    assert zh["chars"] == en["chars"] == 300
    assert zh["bytes"] > 2 * en["bytes"]  # CJK is 3 bytes per character in UTF-8
    assert zh["tokens"] > en["tokens"]
    for r in (zh, en):
        assert r["bits_per_byte"] == pytest.approx(r["nll"] / 0.6931471805599453 / r["bytes"])


def test_cli_help_lists_eval(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = capsys.readouterr().out
    assert "mc" in out and "text" in out


def test_meaningless_limits_exit_2(model_dir: Path, tmp_path: Path, capsys) -> None:
    base = ["--model", str(model_dir), "--out", str(tmp_path / "o")]
    mc = ["eval", "mc", "--task", "cmmlu", "--data", str(CMMLU), *base]
    assert main([*mc, "--limit", "-1"]) == 2
    assert "--limit -1: must be >= 1" in capsys.readouterr().err
    corpus = str(SHARED_DATA / "corpus" / "en" / "tinyshakespeare.txt")
    for n in ("0", "1"):
        assert main(["eval", "text", *base, "--data", corpus, "--max-length", n]) == 2
        assert f"--max-length {n}: a window needs BOS" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
