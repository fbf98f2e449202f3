"""GAOKAO-Bench (Zhang et al.) as published (OpenLMLab/GAOKAO-Bench): the current layout
`Data/Objective_Questions/<years>_<Subject>.json` and the older `data/Multiple-choice_Questions/`
(the directory holding the files also works), each `{"keywords", "example": [{"question",
"answer": ["B"], ...}]}` with the options written inside the question.

Scored as Colossal-LLaMA-2 reports it: 0-shot, the seven subsets that GAOKAO-Bench's own
`Bench/Obj_Prompt.json` marks `single_choice`; the others (multi-answer physics, multi-question
reading, cloze, seven-choose-five) are left out and named in results.json. Rows whose answer is not
one letter A-D are skipped and counted per reason. GAOKAO-Bench has no official categories; the
grouping below is langgraft's own.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from langgraft.errors import UserError
from langgraft.eval.data import LETTERS, MCQuestion, Subject, Task, check_scorable
from langgraft.jsonio import read_json

log = logging.getLogger(__name__)

# name: (display, category, the subject word of the official prompt "请你做一道{word}选择题")
SINGLE_CHOICE = {
    "Biology_MCQs": ("生物", "STEM", "生物"),
    "Chemistry_MCQs": ("化学", "STEM", "化学"),
    "Math_I_MCQs": ("理科数学", "STEM", "数学"),
    "Math_II_MCQs": ("文科数学", "STEM", "数学"),
    "History_MCQs": ("历史", "Humanities", "历史"),
    "Political_Science_MCQs": ("政治", "Humanities", "政治"),
    "English_MCQs": ("英语", "Language", "英语"),
}
# Obj_Prompt.json question types of the subsets that are not single-choice.
NOT_SINGLE_CHOICE = {
    "Physics_MCQs": "multi-answer subset",
    "Chinese_Lang_and_Usage_MCQs": "multi-question subset",
    "Chinese_Modern_Lit": "multi-question subset",
    "English_Fill_in_Blanks": "multi-question subset",
    "English_Reading_Comp": "multi-question subset",
    "Geography_MCQs": "multi-question subset",
    "English_Cloze_Test": "five-out-of-seven subset",
}
_YEARS = re.compile(r"^\d{4}-\d{4}_")
LAYOUTS = (
    "Data/Objective_Questions",
    "data/Multiple-choice_Questions",
    "Objective_Questions",
    "Multiple-choice_Questions",
    ".",
)


def skip_reason(answer: object) -> str | None:
    letters = answer if isinstance(answer, list) else [answer]
    letters = [str(x).strip().upper() for x in letters if x is not None and str(x).strip()]
    if not letters:
        return "missing answer"
    if len(letters) > 1:
        return "multi-question"
    if len(letters[0]) > 1:
        return "multi-answer"
    if letters[0] not in LETTERS:
        return "answer not A-D"
    return None


def read_subject(path: Path, name: str) -> Subject:
    display, category, _ = SINGLE_CHOICE[name]
    subject = Subject(name=name, display=display, categories=(category,), language="zh")
    data = read_json(path, "data file")
    if not isinstance(data, dict) or not isinstance(data.get("example"), list):
        raise UserError(f"{path}: expected {{'example': [...]}}; is this a GAOKAO-Bench file?")
    for i, row in enumerate(data["example"]):
        where = f"{path}:example[{i}]"
        if not isinstance(row, dict) or not isinstance(row.get("question"), str):
            raise UserError(f"{where}: expected an object with a 'question' string")
        reason = skip_reason(row.get("answer"))
        if reason is not None:
            subject.skip(reason)
            continue
        answer = row["answer"]
        letter = str(answer[0] if isinstance(answer, list) else answer).strip().upper()
        subject.questions.append(
            MCQuestion(row["question"].strip(), (), LETTERS.index(letter), where)
        )
    check_scorable(subject, path)
    return subject


def load(data_dir: Path, split: str | None) -> Task:
    if split not in (None, "test"):
        raise UserError(f"gaokao: split {split!r}: GAOKAO-Bench has only test questions")
    for layout in LAYOUTS:
        files = sorted((data_dir / layout).glob("*.json"))
        if files:
            break
    else:
        raise UserError(
            f"{data_dir}: no GAOKAO-Bench *.json files (Data/Objective_Questions/ or "
            "data/Multiple-choice_Questions/)"
        )
    subjects, left_out = {}, {}
    for path in files:
        name = _YEARS.sub("", path.stem)
        if name in SINGLE_CHOICE:
            subjects[name] = read_subject(path, name)
        else:
            left_out[path.name] = NOT_SINGLE_CHOICE.get(name, "not a single-choice subset")
            log.info("gaokao: %s: %s; left out", path.name, left_out[path.name])
    return Task(name="gaokao", split="test", default_shots=0, subjects=subjects, left_out=left_out)
