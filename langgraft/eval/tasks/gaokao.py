"""GAOKAO-Bench (Zhang et al.) release layout: `data/Multiple-choice_Questions/<years>_<Subject>.json`
(the directory itself or its `Multiple-choice_Questions/` also work), each
`{"example": [{"question", "answer": ["B"], ...}]}` with the options written inside the question.

Scored as Colossal-LLaMA-2 reports it: 0-shot, the single-choice subsets (the multi-answer and
cloze subsets that ColossalEval lists as multi-choice are left out); rows whose answer is not one
letter A-D are skipped and counted. GAOKAO-Bench has no official categories; the grouping below is
langgraft's own.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from langgraft.errors import UserError
from langgraft.eval.data import MCQuestion, Subject, Task, clean, letter_index, read_json

log = logging.getLogger(__name__)

SINGLE_CHOICE = {
    "Biology_MCQs": ("生物", "STEM"),
    "Chemistry_MCQs": ("化学", "STEM"),
    "Math_I_MCQs": ("理科数学", "STEM"),
    "Math_II_MCQs": ("文科数学", "STEM"),
    "History_MCQs": ("历史", "Humanities"),
    "Political_Science_MCQs": ("政治", "Humanities"),
    "English_MCQs": ("英语", "Language"),
}
_YEARS = re.compile(r"^\d{4}-\d{4}_")


def read_subject(path: Path, name: str) -> Subject:
    display, category = SINGLE_CHOICE[name]
    subject = Subject(name=name, display=display, categories=(category,), language="zh")
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("example"), list):
        raise UserError(f"{path}: expected {{'example': [...]}}; is this a GAOKAO-Bench file?")
    for i, row in enumerate(data["example"]):
        where = f"{path}:example[{i}]"
        if not isinstance(row, dict) or "question" not in row or "answer" not in row:
            raise UserError(f"{where}: expected an object with 'question' and 'answer'")
        answer = row["answer"]
        letters = answer if isinstance(answer, list) else [answer]
        if len(letters) != 1 or str(letters[0]).strip().upper() not in ("A", "B", "C", "D"):
            subject.skipped += 1
            continue
        subject.questions.append(
            MCQuestion(clean(row["question"]), (), letter_index(letters[0], where), where)
        )
    return subject


def load(data_dir: Path, split: str | None) -> Task:
    if split not in (None, "test"):
        raise UserError(f"gaokao: split {split!r}: GAOKAO-Bench has only test questions")
    for root in (
        data_dir / "data" / "Multiple-choice_Questions",
        data_dir / "Multiple-choice_Questions",
        data_dir,
    ):
        files = sorted(root.glob("*.json"))
        if files:
            break
    else:
        raise UserError(
            f"{data_dir}: no GAOKAO-Bench *.json files (data/Multiple-choice_Questions)"
        )
    subjects = {}
    for path in files:
        name = _YEARS.sub("", path.stem)
        if name in SINGLE_CHOICE:
            subjects[name] = read_subject(path, name)
        else:
            log.info("gaokao: %s is not a single-choice subset; left out", path.name)
    return Task(name="gaokao", split="test", default_shots=0, subjects=subjects)
