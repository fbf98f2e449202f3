"""Every prompt in one place: each benchmark's own template (`--prompt official`) and ColossalEval's
(`--prompt colossal`), as data. The style used is written into each results file.

A prompt is `header + shots + question`. The question ends with the answer cue, and the scored
continuation is `answer_sep + letter`, exactly as the shots show their answers, so the first-token
and log-likelihood scores look for the answer the shots taught.

Sources (read, not copied; the strings are the prompts themselves):
- MMLU: hendrycks/test `evaluate.py` (`format_example`, `gen_prompt`).
- CMMLU: haonan-li/CMMLU `src/mp_utils.py` (header "以下是关于{subject}的单项选择题，请直接给出正确答案的选项。").
- C-Eval: hkust-nlp/ceval `code/evaluator_series/evaluators/llama.py` (`generate_few_shot_prompt`:
  "以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。", `format_example`).
- AGIEval: ruixiangcui/AGIEval `src/dataset_loader.py` (`combine_prompt`, `concat_prompt`,
  `convert_few_shot`, setting "few-shot": header, "问题 {n}.   " numbering, "答案是 {label}").
  The official test prompt stops after the options and lets the model write "答案是 X"; for a
  logit read the cue "答案是" / "The answer is therefore" is appended (what every shot shows).
- GAOKAO-Bench: OpenLMLab/GAOKAO-Bench @ 6dbb24f `Bench/Obj_Prompt.json` (the `single_choice`
  prefix_prompt) + `question.strip()`; the cue "【答案】:" is the answer format the prompt asks for
  (the step-by-step 【解析】 it also asks for is skipped by a logit read).
- ColossalEval: hpcaitech/ColossalAI `applications/ColossalEval/colossal_eval/dataset/{mmlu,cmmlu,
  ceval,agieval,gaokaobench}.py` and `utils/conversation.py` (`get_few_shot_prefix`: few-shot
  prompts start "以下是考试中各个问题的答案。\\n\\n" / "The following are answers for questions in an
  exam.\\n\\n" and drop the zero-shot instruction; C-Eval and AGIEval keep theirs as a first
  "example", so their header appears after it; the plain template adds nothing else).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from langgraft.eval.data import LETTERS, MCQuestion, Subject

PROMPTS = ("official", "colossal")


@dataclass(frozen=True)
class Style:
    name: str
    """`task/prompt[/language]`."""
    header: str
    """Prompt start at 0 shots; `{subject}` (display name) and `{subject_title}` (Title Case)."""
    query: str
    """The scored question; fields `{number}`, `{passage}`, `{passage_block}` (passage + blank
    line, or nothing), `{question}`, `{options}`. Ends with the answer cue."""
    shot: str
    """A few-shot example: the query's fields + `{answer}`."""
    few_shot_header: str | None = None
    """Prompt start when shots are used (None: `header`)."""
    shot_end: str = "\n\n"
    """After each shot."""
    option: str = "{letter}. {text}"
    """One option: `{letter}`, `{text}` (prefix stripped) or `{raw}` (as the release writes it)."""
    option_join: str = "\n"
    answer_sep: str = ""
    """Between the cue and the letter, in scored continuations (as in the shots)."""
    extract: str = "first"
    """Answer extraction from generated text: `first` capital A-D not inside a word
    (ColossalEval's single_choice_accuracy), or `last` A-D (GAOKAO-Bench's single_choice)."""

    @property
    def answer_cue(self) -> str:
        return self.query.rsplit("\n", 1)[-1].rsplit("}", 1)[-1]

    def options(self, q: MCQuestion) -> str:
        raw = q.options_raw or tuple(f"({L}){t}" for L, t in zip(LETTERS, q.options, strict=False))
        texts = q.options or raw
        return self.option_join.join(
            self.option.format(letter=L, text=t, raw=r)
            for L, t, r in zip(LETTERS, texts, raw, strict=False)
        )

    def fields(self, q: MCQuestion) -> dict[str, str]:
        return {
            "passage": q.passage,
            "passage_block": q.passage + "\n\n" if q.passage else "",
            "question": q.question,
            "options": self.options(q),
        }

    def head(self, subject: Subject, shots: int) -> str:
        h = self.few_shot_header if shots and self.few_shot_header is not None else self.header
        return h.format(subject=subject.display, subject_title=title_case(subject.name))

    def answer(self, q: MCQuestion, index: int, as_text: bool) -> str:
        """The continuation for choice `index`: its letter, or its option text."""
        return self.answer_sep + (q.options[index] if as_text else LETTERS[index])


def title_case(name: str) -> str:
    """ColossalEval's MMLU subject name: `us_foreign_policy` -> `US Foreign Policy`."""
    return " ".join(w.title() if w != "us" else "US" for w in name.split("_"))


_CN_OPTIONS = dict(option="{letter}. {text}", option_join="\n")
_AGI_OFFICIAL = {
    "zh": Style(
        "agieval/official/zh",
        header="以下是考试中各个问题的答案。\n",
        query="问题 {number}.   {passage} {question}\n从以下选项中选择:    {options}\n答案是",
        shot="问题 {number}.   {passage} {question}\n从以下选项中选择:    {options}\n答案是 {answer}\n",
        shot_end="\n",
        option="{raw}",
        option_join=" ",
        answer_sep=" ",
    ),
    "en": Style(
        "agieval/official/en",
        header="Here are the answers for the problems in the exam.\n",
        query="Problem {number}.   {passage} {question}\n"
        "Choose from the following options:    {options}\nThe answer is therefore",
        shot="Problem {number}.   {passage} {question}\n"
        "Choose from the following options:    {options}\nThe answer is therefore {answer}\n",
        shot_end="\n",
        option="{raw}",
        option_join=" ",
        answer_sep=" ",
    ),
}
_COLOSSAL_ZH_EXAM = "以下是考试中各个问题的答案。\n\n"
_COLOSSAL_EN_EXAM = "The following are answers for questions in an exam.\n\n"
_AGI_COLOSSAL = {
    "zh": Style(
        "agieval/colossal/zh",
        header="",
        few_shot_header=_COLOSSAL_ZH_EXAM + "以下是考试中各个问题的答案。\n\n",
        query="{passage_block}问题：{question} 从以下选项中选择：{options}\n答案：",
        shot="问题：{passage} {question}\n从以下选项中选择：{options}\n答案：{answer}",
        option="{raw}",
        option_join=" ",
    ),
    "en": Style(
        "agieval/colossal/en",
        header="",
        few_shot_header=_COLOSSAL_EN_EXAM
        + "Here are the answers for the problems in the exam.\n\n",
        query="{passage_block}Question: {question} Choose from the following options: {options}\n"
        "Answer: ",
        shot="Question: {passage} {question}\nChoose from the following options: {options}\n"
        "Answer: {answer}",
        option="{raw}",
        option_join=" ",
    ),
}
_CMMLU_HEADER = "以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\n\n"
_CEVAL_HEADER = "以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n"
_GAOKAO_PREFIX = (
    "请你做一道{subject}选择题\n请你一步一步思考并将思考过程写在【解析】和<eoe>之间。你将从A，B，C，D中选出正确的"
    "答案，并写在【答案】和<eoa>之间。\n例如：【答案】: A <eoa>\n完整的题目回答的格式如下：\n【解析】 ... <eoe>\n"
    "【答案】 ... <eoa>\n请你严格按照上述格式作答。\n题目如下："
)

STYLES: dict[tuple[str, str, str], Style] = {
    ("mmlu", "official", "en"): Style(
        "mmlu/official",
        header="The following are multiple choice questions (with answers) about {subject}.\n\n",
        query="{question}\n{options}\nAnswer:",
        shot="{question}\n{options}\nAnswer: {answer}",
        answer_sep=" ",
    ),
    ("mmlu", "colossal", "en"): Style(
        "mmlu/colossal",
        header="The following is a single-choice question on {subject_title}. "
        "Answer the question by replying A, B, C or D.\n\n",
        few_shot_header=_COLOSSAL_EN_EXAM,
        query="Question: {question}\n{options}\nAnswer: ",
        shot="Question: {question}\n{options}\nAnswer: {answer}",
    ),
    ("cmmlu", "official", "zh"): Style(
        "cmmlu/official",
        header=_CMMLU_HEADER,
        query="{question}\n{options}\n答案：",
        shot="{question}\n{options}\n答案：{answer}",
        **_CN_OPTIONS,
    ),
    ("cmmlu", "colossal", "zh"): Style(
        "cmmlu/colossal",
        header=_CMMLU_HEADER,
        few_shot_header=_COLOSSAL_ZH_EXAM,
        query="题目：{question}\n{options}\n答案：",
        shot="题目：{question}\n{options}\n答案：{answer}",
        **_CN_OPTIONS,
    ),
    ("ceval", "official", "zh"): Style(
        "ceval/official",
        header=_CEVAL_HEADER,
        query="{question}\n{options}\n答案：",
        shot="{question}\n{options}\n答案：{answer}",
        **_CN_OPTIONS,
    ),
    ("ceval", "colossal", "zh"): Style(
        "ceval/colossal",
        header=_CEVAL_HEADER,
        few_shot_header=_COLOSSAL_ZH_EXAM + _CEVAL_HEADER,
        query="题目：{question}\n{options}\n答案：",
        shot="题目：{question}\n{options}\n答案：{answer}",
        **_CN_OPTIONS,
    ),
    ("agieval", "official", "zh"): _AGI_OFFICIAL["zh"],
    ("agieval", "official", "en"): _AGI_OFFICIAL["en"],
    ("agieval", "colossal", "zh"): _AGI_COLOSSAL["zh"],
    ("agieval", "colossal", "en"): _AGI_COLOSSAL["en"],
    ("gaokao", "official", "zh"): Style(
        "gaokao/official",
        header=_GAOKAO_PREFIX,
        query="{question}\n【答案】:",
        shot="{question}\n【答案】: {answer} <eoa>",
        answer_sep=" ",
        extract="last",
    ),
    ("gaokao", "colossal", "zh"): Style(
        "gaokao/colossal", header="", query="{question}\n答案：", shot="{question}\n答案：{answer}"
    ),
}


def style_for(task: str, prompt: str, language: str) -> Style:
    try:
        return STYLES[(task, prompt, language)]
    except KeyError:
        raise ValueError(f"no {prompt!r} prompt for {task} ({language})") from None


def styles_record(task: str, prompt: str, languages: set[str]) -> dict[str, dict[str, str]]:
    out = {}
    for lang in sorted(languages):
        style = style_for(task, prompt, lang)
        out[lang] = {**asdict(style), "answer_cue": style.answer_cue}
    return out


@dataclass
class PromptParts:
    """One question's prompt, kept in parts so shots can be dropped before anything is cut.
    The question may carry its number (AGIEval: "问题 {k+1}."), which depends on the shots kept."""

    header0: str
    header: str
    shots: list[str]
    lead: str
    """Question text before its number ("" when unnumbered)."""
    question: str
    """Question text after its number (all of it when unnumbered)."""
    numbered: bool = False
    extra: dict = field(default_factory=dict)

    def prefix(self, k: int) -> str:
        """The part shared by every question of the subject that uses `k` shots."""
        return (self.header if k else self.header0) + "".join(self.shots[:k])

    def render(self, k: int) -> str:
        return self.prefix(k) + self.lead + (str(k + 1) if self.numbered else "") + self.question


_MARK = "\x00number\x00"


def subject_prompts(
    subject: Subject, style: Style, n_shots: int, as_text: bool, questions: list[MCQuestion]
) -> list[PromptParts]:
    header0, header = style.head(subject, 0), style.head(subject, 1)
    shots = [
        style.shot.format(
            number=i + 1,
            answer=q.options[q.answer] if as_text and q.options else q.answer_text,
            **style.fields(q),
        )
        + style.shot_end
        for i, q in enumerate(subject.shots[:n_shots])
    ]
    out = []
    for q in questions:
        text = style.query.format(number=_MARK, **style.fields(q))
        lead, sep, rest = text.partition(_MARK)
        if not sep:
            lead, rest = "", text
        out.append(PromptParts(header0, header, shots, lead, rest, bool(sep)))
    return out
