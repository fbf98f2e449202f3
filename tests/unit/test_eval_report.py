"""Accuracy / standard error / category and micro-macro aggregation, and the compare table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from langgraft.errors import UserError
from langgraft.eval.data import MCQuestion, Subject, Task
from langgraft.eval.report import accuracy, compare, read_runs, summarize, write_results


def _task() -> Task:
    q = MCQuestion("q", ("a", "b", "c", "d"), 0, "f:1")
    return Task(
        name="cmmlu",
        split="test",
        default_shots=5,
        subjects={
            "s1": Subject("s1", "一", ("STEM",), "zh", [q] * 4),
            "s2": Subject(
                "s2", "二", ("Other", "China specific"), "zh", [q] * 2, skipped={"multi-answer": 1}
            ),
        },
    )


def _records(correct: dict[str, list[bool]]) -> list[dict]:
    return [
        {
            "subject": s,
            "index": i,
            "shots": 5,
            "truncated": False,
            "correct": {"first_token_acc": c},
        }
        for s, cs in correct.items()
        for i, c in enumerate(cs)
    ]


def test_accuracy_and_stderr() -> None:
    a = accuracy([True, False, True, True])
    assert a["acc"] == 0.75 and a["n"] == 4
    assert a["stderr"] == pytest.approx(math.sqrt(0.75 * 0.25 / 3))
    assert math.isnan(accuracy([True])["stderr"])


def test_summary_micro_macro_and_categories() -> None:
    res = summarize(
        _task(),
        _records({"s1": [True, True, True, False], "s2": [False, False]}),
        ["first_token_acc"],
    )
    ov = res["overall"]
    assert ov["n"] == 6 and ov["first_token_acc"]["acc"] == pytest.approx(3 / 6)  # micro
    assert ov["first_token_acc_macro"]["acc"] == pytest.approx((0.75 + 0.0) / 2)
    assert res["categories"]["STEM"]["first_token_acc"]["acc"] == 0.75
    assert res["categories"]["China specific"]["n"] == 2
    assert res["subjects"]["s2"]["skipped"] == {"multi-answer": 1} and res["skipped"] == 1
    assert res["skipped_by_reason"] == {"multi-answer": 1}
    assert res["subjects"]["s1"]["shots"] == {5: 4}


def test_write_results_and_compare(tmp_path: Path) -> None:
    res = summarize(_task(), _records({"s1": [True] * 4, "s2": [True, False]}), ["first_token_acc"])
    for name, model in (("a", "base"), ("b", "grafted")):
        out = tmp_path / name
        out.mkdir()
        write_results(out, {"model": model, "config": {"shots": 5}, **res, "records": []})
        assert {p.name for p in out.iterdir()} == {
            "results.json",
            "predictions.jsonl",
            "results.md",
            "results.csv",
        }
    csv_lines = (tmp_path / "a" / "results.csv").read_text().splitlines()
    assert csv_lines[0] == "level,name,n,first_token_acc,first_token_acc_stderr"
    assert csv_lines[1].startswith("overall,micro,6,0.833333")
    assert (
        "| **overall (micro)** | 6 | 83.33 ± 16.67 |" in (tmp_path / "a" / "results.md").read_text()
    )
    table = compare(read_runs([tmp_path / "a", tmp_path / "b" / "results.json"]))
    assert table.splitlines()[0] == "| Model | CMMLU |"
    assert "| grafted | 83.33 (5-shot) |" in table
    (tmp_path / "bad.json").write_text(json.dumps({"x": 1}))
    with pytest.raises(UserError, match="not a `langgraft eval mc` results file"):
        compare(read_runs([tmp_path / "bad.json"]))
    with pytest.raises(UserError, match="has no metric 'loglik_acc'"):
        compare(read_runs([tmp_path / "a"]), metric="loglik_acc")


def _run(tmp_path: Path, name: str, correct: list[bool], with_predictions: bool = True) -> Path:
    task = Task(
        name="cmmlu",
        split="test",
        default_shots=5,
        subjects={
            "s1": Subject(
                "s1", "一", ("STEM",), "zh", [MCQuestion("q", ("a",) * 4, 0, "f")] * len(correct)
            )
        },
    )
    records = [{**r, "source": f"f:{i}"} for i, r in enumerate(_records({"s1": correct}))]
    res = summarize(task, records, ["first_token_acc"])
    out = tmp_path / name
    out.mkdir()
    write_results(out, {"model": name, **res, "records": records if with_predictions else []})
    if not with_predictions:
        (out / "predictions.jsonl").unlink()
    return out


def test_forgetting_table_paired_and_unpaired(tmp_path: Path) -> None:
    from langgraft.eval.report import forgetting

    base = _run(tmp_path, "base", [True] * 50 + [False] * 50)
    # 40 questions turned wrong, none turned right: paired d = -1 on 40 of 100.
    worse = _run(tmp_path, "grafted", [True] * 10 + [False] * 90)
    rows = forgetting(read_runs([base, worse])).splitlines()
    assert rows[2] == "| CMMLU | base (base) | 50.00 | | | | |"
    # paired SE: d has mean -0.4, sample var 0.4*0.6*100/99 -> se = sqrt(0.2424/100) = 0.04924
    se = math.sqrt(0.4 * 0.6 * 100 / 99 / 100)
    assert rows[3] == f"| CMMLU | grafted | 10.00 | -40.00 | {200 * se:.2f} | yes | paired |"
    # Without predictions: the two runs' SEs combined.
    worse2 = _run(tmp_path, "close", [True] * 48 + [False] * 52, with_predictions=False)
    row = forgetting(read_runs([base, worse2])).splitlines()[3]
    se2 = math.sqrt(0.25 / 99 + 0.48 * 0.52 / 99)
    assert row == f"| CMMLU | close | 48.00 | -2.00 | {200 * se2:.2f} | no | unpaired |"
    assert forgetting(read_runs([base])) == ""
    fewer = _run(tmp_path, "fewer", [True] * 10)
    with pytest.raises(UserError, match="10 questions vs 100"):
        forgetting(read_runs([base, fewer]))
