"""What the demo's report says beyond any training report: the issue's targets, measured, and
the checks the demo ran (old-token logits, self-replay settings). Used by `langgraft.demo.cli`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from langgraft.demo.recipe import INJECTION_REPLAY, REPLAY_ZH
from langgraft.report.document import Para, Section, Table

# Who ran a training stage: the two runs share stage names ("embeddings"), so each timeline row
# says which run it belongs to, and the plot colours and labels the two (issue 22).
RUN_GROUPS = {"train": "main run (self-replay)", "no-replay": "no-replay control"}


def training_parts(run: Path, step: str, t0: float) -> list[dict[str, Any]]:
    """Timeline rows of the training stages inside demo step `step` (from metrics.jsonl)."""
    from langgraft.report.build import stage_rows
    from langgraft.report.inputs import load_run

    data = load_run(run)
    first = data.metrics[0]["time"]
    group = RUN_GROUPS.get(step, step)
    who = group.split(" (")[0]
    return [
        {"name": f"{who}: {r['name']}", "start": first + r["start"] - t0, "seconds": r["seconds"],
         "part_of": step, "group": group}
        for r in stage_rows(data) if r["start"] is not None and r["seconds"] is not None
    ]  # fmt: skip


def bits(eval_dir: Path, corpus: str) -> float:
    rows = json.loads((eval_dir / "text_results.json").read_text())["corpora"]
    return next(r["nats_per_char"] for r in rows if r["name"] == corpus) / math.log(2)


def targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, measured. The time target holds without another CPU-bound job and
    beside one (2026-12-07, 2 cores, one thread per process; docs/demo.md): full 5.0 min wall
    at load 1.6-3.4, 7.0 min beside a busy loop (load 0.8-2.9); 12.1 min beside a busy loop and
    another job's benchmark (load up to 5.1); --quick 1.3-1.4 min without another job and
    1.7-1.8 min beside a busy loop (load 1.0-2.6)."""
    f, limit = summary["bits_per_char"], 2 if summary["quick"] else 10
    rows = []
    for c in ("zh-modern", "zh-classical"):
        drop = 1 - f[c]["trained"] / f[c]["imported"]
        way = f"{drop:.1%} lower" if drop >= 0 else f"{-drop:.1%} higher"
        rows.append({"target": f"held-out {c} bits/char at least 80% lower than the imported model's",
                     "measured": f"{f[c]['imported']:.3f} -> {f[c]['trained']:.3f} ({way})",
                     "met": drop >= 0.8})  # fmt: skip
    o = f["en-original"]
    rise, rise_no = o["trained"] / o["imported"] - 1, o["no-replay"] / o["imported"] - 1
    rows.append({"target": "original-domain (self-replay probe) bits/char within +5% of the imported model's, with replay",
                 "measured": f"{o['imported']:.3f} -> {o['trained']:.3f} ({rise:+.1%}); without replay {o['no-replay']:.3f} ({rise_no:+.1%})",
                 "met": rise <= 0.05})  # fmt: skip
    minutes = summary["total_seconds"] / 60
    cpu = sum(r.get("cpu_seconds") or 0 for r in summary["timeline"] if not r.get("part_of")) / 60
    met: bool | str = minutes < limit
    if met != (cpu < limit):  # a shared machine: say which clock meets it
        met = f"{'yes' if met else 'no'} (wall), {'yes' if cpu < limit else 'no'} (CPU)"
    loads = [r["load_1min"] for r in summary["timeline"] if r.get("load_1min") is not None]
    at = (
        f"; load {min(loads):.1f}-{max(loads):.1f} (1-min average at each step's end)"
        if loads
        else ""
    )
    threads = summary.get("threads")
    at += f"; {threads['training']} thread(s) per training process" if threads else ""
    rows.append({"target": f"total under {limit} minutes",
                 "measured": f"{minutes:.1f} min wall, {cpu:.1f} min CPU (the demo and its training processes){at}",
                 "met": met})  # fmt: skip
    return rows


def demo_sections(summary: dict[str, Any]) -> list[Section]:
    r, lc, t = summary["self_replay"], summary["logit_check"], summary["tokenizer"]
    model = summary.get("model", "stories260K")
    if model == "stories260K":
        who = ("stories260K (260K parameters, trained by llama2.c on English TinyStories only) "
               "was imported from its llama2.c checkpoint")  # fmt: skip
        data = "TinyStories is"
    else:
        who, data = f"{model} was imported", "Its pretraining data is"
    what = Section("What the demo did", [Para(
        f"{who}; its tokenizer was expanded from "
        f"{t['source_size']} to {t['final_size']} pieces learned from the Chinese training text "
        "(classical 红楼梦 and modern LibreOffice help) and its embeddings expanded to match; "
        "then it trained in three stages (embeddings-only warm-up, Chinese injection, replay). "
        f"{data} not among the assets, so the replay data and the 'original domain' probe "
        f"are **self-replay**: {r['samples']:,} stories ({r['tokens']:,} tokens) sampled from "
        f"the imported model at temperature {r['config']['temperature']}, top-p "
        f"{r['config']['top_p']}, seed {r['config']['seed']}; "
        f"{r['files']['heldout.jsonl']['samples']} of them are held out as the probe. "
        f"Self-replay makes {INJECTION_REPLAY:.0%} of the injection rows and {1 - REPLAY_ZH:.0%} "
        "of the replay rows. The 'no "
        "replay' model is the control: from the same warm-up checkpoint, the injection and "
        "replay stages with the same steps and learning rates on Chinese only."
    ), Para(
        f"Old-token logits after expansion: max |change| {lc['max_abs_diff']:.1e} over "
        f"{lc['tokens']} tokens of held-out English and the {lc['old_vocab']} old pieces; the "
        "English token ids are identical under both tokenizers."
    )])  # fmt: skip
    rows = [
        [
            x["target"],
            x["measured"],
            x["met"] if isinstance(x["met"], str) else "yes" if x["met"] else "**no**",
        ]
        for x in targets(summary)
    ]
    goals = Section("Targets", [Table(["target", "measured", "met"], rows, align="lll")])
    return [goals, what]
