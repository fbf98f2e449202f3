"""AGIEval (Zhong et al.) as published (ruixiangcui/AGIEval `data/`): `v1/<subset>.jsonl` rows
`{passage, question, options: ["(A)...", ...], label, answer, other}` and the few-shot examples in
`few_shot_prompts.csv` (one column per subset; rows `sample i` hold a Python dict literal, read with
`ast.literal_eval`, which evaluates literals only).

`--data` may be the release's `data/` folder, its parent, or `data/v1` itself.

Scored as Colossal-LLaMA-2 reports it: the 4-option subsets only (lsat-* and aqua-rat have 5
options; math and gaokao-mathcloze are cloze), 5-shot from `few_shot_prompts.csv` (3 where the
file has only 3 examples). Rows that are not single-choice over A-D are skipped and counted per
reason: the release has multi-answer rows in `jec-qa-*`, `gaokao-physics` and `gaokao-mathqa`
(e.g. `gaokao-mathqa.jsonl:149`, label "AD") and one row without a label (`jec-qa-kd.jsonl:212`).
"""

from __future__ import annotations

import ast
import csv
import logging
import re
from pathlib import Path
from typing import Any

from langgraft.errors import UserError
from langgraft.eval.data import (
    LETTERS,
    MCQuestion,
    Subject,
    Task,
    check_scorable,
    clean,
)
from langgraft.jsonio import iter_jsonl

log = logging.getLogger(__name__)

ENGLISH = "logiqa-en sat-math sat-en sat-en-without-passage gaokao-english".split()
CHINESE = (
    "logiqa-zh jec-qa-kd jec-qa-ca gaokao-chinese gaokao-geography gaokao-history gaokao-biology "
    "gaokao-chemistry gaokao-physics gaokao-mathqa"
).split()
LEFT_OUT = {
    **dict.fromkeys("lsat-ar lsat-lr lsat-rc aqua-rat".split(), "5 options"),
    **dict.fromkeys("math gaokao-mathcloze".split(), "cloze"),
}
_OPTION_PREFIX = re.compile(r"^\s*\(?\s*([A-Z])\s*[).．:：]\s*")


def _label(row: dict) -> str | list | None:
    label = row.get("label")
    return label if label not in (None, "", []) else None


def skip_reason(row: dict) -> str | None:
    """Why the protocol does not score `row` (None: it is scored)."""
    options, label = row.get("options"), _label(row)
    if label is None:
        return "missing answer"
    letters = "".join(label) if isinstance(label, list) else str(label).strip()
    if len(letters) != 1:
        return "multi-answer"
    if not isinstance(options, list) or len(options) != 4:
        return "not 4 options"
    if letters.upper() not in LETTERS:
        return "answer not A-D"
    # Options with a wrong or missing "(X)" prefix (a few dozen rows of logiqa-*, gaokao-history)
    # are scored as the official script and ColossalEval score them: the prompt quotes them as is.
    return None


def option_text(option: str) -> str:
    m = _OPTION_PREFIX.match(option)
    return clean(option[m.end() :] if m else option)


def parse_row(row: dict, where: str) -> MCQuestion | None:
    """A question, or None for a well-formed row that the protocol does not score."""
    for key in ("question", "options", "label"):
        if key not in row:
            raise UserError(f"{where}: missing key {key!r}; is this an AGIEval jsonl file?")
    if skip_reason(row) is not None:
        return None
    label = _label(row)
    letter = ("".join(label) if isinstance(label, list) else str(label)).strip().upper()
    texts = tuple(option_text(str(o)) for o in row["options"])
    return MCQuestion(
        question=str(row["question"]),
        options=texts,
        answer=LETTERS.index(letter),
        source=where,
        passage=str(row.get("passage") or ""),
        options_raw=tuple(str(o) for o in row["options"]),
    )


def read_subset(path: Path, name: str) -> Subject:
    lang = "en" if name in ENGLISH else "zh"
    subject = Subject(
        name=name,
        display=name,
        categories=("English" if lang == "en" else "Chinese",),
        language=lang,
    )
    for line, row in iter_jsonl(path):
        where = f"{path}:{line}"
        q = parse_row(row, where)
        if q is None:
            subject.skip(skip_reason(row) or "unscorable")
        else:
            subject.questions.append(q)
    check_scorable(subject, path)
    return subject


def read_few_shot(path: Path) -> dict[str, list[MCQuestion]]:
    """`{subset: examples}` from `few_shot_prompts.csv` (explanations are not used: the
    non-chain-of-thought few-shot setting)."""
    try:
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path}: cannot read the AGIEval few-shot file ({e})") from None
    if not rows or rows[0][:1] != [""]:
        raise UserError(f"{path}:1: not AGIEval's few_shot_prompts.csv (header ',lsat-ar,...')")
    out: dict[str, list[MCQuestion]] = {}
    for col, name in enumerate(rows[0][1:], 1):
        shots = []
        for line, row in enumerate(rows[1:], 2):
            if not row or not row[0].startswith("sample") or col >= len(row) or not row[col]:
                continue
            shots.append(_shot(row[col], f"{path}:{line}:{name}"))
        out[name] = shots
    return out


def _shot(cell: str, where: str) -> MCQuestion:
    try:
        d: Any = ast.literal_eval(cell)
    except (ValueError, SyntaxError, RecursionError, MemoryError):
        raise UserError(f"{where}: not a Python dict literal") from None
    if not isinstance(d, dict) or "question" not in d:
        raise UserError(f"{where}: expected a dict with 'question'")
    options = d.get("options") or []
    label = d.get("label")
    # The official script prints the label with str.format: "B", or "['A', 'D']" for several.
    return MCQuestion(
        question=str(d["question"]),
        options=(),
        answer=-1,
        source=where,
        passage=str(d.get("passage") or ""),
        options_raw=tuple(str(o) for o in options),
        label="{}".format("" if label is None else label),
    )


def find_root(data_dir: Path) -> tuple[Path, Path | None]:
    """(folder with the subset jsonl files, few_shot_prompts.csv or None)."""
    for root in (data_dir / "data" / "v1", data_dir / "v1", data_dir):
        if any(root.glob("*.jsonl")):
            for csv_dir in (root.parent, root, data_dir):
                if (csv_dir / "few_shot_prompts.csv").is_file():
                    return root, csv_dir / "few_shot_prompts.csv"
            return root, None
    raise UserError(f"{data_dir}: no AGIEval *.jsonl files (data/v1/*.jsonl as published)")


def load(data_dir: Path, split: str | None) -> Task:
    if split not in (None, "test"):
        raise UserError(f"agieval: split {split!r}: the release has only the test rows")
    root, shots_csv = find_root(data_dir)
    few_shot = read_few_shot(shots_csv) if shots_csv else {}
    subjects, left_out = {}, {}
    for path in sorted(root.glob("*.jsonl")):
        name = path.stem
        if name in LEFT_OUT:
            left_out[path.name] = LEFT_OUT[name]
        elif name not in ENGLISH + CHINESE:
            log.warning("agieval: unknown subset %s (%s); left out", name, path)
            left_out[path.name] = "unknown subset"
        else:
            subjects[name] = s = read_subset(path, name)
            # sat-en-without-passage uses sat-en's examples without their passages (official).
            pool = few_shot.get("sat-en" if name == "sat-en-without-passage" else name, [])
            if name == "sat-en-without-passage":
                pool = [_without_passage(q) for q in pool]
            s.shots = pool
    return Task(name="agieval", split="test", default_shots=5, subjects=subjects, left_out=left_out)


def _without_passage(q: MCQuestion) -> MCQuestion:
    from dataclasses import replace

    return replace(q, passage="")
