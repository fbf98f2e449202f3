"""Multiple-choice evaluation: a `Task` + model + tokenizer -> per-question records + summary.

    from langgraft.eval import load_task, evaluate_mc, McOptions
    task = load_task("cmmlu", "../shared/data/eval/cmmlu")
    result = evaluate_mc(model, tokenizer, task, McOptions(limit=20))
    result["overall"]["first_token_acc"]["acc"]

Prompts are tokenized whole (BOS + header + shots + question), so the naive and the shared-prefix
paths see identical token ids; the shared prefix is found on those ids, never assumed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

from tqdm import tqdm

from langgraft.errors import UserError
from langgraft.eval.data import LETTERS, Subject, Task
from langgraft.eval.greedy import extract_letter, greedy_generate
from langgraft.eval.progress import Progress
from langgraft.eval.prompts import PromptParts, Style, style_for, styles_record, subject_prompts
from langgraft.eval.report import summarize
from langgraft.eval.scorer import Request, common_prefix_len, letter_variants, score_requests

log = logging.getLogger(__name__)

Mode = Literal["first-token", "loglik", "both", "generate", "combined", "all"]
# Which scorers each mode runs.
MODE_PARTS: dict[str, tuple[str, ...]] = {
    "first-token": ("first_token",),
    "loglik": ("loglik",),
    "both": ("first_token", "loglik"),
    "generate": ("generate",),
    "combined": ("first_token", "generate"),
    "all": ("first_token", "loglik", "generate"),
}
# The seed's protocol: AGIEval counts a question if first-token or exact match is right.
DEFAULT_MODE = {"agieval": "combined"}


@dataclass
class McOptions:
    shots: int | None = None
    """Few-shot examples (default: the task's: 5 from the dev split, AGIEval 5 from
    few_shot_prompts.csv, GAOKAO 0)."""
    mode: Mode | None = None
    """first-token: next-token logits restricted to the answer letters (ColossalEval); loglik:
    summed log-probability of each continuation (lm-eval-harness); both; generate: greedy
    generation + answer extraction (exact match); combined: first-token, exact match and their OR
    (ColossalEval's AGIEval metric); all. Default: combined for AGIEval, else first-token."""
    prompt: Literal["official", "colossal"] = "official"
    """official: each benchmark's own template; colossal: ColossalEval's prompts."""
    max_new_tokens: int = 32
    """Greedy generation length in generate/combined modes (ColossalEval: 32)."""
    continuation: Literal["letter", "text"] = "letter"
    """loglik continuations: the answer letter, or the option text (adds length-normalised acc)."""
    batch_size: int | None = None
    """Question suffixes per forward pass (default: as many as fit a token budget sized to the
    device, 2,048 padded tokens on CPU, 32,768 on CUDA)."""
    max_length: int | None = None
    """Prompt budget in tokens (default: the model's max_position_embeddings). Shots are dropped
    before the question is cut."""
    shared_prefix: bool = True
    """Run the few-shot prefix once per subject and batch the questions behind its KV cache."""
    limit: int | None = None
    """Score only the first N (>= 1) questions of each subject (quick probes)."""
    subjects: list[str] | None = None
    """Score only these subjects."""


@dataclass
class _Item:
    """One question's token ids and where its answers are read."""

    subject: str
    index: int
    shots: int
    ids: list[int]
    truncated: bool
    cont_ids: list[list[int]] = field(default_factory=list)
    cont_chars: list[int] = field(default_factory=list)
    give_back: list[int] = field(default_factory=list)


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=True)["input_ids"] if texts else []


def _tokenize_tails(
    tokenizer: Any, tails: list[str], conts: list[list[str]]
) -> list[tuple[list[int], list[list[int]]]]:
    if not tails:
        return []
    alone = tokenizer(tails, add_special_tokens=False)["input_ids"]
    joined = tokenizer(
        [t + c for t, cs in zip(tails, conts, strict=True) for c in cs], add_special_tokens=False
    )["input_ids"]
    n = len(LETTERS)
    return [(alone[i], joined[i * n : (i + 1) * n]) for i in range(len(tails))]


def _fit(tokenizer: Any, parts: PromptParts, n_shots: int, ids: list[int], budget: int):
    """Drop shots, then cut the middle of the question, until the prompt fits `budget` tokens."""
    k = n_shots
    while len(ids) > budget and k > 0:
        k -= 1
        ids = _encode(tokenizer, [parts.render(k)])[0]
    if len(ids) <= budget:
        return ids, k, False
    # Keep the start (BOS, header) and the end (options, answer cue): the model must still see
    # what it is asked to answer.
    head = budget // 2
    return ids[:head] + ids[len(ids) - (budget - head) :], 0, True


def _items_for_subject(
    tokenizer, subject: Subject, task: Task, opts: McOptions, style: Style, budget_for: int
) -> tuple[list[_Item], int]:
    n_shots = task.default_shots if opts.shots is None else opts.shots
    if n_shots > 0 and not subject.shots:
        raise UserError(
            f"{task.name}/{subject.name}: --shots {n_shots} but this subject has no few-shot "
            "examples (dev split / few_shot_prompts.csv); use --shots 0"
        )
    n_shots = min(n_shots, len(subject.shots))
    as_text = opts.continuation == "text"
    questions = subject.questions[: opts.limit] if opts.limit else subject.questions
    parts = subject_prompts(subject, style, n_shots, as_text, questions)
    full = _encode(tokenizer, [p.render(n_shots) for p in parts])
    # Continuation tokens from the question's tail alone, one batched call per subject:
    # tokenizing the whole prompt again per choice would cost 4x; the tail is where a
    # continuation could merge with the cue.
    if as_text and any(not q.options for q in questions):
        q = next(q for q in questions if not q.options)
        raise UserError(f"{q.source}: options are inside the question; use --continuation letter")
    conts_all = [[style.answer(q, c, as_text) for c in range(len(LETTERS))] for q in questions]
    tails_all = _tokenize_tails(tokenizer, [pp.question for pp in parts], conts_all)
    items = []
    for i, (pp, ids) in enumerate(zip(parts, full, strict=True)):
        conts = conts_all[i]
        tail, tails = tails_all[i]
        lcps = [common_prefix_len(tail, t) for t in tails]
        cont_ids = [t[n:] for t, n in zip(tails, lcps, strict=True)]
        reserve = max(len(c) for c in cont_ids)
        ids, k, cut = _fit(tokenizer, pp, n_shots, ids, budget_for - reserve)
        items.append(
            _Item(
                subject.name,
                i,
                k,
                ids,
                cut,
                cont_ids,
                [len(c.strip()) for c in conts],
                [len(tail) - n for n in lcps],
            )
        )
    return items, n_shots


# Off a terminal (a log file, CI, nohup) there is no bar: a line this often says how far the run
# is, and the first one, after the first subject, how long the whole run should take.
def _requests(item: _Item, variant_ids: list[int], parts: tuple[str, ...]) -> list[Request]:
    """First request: the prompt, read at its end; then one per multi-token continuation."""
    last = len(item.ids) - 1
    wanted = list(variant_ids) if "first_token" in parts else []
    single = all(len(c) == 1 for c in item.cont_ids) and not any(item.give_back)
    loglik = "loglik" in parts
    if loglik and single:
        wanted += [c[0] for c in item.cont_ids]
    reqs = [Request(item.ids, [(last, wanted)])] if wanted else []
    if loglik and not single:
        for cont, back in zip(item.cont_ids, item.give_back, strict=True):
            ctx = item.ids[: len(item.ids) - back]
            reqs.append(
                Request(ctx + cont[:-1], [(len(ctx) - 1 + j, [t]) for j, t in enumerate(cont)])
            )
    return reqs


def check_options(opts: McOptions) -> None:
    """Refuse options whose meaning would silently change (e.g. `--limit -1` slicing off the last
    question)."""
    if opts.limit is not None and opts.limit < 1:
        raise UserError(f"--limit {opts.limit}: must be >= 1 (leave it out to score everything)")
    if opts.shots is not None and opts.shots < 0:
        raise UserError(f"--shots {opts.shots}: must be >= 0")
    if opts.batch_size is not None and opts.batch_size < 1:
        raise UserError(f"--batch-size {opts.batch_size}: must be >= 1")
    if opts.max_length is not None and opts.max_length < 8:
        raise UserError(f"--max-length {opts.max_length}: must be >= 8 tokens")
    if opts.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens {opts.max_new_tokens}: must be >= 1")


def resolved_mode(task: Task, opts: McOptions) -> str:
    return opts.mode or DEFAULT_MODE.get(task.name, "first-token")


def evaluate_mc(model: Any, tokenizer: Any, task: Task, opts: McOptions | None = None) -> dict:
    """Score `task` and return the results dict (summary + per-question records)."""
    opts = opts or McOptions()
    check_options(opts)
    mode = resolved_mode(task, opts)
    parts = MODE_PARTS[mode]
    if opts.continuation == "text" and parts != ("loglik",):
        raise UserError("--continuation text needs --mode loglik (first-token reads letters only)")
    subjects: list[Subject] = list(task.subjects.values())
    if opts.subjects:
        missing = sorted(set(opts.subjects) - set(task.subjects))
        if missing:
            raise UserError(f"{task.name}: unknown subject(s) {', '.join(missing)}")
        subjects = [task.subjects[s] for s in opts.subjects]
    max_len = opts.max_length or int(getattr(model.config, "max_position_embeddings", 2048))
    languages = {s.language for s in subjects}
    styles = {lang: style_for(task.name, opts.prompt, lang) for lang in languages}
    cues = sorted({st.answer_cue + st.answer_sep for st in styles.values()})
    variants = letter_variants(tokenizer, LETTERS, [*cues, "Answer: ", "答案："])
    flat_variants = [t for L in LETTERS for t in variants[L]]
    gen_budget = opts.max_new_tokens if "generate" in parts else 0
    records: list[dict] = []
    model.eval()
    total = sum(len(s.questions[: opts.limit] if opts.limit else s.questions) for s in subjects)
    progress = Progress(task.name, total)
    for subject in tqdm(subjects, desc=f"{task.name}", unit="subject", disable=None):
        style = styles[subject.language]
        items, _ = _items_for_subject(tokenizer, subject, task, opts, style, max_len - gen_budget)
        by_shots: dict[int, list[_Item]] = defaultdict(list)
        for it in items:
            by_shots[it.shots].append(it)
        for group in by_shots.values():
            reqs = [_requests(it, flat_variants, parts) for it in group]
            flat = [r for rs in reqs for r in rs]
            scores = score_requests(model, flat, opts.batch_size, opts.shared_prefix)
            texts: list[str | None] = [None] * len(group)
            if "generate" in parts:
                texts = list(
                    greedy_generate(
                        model,
                        tokenizer,
                        [it.ids for it in group],
                        opts.max_new_tokens,
                        opts.batch_size or _generate_rows(model, group, opts.max_new_tokens),
                    )
                )
            pos = 0
            for it, rs, text in zip(group, reqs, texts, strict=True):
                got = scores[pos : pos + len(rs)]
                pos += len(rs)
                records.append(_record(subject, it, got, variants, parts, text, style))
            progress.advance(len(group))
    records.sort(key=lambda r: (r["subject"], r["index"]))
    metrics = _metric_names(parts, opts)
    result = summarize(task, records, metrics)
    shots = task.default_shots if opts.shots is None else opts.shots
    result["config"] = {**vars(opts), "mode": mode, "max_length": max_len, "shots": shots}
    result["prompt"] = opts.prompt
    result["templates"] = styles_record(task.name, opts.prompt, languages)
    result["letter_variants"] = {
        L: [{"id": t, "piece": tokenizer.convert_ids_to_tokens(t)} for t in variants[L]]
        for L in LETTERS
    }
    result["letter_variant_rule"] = "max log-probability over the variants of each letter"
    result["torch_dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
    result["records"] = records
    return result


def _generate_rows(model: Any, group: list[_Item], new_tokens: int) -> int:
    from langgraft.eval.scorer import batch_token_budget

    width = max(len(it.ids) for it in group) + new_tokens
    return max(1, batch_token_budget(model.device) // width)


def _metric_names(parts: tuple[str, ...], opts: McOptions) -> list[str]:
    names = []
    if "first_token" in parts and "generate" in parts:
        names.append("combined_acc")  # the headline when both parts ran
    if "first_token" in parts:
        names.append("first_token_acc")
    if "loglik" in parts:
        names.append("loglik_acc")
        if opts.continuation == "text":
            names.append("loglik_acc_norm")
    if "generate" in parts:
        names.append("exact_match_acc")
    return names


def _argmax(xs: list[float]) -> int:
    return max(range(len(xs)), key=lambda i: xs[i])


def _record(
    subject: Subject,
    it: _Item,
    got: list[list[Any]],
    variants,
    parts: tuple[str, ...],
    text: str | None,
    style: Style,
) -> dict:
    q = subject.questions[it.index]
    rec: dict[str, Any] = {
        "subject": subject.name,
        "index": it.index,
        "source": q.source,
        "answer": LETTERS[q.answer],
        "shots": it.shots,
        "tokens": len(it.ids),
        "truncated": it.truncated,
    }
    first = got[0][0] if got and got[0] else None
    n_var = sum(len(variants[L]) for L in LETTERS)
    if "first_token" in parts:
        scores, at = [], 0
        for L in LETTERS:
            n = len(variants[L])
            scores.append(float(first[at : at + n].max()))
            at += n
        rec["first_token"] = {"scores": scores, "pred": LETTERS[_argmax(scores)]}
    if "loglik" in parts:
        if len(got) == 1:  # every continuation is one token, read with the prompt
            off = n_var if "first_token" in parts else 0
            ll = [float(x) for x in first[off : off + len(LETTERS)]]
        else:
            ll = [float(sum(float(x) for r in g for x in r)) for g in got[-len(LETTERS) :]]
        rec["loglik"] = {"scores": ll, "pred": LETTERS[_argmax(ll)]}
        norm = [s / max(1, n) for s, n in zip(ll, it.cont_chars, strict=True)]
        rec["loglik"]["pred_norm"] = LETTERS[_argmax(norm)]
    if "generate" in parts:
        rec["generate"] = {"text": text, "pred": extract_letter(text or "", style.extract)}
    correct = {}
    if "first_token" in rec:
        correct["first_token_acc"] = rec["first_token"]["pred"] == rec["answer"]
    if "loglik" in rec:
        correct["loglik_acc"] = rec["loglik"]["pred"] == rec["answer"]
        correct["loglik_acc_norm"] = rec["loglik"]["pred_norm"] == rec["answer"]
    if "generate" in rec:
        correct["exact_match_acc"] = rec["generate"]["pred"] == rec["answer"]
        if "first_token_acc" in correct:
            correct["combined_acc"] = correct["first_token_acc"] or correct["exact_match_acc"]
    rec["correct"] = correct
    return rec
