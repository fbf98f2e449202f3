"""What `eval mc` prints before a run: the totals and the left-out files once, not every subset
(CMMLU has 67; `--show-counts` lists them, results.json has them either way)."""

from __future__ import annotations

from pathlib import Path

from eval_helpers import CMMLU, SHARED_DATA

from langgraft.__main__ import main

AGIEVAL = SHARED_DATA / "eval" / "agieval"


def _printed(capsys, tmp_path: Path, *args: str) -> list[str]:
    # A --model without config.json stops the run right after the counts (exit 2).
    base = ["eval", "mc", "--model", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main([*base, *args]) == 2
    return capsys.readouterr().out.splitlines()


def test_cmmlu_prints_a_summary_not_every_subset(tmp_path: Path, capsys) -> None:
    out = _printed(capsys, tmp_path, "--task", "cmmlu", "--data", str(CMMLU), "--limit", "2")
    assert out == [
        "cmmlu/test: 11,582 questions in 67 subsets",
        "  this run (--limit 2): 134 questions",
    ]
    out = _printed(capsys, tmp_path, "--task", "cmmlu", "--data", str(CMMLU), "--show-counts")
    assert len(out) == 1 + 67 + 1 and out[-1].split() == ["total", "11582"]
    assert out[1].split() == ["agronomy", "169"]


def test_agieval_left_out_files_printed_once(tmp_path: Path, capsys) -> None:
    out = _printed(capsys, tmp_path, "--task", "agieval", "--data", str(AGIEVAL), "--limit", "1",
                   "--subjects", "logiqa-en", "sat-math")  # fmt: skip
    text = "\n".join(out)
    for f in ("aqua-rat.jsonl", "gaokao-mathcloze.jsonl", "lsat-ar.jsonl", "math.jsonl"):
        assert text.count(f) == 1, f
    assert out[0].startswith("agieval/test: 4,858 questions in 15 subsets (skipped 1,030 rows: ")
    assert out[-1] == "  this run (--limit 1, --subjects (2)): 2 questions"
    assert len(out) == 3
