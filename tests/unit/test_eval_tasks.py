"""Task adapters: each release layout on a small synthetic copy, CMMLU on the real files, and the
errors for malformed rows and unknown layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_helpers import CMMLU, write_csv

from langgraft.errors import UserError
from langgraft.eval import load_task
from langgraft.eval.tasks import cmmlu

CMMLU_HEADER = ["", "Question", "A", "B", "C", "D", "Answer"]
CEVAL_HEADER = ["id", "question", "A", "B", "C", "D", "answer"]


def test_mmlu_layout(tmp_path: Path) -> None:
    rows = [["What is 1+1?", "1", "2", "3", "4", "B"], ["Pick D", "a", "b", "c", "d", "D"]]
    write_csv(tmp_path / "dev" / "abstract_algebra_dev.csv", rows)
    write_csv(
        tmp_path / "test" / "abstract_algebra_test.csv", rows + [["x", "a", "b", "c", "d", "a"]]
    )
    write_csv(tmp_path / "val" / "abstract_algebra_val.csv", rows[:1])
    task = load_task("mmlu", tmp_path)
    s = task.subjects["abstract_algebra"]
    assert (task.split, task.default_shots, s.language) == ("test", 5, "en")
    assert s.display == "abstract algebra" and s.categories == ("STEM",)
    assert [q.answer for q in s.questions] == [1, 3, 0]  # lower-case answer accepted
    assert s.questions[0].options == ("1", "2", "3", "4")
    assert s.questions[2].source.endswith("abstract_algebra_test.csv:3")
    assert len(s.shots) == 2 and s.shots[0].question == "What is 1+1?"
    assert load_task("mmlu", tmp_path, "val").num_questions() == 1


def test_cmmlu_layout(tmp_path: Path) -> None:
    rows = [["0", "问题一", "甲", "乙", "丙", "丁", "C"]]
    write_csv(tmp_path / "dev" / "agronomy.csv", rows, CMMLU_HEADER)
    write_csv(tmp_path / "test" / "agronomy.csv", rows * 3, CMMLU_HEADER)
    task = load_task("cmmlu", tmp_path)
    s = task.subjects["agronomy"]
    assert s.display == "农学" and s.categories == ("Other",) and s.language == "zh"
    assert [q.answer for q in s.questions] == [2, 2, 2] and s.questions[0].options[3] == "丁"


def test_ceval_layout_scores_val(tmp_path: Path) -> None:
    dev = [["0", "题", "a", "b", "c", "d", "A", "解析"]]
    write_csv(tmp_path / "dev" / "computer_network_dev.csv", dev, CEVAL_HEADER + ["explanation"])
    write_csv(
        tmp_path / "val" / "computer_network_val.csv",
        [["0", "题", "a", "b", "c", "d", "D"]],
        CEVAL_HEADER,
    )
    write_csv(
        tmp_path / "test" / "computer_network_test.csv",
        [["0", "题", "a", "b", "c", "d"]],
        CEVAL_HEADER[:-1],
    )
    task = load_task("ceval", tmp_path)
    s = task.subjects["computer_network"]
    assert task.split == "val" and s.display == "计算机网络" and s.categories == ("STEM",)
    assert s.questions[0].answer == 3 and s.shots[0].answer == 0
    with pytest.raises(UserError, match="test has no answers"):
        load_task("ceval", tmp_path, "test")
    # Scored in both modes under C-Eval's own header.
    from eval_helpers import tiny_model, tokenizer

    from langgraft.eval import McOptions, evaluate_mc

    r = evaluate_mc(tiny_model(), tokenizer(), task, McOptions(mode="both"))
    assert r["overall"]["n"] == 1 and r["metrics"] == ["first_token_acc", "loglik_acc"]
    assert r["templates"]["zh"]["header"].startswith("以下是中国关于{subject}考试的单项选择题")
    assert r["records"][0]["shots"] == 1


def test_agieval_layout(tmp_path: Path) -> None:
    root = tmp_path / "data" / "v1"
    root.mkdir(parents=True)
    rows = [
        {
            "passage": "P.",
            "question": "Q1?",
            "options": ["(A)a", "(B)b", "(C)c", "(D)d"],
            "label": "B",
        },
        {
            "passage": None,
            "question": "Q2?",
            "options": ["(A)a", "(B)b", "(C)c", "(D)d"],
            "label": ["A", "C"],
        },
        {"passage": None, "question": "Q3?", "options": ["(A) x", "(B) y", "(C) z"], "label": "A"},
        {
            "passage": None,
            "question": "Q4?",
            "options": ["(A)a", "(B)b", "(C)c", "(D)d"],
            "label": "AD",
        },
        {
            "passage": None,
            "question": "Q5?",
            "options": ["(A)a", "(B)b", "(C)c", "(D)d"],
            "label": [],
        },
        {
            "passage": None,
            "question": "Q6?",
            "options": ["A a", "B b", "(C)c", "(C)d"],
            "label": "D",
        },
    ]
    (root / "logiqa-zh.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (root / "lsat-ar.jsonl").write_text(json.dumps(rows[0]) + "\n")  # 5-option subset: left out
    (root / "math.jsonl").write_text(json.dumps(rows[0]) + "\n")  # cloze: left out
    shots = [
        ["", "logiqa-zh"],
        [
            "sample 1",
            str({"passage": None, "question": "S?", "options": ["(A)x", "(B)y"], "label": "B"}),
        ],
        ["explanation 1", "because"],
    ]
    write_csv(tmp_path / "data" / "few_shot_prompts.csv", shots)
    task = load_task("agieval", tmp_path)
    assert list(task.subjects) == ["logiqa-zh"] and task.default_shots == 5
    assert task.left_out == {"lsat-ar.jsonl": "5 options", "math.jsonl": "cloze"}
    s = task.subjects["logiqa-zh"]
    assert s.skipped == {"multi-answer": 2, "not 4 options": 1, "missing answer": 1}
    assert [q.question for q in s.questions] == ["Q1?", "Q6?"]
    q = s.questions[0]
    assert (q.passage, q.question, q.options, q.answer) == ("P.", "Q1?", ("a", "b", "c", "d"), 1)
    assert q.options_raw == ("(A)a", "(B)b", "(C)c", "(D)d")
    # A dirty option prefix is scored as the release writes it (official script, ColossalEval).
    assert s.questions[1].options == ("A a", "B b", "c", "d") and s.questions[1].answer == 3
    assert len(s.shots) == 1 and s.shots[0].answer_text == "B"
    assert load_task("agieval", tmp_path / "data").num_questions() == 2  # data/ given directly
    (root / "logiqa-zh.jsonl").write_text(json.dumps({"question": "Q", "label": "A"}) + "\n")
    with pytest.raises(UserError, match=r"logiqa-zh.jsonl:1: missing key 'options'"):
        load_task("agieval", tmp_path)


@pytest.mark.parametrize("layout", ["Data/Objective_Questions", "data/Multiple-choice_Questions"])
def test_gaokao_layouts(tmp_path: Path, layout: str) -> None:
    root = tmp_path / layout
    root.mkdir(parents=True)
    example = [
        {"question": "1．题目\nA．甲\nB．乙\nC．丙\nD．丁 ", "answer": ["C"], "index": 0},
        {"question": "2．多选", "answer": ["AB"], "index": 1},
        {"question": "3．两小题", "answer": ["A", "B"], "index": 2},
        {"question": "4．无答案", "answer": [], "index": 3},
    ]
    (root / "2010-2022_Math_I_MCQs.json").write_text(json.dumps({"example": example}))
    (root / "2010-2022_Physics_MCQs.json").write_text(json.dumps({"example": example}))
    task = load_task("gaokao", tmp_path)
    assert list(task.subjects) == ["Math_I_MCQs"] and task.default_shots == 0
    assert task.left_out == {"2010-2022_Physics_MCQs.json": "multi-answer subset"}
    s = task.subjects["Math_I_MCQs"]
    assert s.skipped == {"multi-answer": 1, "multi-question": 1, "missing answer": 1}
    assert s.questions[0].answer == 2 and s.questions[0].options == ()
    assert s.questions[0].question == "1．题目\nA．甲\nB．乙\nC．丙\nD．丁"


def test_real_cmmlu_counts() -> None:
    task = load_task("cmmlu", CMMLU)
    assert len(task.subjects) == 67 and set(task.subjects) == set(cmmlu.SUBJECT_INFO)
    assert task.num_questions() == 11_582
    assert sum(len(s.shots) for s in task.subjects.values()) == 335
    assert all(len(s.shots) == 5 for s in task.subjects.values())
    cats = {c for s in task.subjects.values() for c in s.categories}
    assert cats == {"STEM", "Humanities", "Social Science", "Other", "China specific"}
    assert sum("China specific" in s.categories for s in task.subjects.values()) == 15
    q = task.subjects["agronomy"].shots[0]
    assert q.question == "肉牛屠宰后，胴体的哪个部位肉质较好" and q.answer == 2


def test_malformed_rows_name_file_and_row(tmp_path: Path) -> None:
    write_csv(
        tmp_path / "dev" / "agronomy.csv", [["0", "q", "a", "b", "c", "d", "A"]], CMMLU_HEADER
    )
    write_csv(
        tmp_path / "test" / "agronomy.csv",
        [["0", "q", "a", "b", "c", "d", "A"], ["1", "q", "a", "b", "c", "d", "E"]],
        CMMLU_HEADER,
    )
    with pytest.raises(
        UserError, match=r"test/agronomy.csv:3: answer 'E' is not one of A, B, C, D"
    ):
        load_task("cmmlu", tmp_path)
    write_csv(tmp_path / "test" / "agronomy.csv", [["0", "q", "a", "b"]], CMMLU_HEADER)
    with pytest.raises(UserError, match=r"agronomy.csv:2: expected 7 columns, got 4"):
        load_task("cmmlu", tmp_path)


def test_unknown_layouts(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such directory"):
        load_task("cmmlu", tmp_path)
    with pytest.raises(UserError, match=r"header .* is not .*is --task right"):
        load_task("cmmlu", _as_ceval(tmp_path))
    with pytest.raises(UserError, match="no \\*_test.csv files"):
        load_task("mmlu", CMMLU)
    with pytest.raises(UserError, match="unknown task"):
        load_task("hellaswag", tmp_path)
    (tmp_path / "notes.json").write_text("{}")  # not a single-choice subset: left out
    with pytest.raises(UserError, match="no gaokao questions found"):
        load_task("gaokao", tmp_path)
    (tmp_path / "2010-2022_Biology_MCQs.json").write_text("{not json")
    with pytest.raises(UserError, match=r"Biology_MCQs.json:1: invalid JSON"):
        load_task("gaokao", tmp_path)
    (tmp_path / "2010-2022_Biology_MCQs.json").write_bytes(b'{"a": "\xe7\x94"}')  # cut UTF-8
    with pytest.raises(UserError, match=r"Biology_MCQs.json: not UTF-8 text \(byte 0xe7 at 7\)"):
        load_task("gaokao", tmp_path)


def _as_ceval(root: Path) -> Path:
    """A C-Eval-shaped directory given to the CMMLU adapter."""
    for split in ("dev", "test"):
        write_csv(
            root / "c" / split / "law.csv", [["0", "q", "a", "b", "c", "d", "A"]], CEVAL_HEADER
        )
    return root / "c"
