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
from langgraft.eval.prompts import TEMPLATES, PromptParts, subject_prompts, templates_record
from langgraft.eval.report import summarize
from langgraft.eval.scorer import Request, common_prefix_len, letter_variants, score_requests

log = logging.getLogger(__name__)

Mode = Literal["first-token", "loglik", "both"]


@dataclass
class McOptions:
    shots: int | None = None
    """Few-shot examples from the dev split (default: the task's, 5; 0 for AGIEval and GAOKAO)."""
    mode: Mode = "first-token"
    """first-token: next-token logits restricted to the answer letters (ColossalEval); loglik:
    summed log-probability of each continuation (lm-eval-harness); both."""
    continuation: Literal["letter", "text"] = "letter"
    """loglik continuations: the answer letter, or the option text (adds length-normalised acc)."""
    batch_size: int = 16
    """Question suffixes per forward pass on the shared-prefix path."""
    max_length: int | None = None
    """Prompt budget in tokens (default: the model's max_position_embeddings). Shots are dropped
    before the question is cut."""
    shared_prefix: bool = True
    """Run the few-shot prefix once per subject and batch the questions behind its KV cache."""
    limit: int | None = None
    """Score only the first N questions of each subject (quick probes)."""
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


def _items_for_subject(tokenizer, subject, task, opts, budget_for) -> tuple[list[_Item], int]:
    n_shots = task.default_shots if opts.shots is None else opts.shots
    if n_shots > 0 and not subject.shots:
        raise UserError(
            f"{task.name}/{subject.name}: --shots {n_shots} but this subject has no dev examples; "
            "use --shots 0"
        )
    n_shots = min(n_shots, len(subject.shots))
    as_text = opts.continuation == "text"
    template = TEMPLATES[subject.language]
    questions = subject.questions[: opts.limit] if opts.limit else subject.questions
    parts = subject_prompts(subject, n_shots, as_text)[: len(questions)]
    full = _encode(tokenizer, [p.render(n_shots) for p in parts])
    items = []
    for i, (q, pp, ids) in enumerate(zip(questions, parts, full, strict=True)):
        conts = [template.answer(q, c, as_text) for c in range(len(LETTERS))]
        if as_text and not q.options:
            raise UserError(
                f"{q.source}: options are inside the question; use --continuation letter"
            )
        # Continuation tokens from the question's tail alone: tokenizing the whole prompt again
        # per choice would cost 4x; the tail is where a continuation could merge with the cue.
        tail = tokenizer(pp.question, add_special_tokens=False)["input_ids"]
        tails = tokenizer([pp.question + c for c in conts], add_special_tokens=False)["input_ids"]
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


def _requests(item: _Item, variant_ids: list[int], mode: Mode) -> list[Request]:
    """First request: the prompt, read at its end; then one per multi-token continuation."""
    last = len(item.ids) - 1
    wanted = list(variant_ids) if mode != "loglik" else []
    single = all(len(c) == 1 for c in item.cont_ids) and not any(item.give_back)
    if mode != "first-token" and single:
        wanted += [c[0] for c in item.cont_ids]
    reqs = [Request(item.ids, [(last, wanted)])] if wanted else []
    if mode != "first-token" and not single:
        for cont, back in zip(item.cont_ids, item.give_back, strict=True):
            ctx = item.ids[: len(item.ids) - back]
            reqs.append(
                Request(ctx + cont[:-1], [(len(ctx) - 1 + j, [t]) for j, t in enumerate(cont)])
            )
    return reqs


def evaluate_mc(model: Any, tokenizer: Any, task: Task, opts: McOptions | None = None) -> dict:
    """Score `task` and return the results dict (summary + per-question records)."""
    opts = opts or McOptions()
    if opts.continuation == "text" and opts.mode != "loglik":
        raise UserError("--continuation text needs --mode loglik (first-token reads letters only)")
    subjects: list[Subject] = list(task.subjects.values())
    if opts.subjects:
        missing = sorted(set(opts.subjects) - set(task.subjects))
        if missing:
            raise UserError(f"{task.name}: unknown subject(s) {', '.join(missing)}")
        subjects = [task.subjects[s] for s in opts.subjects]
    max_len = opts.max_length or int(getattr(model.config, "max_position_embeddings", 2048))
    cues = [t.answer_cue + t.answer_sep for t in TEMPLATES.values()]
    variants = letter_variants(tokenizer, LETTERS, cues)
    flat_variants = [t for L in LETTERS for t in variants[L]]
    records: list[dict] = []
    model.eval()
    for subject in tqdm(subjects, desc=f"{task.name}", unit="subject", disable=None):
        items, n_shots = _items_for_subject(tokenizer, subject, task, opts, max_len)
        by_shots: dict[int, list[_Item]] = defaultdict(list)
        for it in items:
            by_shots[it.shots].append(it)
        for group in by_shots.values():
            reqs = [_requests(it, flat_variants, opts.mode) for it in group]
            flat = [r for rs in reqs for r in rs]
            scores = score_requests(model, flat, opts.batch_size, opts.shared_prefix)
            pos = 0
            for it, rs in zip(group, reqs, strict=True):
                got = scores[pos : pos + len(rs)]
                pos += len(rs)
                records.append(_record(subject, it, got, variants, opts.mode))
    records.sort(key=lambda r: (r["subject"], r["index"]))
    metrics = _metric_names(opts)
    result = summarize(task, records, metrics)
    shots = task.default_shots if opts.shots is None else opts.shots
    result["config"] = {**vars(opts), "max_length": max_len, "shots": shots}
    result["templates"] = templates_record()
    result["letter_variants"] = {
        L: [{"id": t, "piece": tokenizer.convert_ids_to_tokens(t)} for t in variants[L]]
        for L in LETTERS
    }
    result["letter_variant_rule"] = "max log-probability over the variants of each letter"
    result["torch_dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
    result["records"] = records
    return result


def _metric_names(opts: McOptions) -> list[str]:
    names = ["first_token_acc"] if opts.mode != "loglik" else []
    if opts.mode != "first-token":
        names.append("loglik_acc")
        if opts.continuation == "text":
            names.append("loglik_acc_norm")
    return names


def _argmax(xs: list[float]) -> int:
    return max(range(len(xs)), key=lambda i: xs[i])


def _record(subject: Subject, it: _Item, got: list[list[Any]], variants, mode: Mode) -> dict:
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
    if mode != "loglik":
        scores, at = [], 0
        for L in LETTERS:
            n = len(variants[L])
            scores.append(float(first[at : at + n].max()))
            at += n
        rec["first_token"] = {"scores": scores, "pred": LETTERS[_argmax(scores)]}
    if mode != "first-token":
        if len(got) == 1:  # every continuation is one token, read with the prompt
            off = n_var if mode == "both" else 0
            ll = [float(x) for x in first[off : off + len(LETTERS)]]
        else:
            ll = [float(sum(float(x) for r in g for x in r)) for g in got[-len(LETTERS) :]]
        rec["loglik"] = {"scores": ll, "pred": LETTERS[_argmax(ll)]}
        norm = [s / max(1, n) for s, n in zip(ll, it.cont_chars, strict=True)]
        rec["loglik"]["pred_norm"] = LETTERS[_argmax(norm)]
    rec["correct"] = {
        k: rec[key][p] == rec["answer"]
        for k, key, p in (
            ("first_token_acc", "first_token", "pred"),
            ("loglik_acc", "loglik", "pred"),
            ("loglik_acc_norm", "loglik", "pred_norm"),
        )
        if key in rec
    }
    return rec
