"""The nouns of multiple-choice evaluation: a question, a subject, a task; and the strict readers
that every task adapter shares (CSV / JSON / JSON lines), whose errors name the file and row."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langgraft.errors import UserError
from langgraft.fsutil import not_utf8

LETTERS = "ABCD"


@dataclass(frozen=True)
class MCQuestion:
    question: str
    """Question text (with any passage already prepended)."""
    options: tuple[str, ...]
    """Option texts in letter order; empty when the options are written inside `question`
    (GAOKAO-Bench), which rules out `--continuation text`."""
    answer: int
    """Index of the correct letter (0 = A)."""
    source: str
    """`file:row` where the question came from, for error messages and predictions."""
    passage: str = ""
    """Reading passage the question refers to (AGIEval), kept apart: each benchmark's prompt
    places it differently."""
    options_raw: tuple[str, ...] = ()
    """Options exactly as the release writes them, e.g. `(A)text` (AGIEval prompts quote them)."""
    label: str = ""
    """The answer as the release writes it when it is not one letter (a few-shot example with
    several answers); shots print it, nothing scores it."""

    @property
    def answer_text(self) -> str:
        return self.label or LETTERS[self.answer]


@dataclass
class Subject:
    name: str
    """Identifier from the file name, e.g. `high_school_physics`."""
    display: str
    """Name used in the prompt header (Chinese name for Chinese tasks)."""
    categories: tuple[str, ...]
    """Categories the subject counts towards (CMMLU subjects may also count as `China specific`)."""
    language: str
    """`en` or `zh`: selects the prompt template."""
    questions: list[MCQuestion] = field(default_factory=list)
    """The split being scored."""
    shots: list[MCQuestion] = field(default_factory=list)
    """Few-shot pool (the dev split), used in order."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Rows of the release that the protocol does not score, counted per reason
    (`multi-answer`, `missing answer`, `not 4 options`, ...)."""

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def check_scorable(subject: Subject, path: Path) -> None:
    """A subset file none of whose rows can be scored is an error, not a subject silently
    missing from the results (exit 0 with one benchmark part fewer)."""
    if subject.questions:
        return
    if not subject.skipped:
        raise UserError(f"{path}: no questions in this file; remove it or restore its rows")
    why = ", ".join(f"{reason} {n}" for reason, n in sorted(subject.skipped.items()))
    raise UserError(
        f"{path}: none of its {sum(subject.skipped.values())} rows can be scored ({why}); the "
        "protocol scores single-choice questions over A-D: fix the rows or remove the file"
    )


@dataclass
class Task:
    name: str
    split: str
    default_shots: int
    subjects: dict[str, Subject]
    left_out: dict[str, str] = field(default_factory=dict)
    """Files of the release that the protocol does not score at all: `{file: reason}`."""

    def num_questions(self) -> int:
        return sum(len(s.questions) for s in self.subjects.values())


def letter_index(value: Any, where: str) -> int:
    letter = str(value).strip().upper()
    if len(letter) != 1 or letter not in LETTERS:
        raise UserError(
            f"{where}: answer {value!r} is not one of A, B, C, D; fix or remove the row"
        )
    return LETTERS.index(letter)


def read_csv_rows(path: Path, header: list[str] | None) -> Iterator[tuple[int, list[str]]]:
    """Yield (1-based line number, cells) of a CSV, checking the header when one is expected.

    `header=None` means the file has none (MMLU); each row must then have 6 cells.
    """
    try:
        f = path.open(encoding="utf-8-sig", newline="")
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    with f:
        reader = csv.reader(f)
        width = len(header) if header is not None else 6
        try:
            if header is not None:
                first = next(reader, None)
                got = [c.strip() for c in first or []]
                if got[: len(header)] != header:
                    raise UserError(
                        f"{path}:1: header {got} is not {header}; is --task right for this data?"
                    )
            for row in reader:
                line = reader.line_num
                if not any(c.strip() for c in row):
                    continue
                if len(row) < width:
                    raise UserError(
                        f"{path}:{line}: expected {width} columns, got {len(row)}; fix the row"
                    )
                yield line, row
        except csv.Error as e:
            raise UserError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None
        except UnicodeDecodeError:
            raise not_utf8(path, "data file") from None


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise UserError(f"{path}: no such directory ({what}); check --data")
    return path


def clean(text: Any) -> str:
    """Strip a cell; inner spaces and newlines are kept (they are part of some questions)."""
    return str(text).strip()
