"""MMLU (Hendrycks et al.) in its original release layout: `dev/`, `val/`, `test/` holding
`<subject>_<split>.csv` without a header; columns question, A, B, C, D, answer letter."""

from __future__ import annotations

from pathlib import Path

from langgraft.errors import UserError
from langgraft.eval.data import Subject, Task, require_dir
from langgraft.eval.tasks import attach_shots, load_csv_subjects, split_files, unknown_subject

# Official category of each of the 57 subjects (hendrycks/test categories.py, via subcategories).
CATEGORIES = {
    "STEM": "abstract_algebra astronomy college_biology college_chemistry college_computer_science "
    "college_mathematics college_physics computer_security conceptual_physics electrical_engineering "
    "elementary_mathematics high_school_biology high_school_chemistry high_school_computer_science "
    "high_school_mathematics high_school_physics high_school_statistics machine_learning",
    "Humanities": "formal_logic high_school_european_history high_school_us_history "
    "high_school_world_history international_law jurisprudence logical_fallacies moral_disputes "
    "moral_scenarios philosophy prehistory professional_law world_religions",
    "Social Sciences": "econometrics high_school_geography high_school_government_and_politics "
    "high_school_macroeconomics high_school_microeconomics high_school_psychology human_sexuality "
    "professional_psychology public_relations security_studies sociology us_foreign_policy",
    "Other": "anatomy business_ethics clinical_knowledge college_medicine global_facts human_aging "
    "management marketing medical_genetics miscellaneous nutrition professional_accounting "
    "professional_medicine virology",
}
SUBJECT_CATEGORY = {s: c for c, names in CATEGORIES.items() for s in names.split()}


def make_subject(name: str) -> Subject:
    if name in SUBJECT_CATEGORY:
        display, cats = name.replace("_", " "), (SUBJECT_CATEGORY[name],)
    else:
        display, cats = unknown_subject(name, "mmlu")
    return Subject(name=name, display=display, categories=cats, language="en")


def load(data_dir: Path, split: str | None) -> Task:
    split = split or "test"
    if split not in ("dev", "val", "test"):
        raise UserError(f"mmlu: split {split!r} is not one of dev, val, test")
    files = split_files(require_dir(data_dir / split, "MMLU split"), f"_{split}.csv")
    subjects = load_csv_subjects(files, None, (0, 5), make_subject)
    dev_dir = require_dir(data_dir / "dev", "MMLU dev split, the few-shot pool")
    shots = load_csv_subjects(split_files(dev_dir, "_dev.csv"), None, (0, 5), make_subject)
    attach_shots(subjects, shots, dev_dir)
    return Task(name="mmlu", split=split, default_shots=5, subjects=subjects)
