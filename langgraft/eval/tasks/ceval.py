"""C-Eval (Huang et al.) release layout: `dev/` and `val/` holding `<subject>_<split>.csv` with
the header `id,question,A,B,C,D,answer` (+ `explanation` in dev). The test split has no answers,
so `val` is scored (as Colossal-LLaMA-2 and lm-eval-harness `ceval-valid` do)."""

from __future__ import annotations

from pathlib import Path

from langgraft.errors import UserError
from langgraft.eval.data import Subject, Task, require_dir
from langgraft.eval.tasks import (
    attach_shots,
    load_csv_subjects,
    split_files,
    subject_table,
    unknown_subject,
)

HEADER = ["id", "question", "A", "B", "C", "D", "answer"]

# hkust-nlp/ceval subject_mapping.json: Chinese name and category (clinical_medicine has none
# there; it is counted as Other).
SUBJECTS = {
    "STEM": "computer_network:计算机网络 operating_system:操作系统 computer_architecture:计算机组成 "
    "college_programming:大学编程 college_physics:大学物理 college_chemistry:大学化学 "
    "advanced_mathematics:高等数学 probability_and_statistics:概率统计 discrete_mathematics:离散数学 "
    "electrical_engineer:注册电气工程师 metrology_engineer:注册计量师 high_school_mathematics:高中数学 "
    "high_school_physics:高中物理 high_school_chemistry:高中化学 high_school_biology:高中生物 "
    "middle_school_mathematics:初中数学 middle_school_biology:初中生物 middle_school_physics:初中物理 "
    "middle_school_chemistry:初中化学 veterinary_medicine:兽医学",
    "Social Science": "college_economics:大学经济学 business_administration:工商管理 "
    "marxism:马克思主义基本原理 mao_zedong_thought:毛泽东思想和中国特色社会主义理论体系概论 "
    "education_science:教育学 teacher_qualification:教师资格 high_school_politics:高中政治 "
    "high_school_geography:高中地理 middle_school_politics:初中政治 middle_school_geography:初中地理",
    "Humanities": "modern_chinese_history:近代史纲要 "
    "ideological_and_moral_cultivation:思想道德修养与法律基础 logic:逻辑学 law:法学 "
    "chinese_language_and_literature:中国语言文学 art_studies:艺术学 professional_tour_guide:导游资格 "
    "legal_professional:法律职业资格 high_school_chinese:高中语文 high_school_history:高中历史 "
    "middle_school_history:初中历史",
    "Other": "civil_servant:公务员 sports_science:体育学 plant_protection:植物保护 "
    "basic_medicine:基础医学 clinical_medicine:临床医学 urban_and_rural_planner:注册城乡规划师 "
    "accountant:注册会计师 fire_engineer:注册消防工程师 "
    "environmental_impact_assessment_engineer:环境影响评价工程师 tax_accountant:税务师 physician:医师资格",
}
SUBJECT_INFO = subject_table(SUBJECTS)


def make_subject(name: str) -> Subject:
    if name in SUBJECT_INFO:
        display, cat = SUBJECT_INFO[name]
        cats: tuple[str, ...] = (cat,)
    else:
        display, cats = unknown_subject(name, "ceval")
    return Subject(name=name, display=display, categories=cats, language="zh")


def load(data_dir: Path, split: str | None) -> Task:
    split = split or "val"
    if split not in ("dev", "val"):
        raise UserError(f"ceval: split {split!r} is not dev or val (test has no answers)")
    files = split_files(require_dir(data_dir / split, "C-Eval split"), f"_{split}.csv")
    subjects = load_csv_subjects(files, HEADER, (1, 6), make_subject)
    dev_dir = require_dir(data_dir / "dev", "C-Eval dev split, the few-shot pool")
    shots = load_csv_subjects(split_files(dev_dir, "_dev.csv"), HEADER, (1, 6), make_subject)
    attach_shots(subjects, shots, dev_dir)
    return Task(name="ceval", split=split, default_shots=5, subjects=subjects)
