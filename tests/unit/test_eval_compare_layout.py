"""`eval mc --compare` on the layouts the README documents (a shell glob over eval directories,
explicit run directories) keeps every scoring mode; the macro standard error is honest when a
subject has one question (`eval mc --limit 1`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from eval_helpers import CMMLU, save_tiny_model_dir

from langgraft.__main__ import main
from langgraft.errors import UserError
from langgraft.eval.data import MCQuestion, Subject, Task
from langgraft.eval.report import compare, forgetting, read_runs, summarize, write_results

MODES = ["first_token_acc", "loglik_acc"]


def _task(sizes: dict[str, int]) -> Task:
    q = MCQuestion("q", ("a", "b", "c", "d"), 0, "f")
    subjects = {s: Subject(s, s, ("STEM",), "zh", [q] * n) for s, n in sizes.items()}
    return Task(name="cmmlu", split="test", default_shots=5, subjects=subjects)


def _records(correct: dict[str, list[tuple[bool, bool]]]) -> list[dict]:
    return [
        {"subject": s, "index": i, "shots": 5, "truncated": False, "source": f"{s}:{i}",
         "correct": dict(zip(MODES, c, strict=True))}
        for s, cs in correct.items()
        for i, c in enumerate(cs)
    ]  # fmt: skip


def _eval_dir(root: Path, name: str, correct: list[tuple[bool, bool]]) -> Path:
    """langgraft.report.evaluate's EVAL_DIR: eval.json, text_results.json, generations.jsonl,
    plan.json and cmmlu/ (an `eval mc --mode both` run)."""
    d = root / name
    (d / "cmmlu").mkdir(parents=True)
    (d / "eval.json").write_text(json.dumps({"name": name, "model": "m"}))
    (d / "text_results.json").write_text(json.dumps({"model": name, "corpora": []}))
    (d / "generations.jsonl").write_text("")
    (d / "plan.json").write_text("{}")
    records = _records({"s1": correct})
    res = summarize(_task({"s1": len(correct)}), records, MODES)
    write_results(d / "cmmlu", {"model": name, "config": {"shots": 5}, **res, "records": records})
    return d


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    _eval_dir(tmp_path, "eval-base", [(True, True)] * 6 + [(False, False)] * 4)
    _eval_dir(tmp_path, "eval-grafted", [(True, False)] * 3 + [(False, False)] * 7)
    return tmp_path


def test_compare_reads_each_results_file_once(layout: Path, monkeypatch, capsys) -> None:
    import langgraft.eval.report as report

    reads: list[Path] = []
    real = report.load_result
    monkeypatch.setattr(report, "load_result", lambda f: reads.append(f) or real(f))
    assert (
        main(["eval", "mc", "--compare", str(layout / "eval-base"), str(layout / "eval-grafted")])
        == 0
    )
    assert "eval-grafted" in capsys.readouterr().out
    assert sorted(reads) == sorted(layout.glob("*/cmmlu/results.json"))


def test_readme_glob_over_eval_directories(layout: Path, capsys) -> None:
    # What `langgraft eval mc --compare out/eval-base/* out/eval-grafted/*` passes.
    paths = sorted(map(str, (layout / "eval-base").iterdir()))
    paths += sorted(map(str, (layout / "eval-grafted").iterdir()))
    assert main(["eval", "mc", "--compare", *paths]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| Model | CMMLU first_token | CMMLU loglik |"
    assert out[2] == "| eval-base | 60.00 (5-shot) | 60.00 (5-shot) |"
    assert out[3] == "| eval-grafted | 30.00 (5-shot) | 0.00 (5-shot) |"
    rows = [r for r in out if r.startswith("| CMMLU ")]
    assert [[c.strip() for c in r.split("|")[1:5]] for r in rows] == [
        ["CMMLU first_token", "eval-base (base)", "60.00", ""],
        ["CMMLU first_token", "eval-grafted", "30.00", "-30.00"],
        ["CMMLU loglik", "eval-base (base)", "60.00", ""],
        ["CMMLU loglik", "eval-grafted", "0.00", "-60.00"],
    ]


def test_explicit_directories_keep_every_mode(layout: Path) -> None:
    runs = read_runs([layout / "eval-base" / "cmmlu", layout / "eval-grafted" / "cmmlu"])
    assert compare(runs).splitlines()[0] == "| Model | CMMLU first_token | CMMLU loglik |"
    assert compare(read_runs([layout / "eval-base", layout / "eval-grafted"])) == compare(runs)
    assert "| CMMLU loglik | eval-grafted | 0.00 | -60.00 |" in forgetting(runs)
    # one mode asked for: one column, titled by the task alone
    assert compare(runs, metric="loglik_acc").splitlines()[0] == "| Model | CMMLU |"


def test_compare_refuses_what_is_not_a_run(layout: Path) -> None:
    (layout / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty: no results.json in it or its subdirectories"):
        compare(read_runs([layout / "eval-base", layout / "empty"]))
    (layout / "junk.json").write_text("[]")
    with pytest.raises(UserError, match=r"junk.json: not a `langgraft eval mc` results file"):
        compare(read_runs([layout / "junk.json"]))
    with pytest.raises(UserError, match=r"no `langgraft eval mc` results among them"):
        compare(read_runs([layout / "eval-base" / "eval.json"]))
    twin = layout / "twin" / "cmmlu"
    twin.mkdir(parents=True)
    base = json.loads((layout / "eval-base" / "cmmlu" / "results.json").read_text())
    (twin / "results.json").write_text(json.dumps(base))
    with pytest.raises(UserError, match=r"a second cmmlu run of model 'eval-base'"):
        compare(read_runs([layout / "eval-base", layout / "twin"]))


def test_macro_stderr_is_not_available_when_a_subject_has_one_question() -> None:
    t = (True, True)
    f = (False, False)
    res = summarize(_task({"s1": 4, "s2": 1}), _records({"s1": [t, t, t, f], "s2": [f]}), MODES)
    macro = res["overall"]["first_token_acc_macro"]
    assert macro["acc"] == pytest.approx((0.75 + 0.0) / 2) and macro["n"] == 2
    # The old sum dropped s2's NaN term but kept s2 in the divisor: sqrt(0.75*0.25/3)/2 = 0.125.
    assert math.isnan(macro["stderr"])
    full = summarize(_task({"s1": 4, "s2": 2}), _records({"s1": [t, t, t, f], "s2": [f, t]}), MODES)
    se1, se2 = math.sqrt(0.75 * 0.25 / 3), math.sqrt(0.25 / 1)
    assert full["overall"]["loglik_acc_macro"]["stderr"] == pytest.approx(
        math.sqrt(se1**2 + se2**2) / 2
    )


def test_eval_mc_limit_1_reports_no_macro_stderr(tmp_path: Path, capsys) -> None:
    model = save_tiny_model_dir(tmp_path / "model")
    out = tmp_path / "run"
    args = ["eval", "mc", "--task", "cmmlu", "--data", str(CMMLU), "--model", str(model),
            "--out", str(out), "--limit", "1", "--subjects", "agronomy", "arts", "astronomy"]  # fmt: skip
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    ov = res["overall"]
    assert ov["n"] == 3 and all(s["n"] == 1 for s in res["subjects"].values())
    assert math.isnan(ov[res["headline"] + "_macro"]["stderr"])  # was 0.0: sqrt(0) / 3
    assert math.isfinite(ov[res["headline"]]["stderr"])  # the micro average has one
    md = (out / "results.md").read_text()
    assert "| overall (macro) | 3 subjects | " in md and "(SE n/a)" in md
