"""Every prompt template in one place; `TEMPLATES` is written into each results file.

A prompt is `header + shots + question`: the header names the subject (the wording of the MMLU and
CMMLU papers), each shot is a dev question followed by its answer and a blank line, and the
question ends with the answer cue ("Answer:" / "答案："). The answer follows the cue exactly as the
shots show it (" A" after "Answer:", "A" after "答案：", as in the official MMLU and CMMLU
scripts), so the first-token and log-likelihood scores look for the answer the shots taught.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from langgraft.eval.data import LETTERS, MCQuestion, Subject


@dataclass(frozen=True)
class Template:
    header: str
    """Opening line(s); `{subject}` is the subject's display name."""
    option: str
    """One option line; `{letter}` and `{text}`."""
    answer_cue: str
    """Ends every question; the answer comes right after it."""
    answer_sep: str
    """Between the cue and the answer, in shots and in scored continuations."""
    shot_end: str
    """After each shot's answer."""

    def question(self, q: MCQuestion) -> str:
        lines = [q.question]
        # Options written inside the question (GAOKAO-Bench) leave `q.options` empty.
        lines += [
            self.option.format(letter=L, text=t) for L, t in zip(LETTERS, q.options, strict=False)
        ]
        return "\n".join(lines) + "\n" + self.answer_cue

    def answer(self, q: MCQuestion, index: int, as_text: bool) -> str:
        """The continuation for choice `index`: its letter, or its option text."""
        return self.answer_sep + (q.options[index] if as_text else LETTERS[index])

    def shot(self, q: MCQuestion, as_text: bool) -> str:
        return self.question(q) + self.answer(q, q.answer, as_text) + self.shot_end


TEMPLATES: dict[str, Template] = {
    "en": Template(
        header="The following are multiple choice questions (with answers) about {subject}.\n\n",
        option="{letter}. {text}",
        answer_cue="Answer:",
        answer_sep=" ",
        shot_end="\n\n",
    ),
    "zh": Template(
        header="以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\n\n",
        option="{letter}. {text}",
        answer_cue="答案：",
        answer_sep="",
        shot_end="\n\n",
    ),
}


def templates_record() -> dict[str, dict[str, str]]:
    return {lang: asdict(t) for lang, t in TEMPLATES.items()}


@dataclass
class PromptParts:
    """One question's prompt, kept in parts so shots can be dropped before anything is cut."""

    header: str
    shots: list[str]
    question: str

    def prefix(self, k: int) -> str:
        """The part shared by every question of the subject that uses `k` shots."""
        return self.header + "".join(self.shots[:k])

    def render(self, k: int) -> str:
        return self.prefix(k) + self.question


def subject_prompts(subject: Subject, n_shots: int, as_text: bool) -> list[PromptParts]:
    t = TEMPLATES[subject.language]
    header = t.header.format(subject=subject.display)
    shots = [t.shot(s, as_text) for s in subject.shots[:n_shots]]
    return [PromptParts(header, shots, t.question(q)) for q in subject.questions]
