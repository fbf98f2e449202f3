"""AGIEval (Zhong et al.) release layout: `<subset>.jsonl` files (in the directory or its
`data/v1/`), rows `{passage, question, options: ["(A)...", ...], label}`.

Scored as Colossal-LLaMA-2 reports it: the 4-option single-choice subsets only (lsat-* and aqua-rat
have 5 options; math and gaokao-mathcloze are cloze). Rows of those subsets that are not 4-option
single-choice (a few multi-answer or dirty rows) are skipped and counted. The release has no dev
split, so the default is 0-shot; a `dev/` directory in the same layout enables few-shot.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from langgraft.errors import UserError
from langgraft.eval.data import MCQuestion, Subject, Task, clean, letter_index, read_jsonl

log = logging.getLogger(__name__)

ENGLISH = "logiqa-en sat-math sat-en sat-en-without-passage gaokao-english".split()
CHINESE = (
    "logiqa-zh jec-qa-kd jec-qa-ca gaokao-chinese gaokao-geography gaokao-history gaokao-biology "
    "gaokao-chemistry gaokao-physics gaokao-mathqa"
).split()
NOT_FOUR_OPTION = "lsat-ar lsat-lr lsat-rc aqua-rat math gaokao-mathcloze".split()
_OPTION_PREFIX = re.compile(r"^\s*\(?\s*([A-Z])\s*[).．:：]\s*")


def parse_row(row: dict, where: str) -> MCQuestion | None:
    """A question, or None for a well-formed row that is not 4-option single-choice."""
    for key in ("question", "options", "label"):
        if key not in row:
            raise UserError(f"{where}: missing key {key!r}; is this an AGIEval jsonl file?")
    options, label = row["options"], row["label"]
    if isinstance(label, list):
        if len(label) != 1:
            return None
        label = label[0]
    if not isinstance(options, list) or len(options) != 4 or not label:
        return None
    texts = []
    for letter, opt in zip("ABCD", options, strict=True):
        m = _OPTION_PREFIX.match(str(opt))
        if m is None or m.group(1) != letter:
            return None
        texts.append(clean(str(opt)[m.end() :]))
    passage = clean(row.get("passage") or "")
    question = clean(row["question"])
    text = f"{passage}\n\n{question}" if passage else question
    return MCQuestion(text, tuple(texts), letter_index(label, where), where)


def read_subset(path: Path, name: str) -> Subject:
    lang = "en" if name in ENGLISH else "zh"
    subject = Subject(
        name=name,
        display=name,
        categories=("English" if lang == "en" else "Chinese",),
        language=lang,
    )
    for line, row in read_jsonl(path):
        q = parse_row(row, f"{path}:{line}")
        if q is None:
            subject.skipped += 1
        else:
            subject.questions.append(q)
    return subject


def load(data_dir: Path, split: str | None) -> Task:
    if split not in (None, "test"):
        raise UserError(f"agieval: split {split!r}: the release has only the test rows")
    root = data_dir / "data" / "v1" if (data_dir / "data" / "v1").is_dir() else data_dir
    files = {p.stem: p for p in sorted(root.glob("*.jsonl"))}
    if not files:
        raise UserError(f"{root}: no *.jsonl files; is this the AGIEval release (data/v1)?")
    subjects = {}
    for name, path in files.items():
        if name in NOT_FOUR_OPTION:
            log.info("agieval: %s is not a 4-option single-choice subset; left out", name)
        elif name not in ENGLISH + CHINESE:
            log.warning("agieval: unknown subset %s (%s); left out", name, path)
        else:
            subjects[name] = read_subset(path, name)
            dev = root / "dev" / path.name
            if dev.is_file():
                subjects[name].shots = read_subset(dev, name).questions
    return Task(name="agieval", split="test", default_shots=0, subjects=subjects)
