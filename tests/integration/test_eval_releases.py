"""The official releases in ../shared/data/eval, read in place: scored counts per subset against
an independent count of the raw files by the protocol's rule, and whole `eval mc` runs of the
real stories260K in every scoring mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langgraft.__main__ import main
from langgraft.eval import load_task

# The 4-option single-choice subsets (ColossalEval drops lsat-*, aqua-rat and the cloze sets).
AGIEVAL_SCORED = (
    "logiqa-en sat-math sat-en sat-en-without-passage gaokao-english logiqa-zh jec-qa-kd jec-qa-ca "
    "gaokao-chinese gaokao-geography gaokao-history gaokao-biology gaokao-chemistry gaokao-physics "
    "gaokao-mathqa"
).split()
# GAOKAO-Bench Bench/Obj_Prompt.json: the files of type single_choice.
GAOKAO_SINGLE = (
    "2010-2013_English_MCQs 2010-2022_Biology_MCQs 2010-2022_Chemistry_MCQs 2010-2022_History_MCQs "
    "2010-2022_Math_I_MCQs 2010-2022_Math_II_MCQs 2010-2022_Political_Science_MCQs"
).split()


def _agieval_raw_counts(root: Path) -> dict[str, tuple[int, int]]:
    """(scored, skipped) per subset: one answer letter A-D over exactly four options."""
    out = {}
    for name in AGIEVAL_SCORED:
        scored = skipped = 0
        for line in (root / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            label = row["label"] or ""
            letters = "".join(label) if isinstance(label, list) else label.strip()
            ok = len(letters) == 1 and letters in "ABCD" and len(row["options"]) == 4
            scored, skipped = scored + ok, skipped + (not ok)
        out[name] = (scored, skipped)
    return out


def test_agieval_release_counts(shared_data: Path) -> None:
    root = shared_data / "eval" / "agieval" / "data" / "v1"
    raw = _agieval_raw_counts(root)
    task = load_task("agieval", shared_data / "eval" / "agieval")
    assert sorted(task.subjects) == sorted(AGIEVAL_SCORED)
    for name, (scored, skipped) in raw.items():
        s = task.subjects[name]
        assert (len(s.questions), sum(s.skipped.values())) == (scored, skipped), name
    assert sum(n for n, _ in raw.values()) == task.num_questions() == 4858
    assert task.subjects["gaokao-mathqa"].skipped == {"multi-answer": 7}  # line 149: "AD"
    assert task.subjects["jec-qa-kd"].skipped == {"missing answer": 1, "multi-answer": 520}
    assert set(task.left_out) == {
        f"{n}.jsonl" for n in "lsat-ar lsat-lr lsat-rc aqua-rat math gaokao-mathcloze".split()
    }
    # 5-shot from few_shot_prompts.csv; the file has 3 examples for some subsets.
    assert len(task.subjects["gaokao-mathqa"].shots) == 5
    assert len(task.subjects["logiqa-zh"].shots) == 3
    assert task.subjects["sat-en-without-passage"].shots[0].passage == ""
    assert task.subjects["sat-en"].shots[0].passage.startswith("Solar panel installations continue")


def _gaokao_raw_counts(root: Path) -> dict[str, int]:
    out = {}
    for name in GAOKAO_SINGLE:
        rows = json.loads((root / f"{name}.json").read_text(encoding="utf-8"))["example"]
        out[name.split("_", 1)[1]] = sum(
            len(r["answer"]) == 1 and r["answer"][0] in ("A", "B", "C", "D") for r in rows
        )
    return out


def test_gaokao_release_counts_in_both_layouts(shared_data: Path, tmp_path: Path) -> None:
    current = shared_data / "eval" / "gaokao" / "Data" / "Objective_Questions"
    raw = _gaokao_raw_counts(current)
    task = load_task("gaokao", shared_data / "eval" / "gaokao")
    assert {n: len(s.questions) for n, s in task.subjects.items()} == raw
    assert task.num_questions() == sum(raw.values()) == 1418
    assert len(task.left_out) == 7
    # The older layout (data/Multiple-choice_Questions/): the same files, linked, not copied.
    old = tmp_path / "data" / "Multiple-choice_Questions"
    old.mkdir(parents=True)
    for p in current.glob("*.json"):
        (old / p.name).symlink_to(p)
    assert load_task("gaokao", tmp_path).num_questions() == 1418


@pytest.mark.parametrize(
    ("task", "mode", "prompt", "limit"),
    [
        ("agieval", "all", "official", 1),
        ("agieval", "combined", "colossal", 1),
        ("gaokao", "all", "official", 2),
        ("cmmlu", "both", "colossal", 1),
    ],
)
def test_release_runs_end_to_end(
    shared_data: Path, stories: Path, tmp_path: Path, capsys, task, mode, prompt, limit
) -> None:
    out = tmp_path / task
    args = ["eval", "mc", "--task", task, "--data", str(shared_data / "eval" / task)]
    args += ["--model", str(stories), "--out", str(out), "--mode", mode, "--prompt", prompt]
    args += ["--limit", str(limit), "--max-new-tokens", "4"]
    if task == "cmmlu":
        args += ["--subjects", "agronomy", "arts"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    loaded = load_task(task, shared_data / "eval" / task)
    n_subjects = 2 if task == "cmmlu" else len(loaded.subjects)
    assert res["overall"]["n"] == limit * n_subjects
    assert res["prompt"] == prompt and res["config"]["mode"] == mode
    assert res["skipped"] == sum(
        sum(s.skipped.values()) for s in loaded.subjects.values() if s.name in res["subjects"]
    )
    if task == "agieval":
        assert "1,029 multi-answer" in printed  # the run header's totals (--show-counts: each)
        assert res["skipped_by_reason"]["multi-answer"] == 7 + 35 + 467 + 520
        assert res["metrics"][0] == "combined_acc" and "exact_match_acc" in res["metrics"]
        assert res["config"]["shots"] == 5
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    for p in preds:
        if "generate" in p:
            c = p["correct"]
            assert c["combined_acc"] == (c["first_token_acc"] or c["exact_match_acc"])
            assert isinstance(p["generate"]["text"], str)
        if "loglik" in p:
            assert len(p["loglik"]["scores"]) == 4
