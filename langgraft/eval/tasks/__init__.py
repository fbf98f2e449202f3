"""Task adapters: each turns one benchmark's release layout into a `Task` (subjects, the split to
score, the few-shot pool). They share `load_csv_subjects`; the scorer never sees a file."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path

from langgraft.errors import UserError
from langgraft.eval.data import MCQuestion, Subject, Task, clean, letter_index, read_csv_rows

log = logging.getLogger(__name__)

TASKS: dict[str, str] = {
    "mmlu": "langgraft.eval.tasks.mmlu",
    "cmmlu": "langgraft.eval.tasks.cmmlu",
    "ceval": "langgraft.eval.tasks.ceval",
    "agieval": "langgraft.eval.tasks.agieval",
    "gaokao": "langgraft.eval.tasks.gaokao",
}


def load_task(name: str, data_dir: str | Path, split: str | None = None) -> Task:
    """Load task `name` from its release directory; `split=None` picks the task's scored split."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    module = importlib.import_module(TASKS[name])
    task: Task = module.load(Path(data_dir), split)
    if not task.subjects or not task.num_questions():
        raise UserError(
            f"{data_dir}: no {name} questions found; is this the {name} release layout?"
        )
    return task


def load_csv_subjects(
    files: dict[str, Path],
    header: list[str] | None,
    columns: tuple[int, int],
    make_subject: Callable[[str], Subject],
) -> dict[str, Subject]:
    """Read `{subject: csv}`; `columns` = (index of the question cell, index of the answer cell),
    with options A-D in the four cells after the question."""
    subjects: dict[str, Subject] = {}
    q_col, a_col = columns
    for name, path in sorted(files.items()):
        subject = make_subject(name)
        for line, row in read_csv_rows(path, header):
            where = f"{path}:{line}"
            options = tuple(clean(c) for c in row[q_col + 1 : q_col + 5])
            subject.questions.append(
                MCQuestion(clean(row[q_col]), options, letter_index(row[a_col], where), where)
            )
        subjects[name] = subject
    return subjects


def split_files(split_dir: Path, suffix: str) -> dict[str, Path]:
    """`{subject: path}` for `<subject><suffix>` files in a split directory."""
    files = {p.name[: -len(suffix)]: p for p in split_dir.glob(f"*{suffix}") if p.is_file()}
    if not files:
        raise UserError(f"{split_dir}: no *{suffix} files; is this the right layout for --task?")
    return files


def attach_shots(subjects: dict[str, Subject], shots: dict[str, Subject], where: Path) -> None:
    for name, subject in subjects.items():
        if name not in shots:
            raise UserError(f"{where}: no dev file for subject {name!r}; few-shot needs one")
        subject.shots = shots[name].questions


def subject_table(subjects: dict[str, str]) -> dict[str, tuple[str, str]]:
    """{name: (display name, category)} from {category: "name:显示名 name2:显示名2 ..."}."""
    return {
        item.split(":")[0]: (item.split(":")[1], cat)
        for cat, items in subjects.items()
        for item in items.split()
    }


def unknown_subject(name: str, task: str) -> tuple[str, tuple[str, ...]]:
    log.warning("%s: subject %r is not in the official list; category 'Other'", task, name)
    return name.replace("_", " "), ("Other",)
