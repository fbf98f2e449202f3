"""Each benchmark's own prompt and ColossalEval's, pinned as the literal strings their sources
build (see langgraft/eval/prompts.py for the files they come from)."""

from __future__ import annotations

import pytest

from langgraft.eval.data import MCQuestion, Subject
from langgraft.eval.prompts import STYLES, style_for, subject_prompts

Q = MCQuestion("Q?", ("a", "b", "c", "d"), 2, "t:1")
SHOT = MCQuestion("S?", ("w", "x", "y", "z"), 1, "d:1")
AGI_Q = MCQuestion(
    "问?",
    ("甲", "乙", "丙", "丁"),
    0,
    "t:1",
    passage="材料。",
    options_raw=("(A)甲", "(B)乙", "(C)丙", "(D)丁"),
)
AGI_SHOT = MCQuestion(
    "例?", (), -1, "f:2", passage="", options_raw=("(A)x", "(B)y"), label="['A', 'B']"
)


def _render(task: str, prompt: str, lang: str, subject: Subject, q: MCQuestion, k: int) -> str:
    style = style_for(task, prompt, lang)
    return subject_prompts(subject, style, k, False, [q])[0].render(k)


def _subject(name: str, display: str, lang: str, shot: MCQuestion) -> Subject:
    return Subject(name, display, ("X",), lang, shots=[shot])


MMLU = _subject("us_foreign_policy", "us foreign policy", "en", SHOT)
CN = _subject("agronomy", "农学", "zh", SHOT)

CASES = {
    ("mmlu", "official", 1): "The following are multiple choice questions (with answers) about us "
    "foreign policy.\n\nS?\nA. w\nB. x\nC. y\nD. z\nAnswer: B\n\nQ?\nA. a\nB. b\nC. c\nD. d\nAnswer:",
    ("mmlu", "colossal", 0): "The following is a single-choice question on US Foreign Policy. "
    "Answer the question by replying A, B, C or D.\n\nQuestion: Q?\nA. a\nB. b\nC. c\nD. d\nAnswer: ",
    ("mmlu", "colossal", 1): "The following are answers for questions in an exam.\n\nQuestion: S?\n"
    "A. w\nB. x\nC. y\nD. z\nAnswer: B\n\nQuestion: Q?\nA. a\nB. b\nC. c\nD. d\nAnswer: ",
    (
        "cmmlu",
        "official",
        1,
    ): "以下是关于农学的单项选择题，请直接给出正确答案的选项。\n\nS?\nA. w\nB. x\nC. y\nD. z\n"
    "答案：B\n\nQ?\nA. a\nB. b\nC. c\nD. d\n答案：",
    (
        "cmmlu",
        "colossal",
        1,
    ): "以下是考试中各个问题的答案。\n\n题目：S?\nA. w\nB. x\nC. y\nD. z\n答案：B\n\n"
    "题目：Q?\nA. a\nB. b\nC. c\nD. d\n答案：",
    (
        "ceval",
        "official",
        1,
    ): "以下是中国关于农学考试的单项选择题，请选出其中的正确答案。\n\nS?\nA. w\nB. x\nC. y\n"
    "D. z\n答案：B\n\nQ?\nA. a\nB. b\nC. c\nD. d\n答案：",
    (
        "ceval",
        "colossal",
        0,
    ): "以下是中国关于农学考试的单项选择题，请选出其中的正确答案。\n\n题目：Q?\nA. a\nB. b\n"
    "C. c\nD. d\n答案：",
    (
        "ceval",
        "colossal",
        1,
    ): "以下是考试中各个问题的答案。\n\n以下是中国关于农学考试的单项选择题，请选出其中的正确答案。"
    "\n\n题目：S?\nA. w\nB. x\nC. y\nD. z\n答案：B\n\n题目：Q?\nA. a\nB. b\nC. c\nD. d\n答案：",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_csv_benchmark_prompts(case) -> None:
    task, prompt, k = case
    subject, lang = (MMLU, "en") if task == "mmlu" else (CN, "zh")
    assert _render(task, prompt, lang, subject, Q, k) == CASES[case]


def test_agieval_official_few_shot_numbering_and_labels() -> None:
    s = _subject("logiqa-zh", "logiqa-zh", "zh", AGI_SHOT)
    # ruixiangcui/AGIEval combine_prompt + concat_prompt + convert_few_shot ("few-shot" setting):
    # "问题 {i}.   " + passage + " " + question, options joined by spaces, "答案是 {label}" with the
    # label as str.format prints it, "\n" after each demo plus end_of_example "\n".
    assert _render("agieval", "official", "zh", s, AGI_Q, 1) == (
        "以下是考试中各个问题的答案。\n问题 1.    例?\n从以下选项中选择:    (A)x (B)y\n答案是 ['A', 'B']\n\n"
        "问题 2.   材料。 问?\n从以下选项中选择:    (A)甲 (B)乙 (C)丙 (D)丁\n答案是"
    )
    # Dropping the shot renumbers the question.
    assert _render("agieval", "official", "zh", s, AGI_Q, 0) == (
        "以下是考试中各个问题的答案。\n问题 1.   材料。 问?\n从以下选项中选择:    (A)甲 (B)乙 (C)丙 (D)丁\n答案是"
    )
    en = _subject("sat-math", "sat-math", "en", AGI_SHOT)
    q = MCQuestion("Q?", ("a", "b", "c", "d"), 0, "t", options_raw=("(A)a", "(B)b", "(C)c", "(D)d"))
    assert _render("agieval", "official", "en", en, q, 1) == (
        "Here are the answers for the problems in the exam.\nProblem 1.    例?\n"
        "Choose from the following options:    (A)x (B)y\nThe answer is therefore ['A', 'B']\n\n"
        "Problem 2.    Q?\nChoose from the following options:    (A)a (B)b (C)c (D)d\n"
        "The answer is therefore"
    )
    assert style_for("agieval", "official", "zh").answer_sep == " "


def test_agieval_colossal_prompts() -> None:
    s = _subject("logiqa-zh", "logiqa-zh", "zh", AGI_SHOT)
    # ColossalEval agieval.get_prompt: passage + "\n\n" + "问题：" + q + " 从以下选项中选择：" + options.
    assert _render("agieval", "colossal", "zh", s, AGI_Q, 0) == (
        "材料。\n\n问题：问? 从以下选项中选择：(A)甲 (B)乙 (C)丙 (D)丁\n答案："
    )
    # Few-shot: get_few_shot_prefix's header, then combine_prompt's own header as a first example.
    assert _render("agieval", "colossal", "zh", s, AGI_Q, 1) == (
        "以下是考试中各个问题的答案。\n\n以下是考试中各个问题的答案。\n\n问题： 例?\n从以下选项中选择：(A)x (B)y\n"
        "答案：['A', 'B']\n\n材料。\n\n问题：问? 从以下选项中选择：(A)甲 (B)乙 (C)丙 (D)丁\n答案："
    )


def test_gaokao_prompts() -> None:
    s = Subject("Math_I_MCQs", "数学", ("STEM",), "zh")
    q = MCQuestion("1．题\nA．1\nB．2\nC．3\nD．4", (), 1, "g:0")
    official = _render("gaokao", "official", "zh", s, q, 0)
    # GAOKAO-Bench Bench/Obj_Prompt.json, 2010-2022_Math_I_MCQs (single_choice), + question.
    assert official == (
        "请你做一道数学选择题\n请你一步一步思考并将思考过程写在【解析】和<eoe>之间。你将从A，B，C，D中选出正确的答案，"
        "并写在【答案】和<eoa>之间。\n例如：【答案】: A <eoa>\n完整的题目回答的格式如下：\n【解析】 ... <eoe>\n"
        "【答案】 ... <eoa>\n请你严格按照上述格式作答。\n题目如下：1．题\nA．1\nB．2\nC．3\nD．4\n【答案】:"
    )
    assert _render("gaokao", "colossal", "zh", s, q, 0) == "1．题\nA．1\nB．2\nC．3\nD．4\n答案："


def test_every_style_has_a_cue_and_extraction_rule() -> None:
    for (task, prompt, lang), st in STYLES.items():
        assert st.answer_cue.strip(), (task, prompt, lang)
        assert st.extract in ("first", "last")
    assert style_for("gaokao", "official", "zh").answer_cue == "【答案】:"
    with pytest.raises(ValueError, match="no 'colossal' prompt for mmlu \\(zh\\)"):
        style_for("mmlu", "colossal", "zh")
