"""`langgraft demo`: the whole recipe on real data in one command, ending in a report.

    langgraft demo                      # minutes on 2 cores (README) -> out/langgraft-demo/report/
    langgraft demo --quick              # the CI size
    langgraft demo --assets /data/shared --out /tmp/demo
    langgraft demo --quick --model ../shared/data/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf \
        --out out/demo-smollm2           # another model (a GGUF or HF directory), sizes scaled to it

stories260K (a llama2.c model that knows only TinyStories English) learns Chinese:

 1. import the llama2.c checkpoint as a Hugging Face model;
 2. sample self-replay text from it (its own English: the replay data and the "original domain"
    probe, since TinyStories itself is not in the assets);
 3. split the corpora: classical 红楼梦 and modern LibreOffice help (zh), held-out parts of each;
 4. expand the tokenizer with pieces learned from the Chinese training parts, compare compression;
 5. expand the model and check that old-token logits are unchanged;
 6. prepare the training and held-out data;
 7. train the three stages of one recipe (embeddings-only warm-up, injection with 20%
    self-replay rows, replay with 90%) and, in a second process beside it, the no-replay
    control: the same recipe with no self-replay anywhere (its warm-up checked identical);
 8. evaluate the imported, expanded and trained models side by side: bits per character per
    held-out corpus, CMMLU in both scoring modes, greedy generations from the same prompts;
 9. write report.md and report.html (`langgraft report`).

With --model, step 1 imports that model instead (a GGUF through `model import-gguf`; a Hugging
Face directory is used in place) and the sizes scale to its cost per token (recipe.scale_for):
a byte-level BPE tokenizer gets merges, a SentencePiece one pieces, as `tokenizer expand` picks.

Everything lands in --out; the recipe the demo ran is out/recipe.yaml, so `langgraft train
--config out/langgraft-demo/recipe.yaml` runs the same training again.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langgraft.config import config_command, from_namespace
from langgraft.demo.recipe import (
    demo_recipe,
    no_replay_recipe,
    same_weights,
    scale_for,
    train_together,
)
from langgraft.demo.steps import (
    DEFAULT_ASSETS,
    MARKER,
    Timeline,
    evaluate_all,
    expand_model,
    expand_tokenizer,
    find_assets,
    import_base,
    model_name,
    prepare_data,
    sample_self_replay,
    split_corpora,
)
from langgraft.errors import UserError


@dataclass
class DemoConfig:
    assets: Path = DEFAULT_ASSETS
    """The shared data directory (stories260K, the corpora, CMMLU); the default is looked for
    relative to the current directory, then to the repository root."""
    out: Path = Path("out/langgraft-demo")
    """Output directory (see docs/outputs.md): an existing one is refused unless --overwrite,
    which replaces only a previous langgraft output."""
    model: Path | None = None
    """Teach this model instead of stories260K: a llama.cpp GGUF (imported as `langgraft model
    import-gguf` does) or a Hugging Face directory of a supported family (used in place). Token
    budgets, sequence length, batch and vocabulary growth scale to its size."""
    quick: bool = False
    """The CI size: fewer tokens and steps (about a fifth of the training), a smaller vocabulary
    and CMMLU probe."""
    cmmlu_limit: int | None = None
    """CMMLU questions per subject (default: 5, or 1 with --quick; none for a model over twice
    stories260K's cost per token; 0: no CMMLU probe)."""
    progress: bool = True
    """Show the progress bars of the stages."""
    overwrite: bool = False
    """Replace a previous demo (or other langgraft) output at --out."""


def run_demo(cfg: DemoConfig, threads: int | None = None) -> dict[str, Any]:
    """The demo; `threads`: torch threads per training process (None: one each)."""
    from langgraft.fsutil import output_dir_in_place

    a = find_assets(cfg.assets, cfg.model)
    # In place, not in a scratch directory renamed at the end: the recipe, the run directories
    # and their recipe.json name paths under --out, which `langgraft train`/`report` read later.
    with output_dir_in_place(cfg.out, cfg.overwrite, a.values()):
        return _run_demo(cfg, a, cfg.out, threads)


def _run_demo(cfg: DemoConfig, a: dict[str, Path], out: Path, threads: int | None) -> dict:
    from langgraft.demo.report import bits, demo_sections, targets, training_parts
    from langgraft.report.build import ReportInputs, write_report

    name = model_name(a)
    (out / MARKER).write_text(json.dumps({"status": "running"}) + "\n")
    clock = Timeline(9)
    what = "stories260K (llama2.c)" if "model" not in a else f"{a['model']}"
    with clock.step("import", f"import {what} as a Hugging Face model") as n:
        base = import_base(a, out, cfg.progress)
        s = scale_for(json.loads((base / "config.json").read_text()), cfg.quick)
        n["done"] = f"{name}; sizes: {s}"
    limit = s.cmmlu_limit if cfg.cmmlu_limit is None else cfg.cmmlu_limit
    with clock.step("self-replay", f"sample {s.replay_tokens:,} self-replay tokens") as n:
        replay = sample_self_replay(base, out, s, cfg.progress)
        n["done"] = f"{replay['samples']} stories"
    with clock.step("split", "split the corpora into training and held-out parts") as n:
        corpora = split_corpora(a, out, s)
    with clock.step("tokenizer", f"expand the tokenizer to {s.vocab:,} pieces") as n:
        tok = expand_tokenizer(base, corpora, out, s, name)
        n["done"] = f"{tok['summary']['source_size']} -> {tok['summary']['final_size']} pieces"
    with clock.step("expand", "expand the model; check old-token logits") as n:
        expanded = expand_model(base, out, corpora)
        n["done"] = (
            f"max |logit change| on old tokens {expanded['logit_check']['max_abs_diff']:.1e}"
        )
    with clock.step("prepare", "prepare training and held-out data") as n:
        data = prepare_data(corpora, out / "model", out, cfg.progress, s.max_length)
    what = f"train three stages ({sum(s.steps)} steps) and the no-replay control beside them"
    with clock.step("train", what) as n:
        recipe = demo_recipe(out / "model", data, out / "run", s, cfg.progress)
        run, control = out / "run", out / "run-no-replay"
        jobs = {"run": (recipe, out / "recipe.yaml"),
                "run-no-replay": (no_replay_recipe(recipe, control), out / "recipe-no-replay.yaml")}  # fmt: skip
        train_together(jobs, out, timeout=3600, threads=threads)
        warmups = [r / "export" / "stage-0-embeddings" for r in (run, control)]
        if not same_weights(*warmups):
            raise UserError(f"{' and '.join(map(str, warmups))} differ: the control is not valid")
        n["done"] = "done; the two warm-up exports are identical"
    clock.rows += training_parts(run, "train", clock.t0) + training_parts(
        control, "no-replay", clock.t0
    )
    clock.rows.sort(key=lambda r: r["start"])
    models = {
        "imported": base, "expanded": out / "model",
        "no-replay": control / "export" / "stage-2-no-replay",
        "trained": run / "export" / "stage-2-replay",
    }  # fmt: skip
    probe = f"CMMLU x{limit}, " if limit > 0 else ""
    with clock.step("eval", f"evaluate {len(models)} models (text, {probe}samples)") as n:
        evals = evaluate_all(out, models, corpora, a, s, limit)
    figures = {k: {m: bits(evals[m], k) for m in models} for k in corpora["heldout"]}
    summary = {
        "model": name, "quick": cfg.quick, "assets": {k: str(p.resolve()) for k, p in a.items()},
        "scale": s.__dict__, "self_replay": replay, "tokenizer": tok["summary"],
        "logit_check": expanded["logit_check"], "bits_per_char": figures,
        "timeline": clock.rows, "total_seconds": time.time() - clock.t0,
        "threads": {"demo": int(os.environ.get("OMP_NUM_THREADS") or 0) or None,
                    "training": threads or 1},
    }  # fmt: skip
    with clock.step("report", "write report.md and report.html") as n:
        inputs = ReportInputs(
            run=run, evals={"imported": evals["imported"], "expanded": evals["expanded"],
                            "no replay": evals["no-replay"], "trained": evals["trained"]},
            baseline="imported", final="trained", tokenizer_report=out / "tokenizer-report",
            timeline=clock.rows, extra=demo_sections(summary),
            title=f"langgraft demo: {name} learns Chinese" + (" (--quick)" if cfg.quick else ""),
        )  # fmt: skip
        report = write_report(inputs, out / "report")
        n["done"] = f"{report / 'report.html'}"
    summary["timeline"] = clock.rows
    summary["total_seconds"] = time.time() - clock.t0
    summary["targets"] = targets(summary)
    (out / MARKER).write_text(
        json.dumps({"status": "done", **summary}, indent=2, ensure_ascii=False, default=str) + "\n"
    )
    return summary


def run(args: argparse.Namespace) -> int:
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()  # "sequence longer than..." is expected
    logging.getLogger("langgraft").setLevel(logging.WARNING)
    # --threads / $OMP_NUM_THREADS also set each training process's threads (__main__)
    summary = run_demo(from_namespace(DemoConfig, args), getattr(args, "user_threads", None))
    f = summary["bits_per_char"]
    print("\nheld-out bits per character (imported -> trained; no replay):")
    for corpus, v in f.items():
        change = v["trained"] / v["imported"] - 1
        print(f"  {corpus:15s} {v['imported']:7.3f} -> {v['trained']:6.3f} ({change:+.1%}); "
              f"no replay {v['no-replay']:.3f}")  # fmt: skip
    print(f"total {summary['total_seconds'] / 60:.1f} min; open {args.out}/report/report.html")
    return 0


def register(sub: argparse._SubParsersAction, name: str) -> None:
    config_command(
        sub, name, DemoConfig, run,
        help="the whole recipe on the real sample data in one command, with a report",
        description=(
            "stories260K (English TinyStories only) learns Chinese end to end on CPU: import, "
            "self-replay sampling, tokenizer and model expansion (old-token logits checked), data "
            "preparation, three training stages and a no-replay control, evaluation of every "
            "model side by side, and report.md + report.html with plots."
        ),
    )  # fmt: skip
