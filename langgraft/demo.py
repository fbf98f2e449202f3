"""`langgraft demo`: the whole recipe on real data in one command, ending in a report.

    langgraft demo                      # ~7 min of CPU on 2 cores -> out/langgraft-demo/report/
    langgraft demo --quick              # ~1.7 min of CPU (CI)
    langgraft demo --assets /data/shared --out /tmp/demo

stories260K (a llama2.c model that knows only TinyStories English) learns Chinese:

 1. import the llama2.c checkpoint as a Hugging Face model;
 2. sample self-replay text from it (its own English: the replay data and the "original domain"
    probe, since TinyStories itself is not in the assets);
 3. split the corpora: classical 红楼梦 and modern LibreOffice help (zh), held-out parts of each;
 4. expand the tokenizer with pieces learned from the Chinese training parts, compare compression;
 5. expand the model and check that old-token logits are unchanged;
 6. prepare the training and held-out data;
 7. train the three stages of one recipe (embeddings-only warm-up, injection, replay), and once
    more the last stage without replay (Chinese only), from the same injection export;
 8. evaluate the imported, expanded and trained models side by side: bits per character per
    held-out corpus, CMMLU in both scoring modes, greedy generations from the same prompts;
 9. write report.md and report.html (`langgraft report`).

Everything lands in --out; the recipe the demo ran is out/recipe.yaml, so `langgraft train
--config out/langgraft-demo/recipe.yaml` runs the same training again.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langgraft.config import add_dataclass_args, from_namespace
from langgraft.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_ASSETS = Path("../shared/data")
MARKER = "demo.json"  # marks a directory as the demo's own, so a re-run may replace it
ASSETS = {
    "checkpoint": "models/stories260K/stories260K.bin",
    "tokenizer": "models/stories260K/tok512.model",
    "zh_classical": "corpus/zh/hongloumeng.txt",
    "zh_modern": "corpus/zh-modern/libreoffice-help-zh-cn.jsonl",
    "en_other": "corpus/en/tinyshakespeare.txt",
    "cmmlu": "eval/cmmlu/test",
}
PROMPTS = [
    "Once upon a time",
    "Lily and Ben went to",
    "宝玉道：",
    "凤姐儿笑道",
    "单击“格式”菜单",
    "在此对话框中",
]


@dataclass
class DemoConfig:
    assets: Path = DEFAULT_ASSETS
    """The shared data directory (stories260K, the corpora, CMMLU); the default is looked for
    relative to the current directory, then to the repository root."""
    out: Path = Path("out/langgraft-demo")
    """Output directory; a previous demo output there is replaced, anything else is refused."""
    quick: bool = False
    """The CI size: fewer tokens and steps (about a fifth of the training), a smaller vocabulary
    and CMMLU probe."""
    cmmlu_limit: int | None = None
    """CMMLU questions per subject (default: 5, or 1 with --quick)."""
    progress: bool = True
    """Show the progress bars of the stages."""


@dataclass(frozen=True)
class Scale:
    replay_tokens: int  # self-replay samples (train + held-out)
    vocab: int  # expanded vocabulary size
    zh_train_chars: int | None  # cap per Chinese training corpus (None: all)
    heldout_chars: int  # per held-out corpus
    steps: tuple[int, int, int]  # embeddings, injection, replay
    accumulation: int
    eval_interval: int
    cmmlu_limit: int


FULL = Scale(120_000, 2048, None, 30_000, (60, 250, 100), 2, 50, 5)
QUICK = Scale(24_000, 1024, 120_000, 8_000, (30, 90, 40), 1, 40, 1)


class Timeline:
    """Numbered steps with wall times, printed as they finish and kept for the report."""

    def __init__(self, total: int) -> None:
        self.total, self.rows, self.t0 = total, [], time.time()

    @contextmanager
    def step(self, name: str, what: str) -> Iterator[dict[str, Any]]:
        note: dict[str, Any] = {}
        k = sum(not r.get("part_of") for r in self.rows) + 1
        print(f"[{k}/{self.total}] {what} ...", flush=True)
        start, cpu = time.time(), time.process_time()
        yield note
        wall, cpu = time.time() - start, time.process_time() - cpu
        self.rows.append(
            {"name": name, "start": start - self.t0, "seconds": wall, "cpu_seconds": cpu}
        )
        print(f"      {note.get('done', 'done')} ({wall:.1f} s, CPU {cpu:.1f} s)", flush=True)


def find_assets(root: Path) -> dict[str, Path]:
    """The asset paths under `root`; the default root is also tried beside the repository, so
    the demo runs from any directory of a checkout."""
    roots = [root]
    if root == DEFAULT_ASSETS:
        roots.append(Path(__file__).resolve().parents[1] / DEFAULT_ASSETS)
    for rel in ASSETS.values():
        if not any((r / rel).exists() for r in roots):
            looked = " and ".join(str((r / rel).resolve()) for r in roots)
            raise UserError(
                f"demo asset {rel} not found: looked for {looked} (--assets {root}); point "
                "--assets at the shared data directory (see its SOURCES.md)"
            )
    found = next((r for r in roots if all((r / rel).exists() for rel in ASSETS.values())), None)
    if found is None:
        raise UserError(f"{' and '.join(map(str, roots))}: each holds only part of the demo assets")
    return {k: found / rel for k, rel in ASSETS.items()}


def claim_out_dir(out: Path) -> None:
    """Replace a previous demo output; refuse any other non-empty directory."""
    if out.exists():
        if not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file()):
            raise UserError(
                f"{out}: exists and is not a langgraft demo output; choose another --out"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text(json.dumps({"status": "running"}) + "\n")


def import_base(a: dict[str, Path], out: Path) -> Path:
    from langgraft.model.llama2c import import_llama2c

    (out / "base").mkdir()
    import_llama2c(a["checkpoint"], a["tokenizer"], out / "base")
    return out / "base"


def sample_self_replay(base: Path, out: Path, s: Scale, progress: bool) -> dict[str, Any]:
    from langgraft.data.self_replay import SelfReplayConfig, self_replay

    cfg = SelfReplayConfig(
        model=base, out=out / "self-replay", tokens=s.replay_tokens, heldout_fraction=0.1,
        category="en-original", batch_size=128, progress=progress, seed=0,
    )  # fmt: skip
    return self_replay(cfg)


def _cut_block(text: str, at: int) -> int:
    cut = text.find("\n\n", at)
    return len(text) if cut < 0 else cut + 2


def split_corpora(a: dict[str, Path], out: Path, s: Scale) -> dict[str, Any]:
    """Training parts and held-out parts; nothing held out is ever trained on."""
    from langgraft.eval.text import read_corpus

    d = out / "corpus"
    d.mkdir()
    hlm = a["zh_classical"].read_text(encoding="utf-8").replace("\r\n", "\n")
    cut = _cut_block(hlm, int(len(hlm) * 0.9))  # the last chapters are held out
    train = hlm[:cut] if s.zh_train_chars is None else hlm[: _cut_block(hlm, s.zh_train_chars)]
    (d / "zh-classical-train.txt").write_text(train, encoding="utf-8")
    (d / "zh-classical-heldout.txt").write_text(hlm[cut:][: s.heldout_chars], encoding="utf-8")
    pages = [json.loads(x) for x in a["zh_modern"].read_text(encoding="utf-8").splitlines()]
    held = [p for i, p in enumerate(pages) if i % 10 == 9]  # every 10th help page
    kept, n = [], 0
    for p in (p for i, p in enumerate(pages) if i % 10 != 9):
        if s.zh_train_chars is not None and n >= s.zh_train_chars:
            break
        kept.append(p)
        n += len(p["text"])
    for name, rows in (("train", kept), ("heldout", held)):
        with open(d / f"zh-modern-{name}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    # the probe under a name that says what it is (the tokenizer report labels files by name)
    shutil.copyfile(out / "self-replay/heldout.jsonl", d / "en-original-heldout.jsonl")
    shakespeare = a["en_other"].read_text(encoding="utf-8")
    heldout = {
        "zh-modern": read_corpus(d / "zh-modern-heldout.jsonl", max_chars=s.heldout_chars),
        "zh-classical": read_corpus(d / "zh-classical-heldout.txt"),
        "en-original": read_corpus(out / "self-replay/heldout.jsonl", text_key="target"),
        "en-shakespeare": [shakespeare[-s.heldout_chars :]],
    }
    return {
        "dir": d,
        "heldout": heldout,
        "train_chars": {"zh-classical": len(train), "zh-modern": n},
    }


def expand_tokenizer(base: Path, corpora: dict[str, Any], out: Path, s: Scale) -> dict[str, Any]:
    from langgraft.tokenizer.config import ExpandConfig
    from langgraft.tokenizer.expand import expand
    from langgraft.tokenizer.report import ReportConfig, compute, write_outputs

    d = corpora["dir"]
    learn = [d / "zh-classical-train.txt", d / "zh-modern-train.jsonl"]
    summary = expand(
        ExpandConfig(source=base, out=out / "tokenizer", learn_from=learn, target_size=s.vocab)
    )
    held = [d / "zh-modern-heldout.jsonl", d / "zh-classical-heldout.txt",
            d / "en-original-heldout.jsonl"]  # fmt: skip
    rows = compute(
        ReportConfig(
            tokenizer=[base, out / "tokenizer"], corpus=held, names=["stories260K", "expanded"]
        )
    )
    write_outputs(rows, out / "tokenizer-report")
    return {"summary": summary, "compression": rows}


def expand_model(base: Path, out: Path, corpora: dict[str, Any]) -> dict[str, Any]:
    """Expand, then show that the old vocabulary's logits did not move on real English."""
    import torch

    from langgraft.model.expand import ExpandConfig, expand_model
    from langgraft.report.evaluate import load_eval_model

    summary = expand_model(ExpandConfig(model=base, tokenizer=out / "tokenizer", out=out / "model"))
    (m0, t0), (m1, t1) = load_eval_model(base), load_eval_model(out / "model")
    text = " ".join(corpora["heldout"]["en-original"])[:4000]
    ids0, ids1 = t0(text).input_ids[:512], t1(text).input_ids[:512]
    if ids0 != ids1:
        raise UserError("the expanded tokenizer changed the ids of English text (it must not)")
    with torch.inference_mode():
        x = torch.tensor([ids0], device=m0.device)
        old = m0(input_ids=x).logits
        new = m1(input_ids=x.to(m1.device)).logits[..., : old.shape[-1]].to(old.device)
    diff = float((old - new).abs().max())
    return {"summary": summary, "logit_check": {"tokens": len(ids0), "old_vocab": old.shape[-1],
                                                "max_abs_diff": diff}}  # fmt: skip


def prepare_data(
    corpora: dict[str, Any], model: Path, out: Path, progress: bool
) -> dict[str, Path]:
    from langgraft.data.config import PrepareConfig
    from langgraft.data.prepare import prepare

    d, data = corpora["dir"], out / "data"
    jobs = {
        "zh-train": ([f"zh-classical={d}/zh-classical-train.txt",
                      f"zh-modern={d}/zh-modern-train.jsonl"], 2),
        "zh-heldout": ([f"zh-classical={d}/zh-classical-heldout.txt",
                        f"zh-modern={d}/zh-modern-heldout.jsonl"], 1),
        "en-train": ([str(out / "self-replay/train.jsonl")], 1),
        "en-heldout": ([str(out / "self-replay/heldout.jsonl")], 1),
    }  # fmt: skip
    for name, (inputs, bins) in jobs.items():
        text_field = "text" if name.startswith("zh") else None
        prepare(
            PrepareConfig(
                input=inputs, tokenizer=model, out=data / name, max_length=256, num_bins=bins,
                text_field=text_field, progress=progress,
            )
        )  # fmt: skip
    return {name: data / name for name in jobs}


def demo_recipe(model: Path, data: dict[str, Path], run: Path, s: Scale, progress: bool) -> dict:
    """The three stages of Colossal-LLaMA-2 at stories260K scale (recipes/demo-stories260k.yaml
    with a gentler warm-up). stories260K ties embed_tokens and lm_head, so the warm-up moves the
    old rows too: at lr 1e-2 it alone took the original-domain probe from 0.83 to 1.97 bits/char
    (--quick), at 2e-3 to 0.86. The replay stage's lr 3e-3 (not 1e-3) recovers more of the
    original domain in the same steps (1.18 vs 1.33 bits/char, --quick)."""
    zh, en = str(data["zh-train"]), str(data["en-train"])
    return {
        "model": str(model), "out": str(run), "seed": 1024, "precision": "fp32",
        "progress": progress, "tensorboard": False,
        "train": {"micro_batch_size": 8, "accumulation_steps": s.accumulation, "lr": 3.0e-3,
                  "min_lr_ratio": 0.1, "weight_decay": 0.01, "grad_clip": 1.0},
        "checkpoint": {"save_interval": 0, "keep_last": 1},
        "eval": {"interval": s.eval_interval, "max_rows": 32,
                 "data": [str(data["zh-heldout"]), str(data["en-heldout"])]},
        "stages": [
            {"name": "embeddings", "data": [{"path": zh}], "steps": s.steps[0], "lr": 2.0e-3,
             "freeze_non_embeds_params": True},
            {"name": "injection", "data": [{"path": zh}], "steps": s.steps[1]},
            {"name": "replay", "data": [{"path": zh, "weight": 0.1}, {"path": en}],
             "steps": s.steps[2], "lr": 3.0e-3},
        ],
    }  # fmt: skip


def train(recipe: dict, path: Path, init_from: Path | None = None) -> Path:
    import yaml

    from langgraft.train import cli as train_cli

    path.write_text(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True))
    from langgraft.__main__ import build_parser

    # through the real parser, so the train command's defaults (new options included) apply
    argv = ["train", "--config", str(path)] + (["--init-from", str(init_from)] if init_from else [])
    if train_cli.run(build_parser().parse_args(argv)) != 0:
        raise UserError(f"training from {path} failed")
    return Path(recipe["out"])


def no_replay_recipe(recipe: dict, out: Path) -> dict:
    """The replay stage again with the same budget, Chinese only: the control for forgetting."""
    stage = dict(recipe["stages"][2], name="no-replay", data=[recipe["stages"][1]["data"][0]])
    return {**recipe, "out": str(out), "stages": [stage]}


def evaluate_all(out: Path, models: dict[str, Path], corpora, a, s: Scale, limit: int) -> dict:
    from langgraft.report.evaluate import EvalPlan, evaluate_model

    text_only = EvalPlan(corpora=corpora["heldout"], prompts=PROMPTS)
    full = EvalPlan(
        corpora=corpora["heldout"], prompts=PROMPTS, mc_task="cmmlu", mc_data=a["cmmlu"].parent,
        mc_limit=limit,
    )  # fmt: skip
    with_mc = {"imported", "trained"}
    return {
        name: evaluate_model(
            name, path, out / "eval" / name, full if name in with_mc else text_only
        )
        for name, path in models.items()
    }


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    from langgraft.demo_report import bits, demo_sections, targets, training_parts
    from langgraft.report.build import ReportInputs, write_report

    s = QUICK if cfg.quick else FULL
    limit = cfg.cmmlu_limit or s.cmmlu_limit
    a = find_assets(cfg.assets)
    out = cfg.out
    claim_out_dir(out)
    clock = Timeline(10)
    with clock.step("import", "import stories260K (llama2.c) as a Hugging Face model") as n:
        base = import_base(a, out)
    with clock.step("self-replay", f"sample {s.replay_tokens:,} self-replay tokens") as n:
        replay = sample_self_replay(base, out, s, cfg.progress)
        n["done"] = f"{replay['samples']} stories"
    with clock.step("split", "split the corpora into training and held-out parts") as n:
        corpora = split_corpora(a, out, s)
    with clock.step("tokenizer", f"expand the tokenizer to {s.vocab:,} pieces") as n:
        tok = expand_tokenizer(base, corpora, out, s)
        n["done"] = f"{tok['summary']['source_size']} -> {tok['summary']['final_size']} pieces"
    with clock.step("expand", "expand the model; check old-token logits") as n:
        expanded = expand_model(base, out, corpora)
        n["done"] = (
            f"max |logit change| on old tokens {expanded['logit_check']['max_abs_diff']:.1e}"
        )
    with clock.step("prepare", "prepare training and held-out data") as n:
        data = prepare_data(corpora, out / "model", out, cfg.progress)
    with clock.step("train", f"train three stages ({sum(s.steps)} steps)") as n:
        recipe = demo_recipe(out / "model", data, out / "run", s, cfg.progress)
        run = train(recipe, out / "recipe.yaml")
    with clock.step("no-replay", f"control: last stage without replay ({s.steps[2]} steps)") as n:
        control = train(
            no_replay_recipe(recipe, out / "run-no-replay"), out / "recipe-no-replay.yaml",
            init_from=run / "export" / "stage-1-injection",
        )  # fmt: skip
    clock.rows += training_parts(run, "train", clock.t0) + training_parts(
        control, "no-replay", clock.t0
    )
    clock.rows.sort(key=lambda r: r["start"])
    models = {
        "imported": base, "expanded": out / "model",
        "no-replay": control / "export" / "stage-0-no-replay",
        "trained": run / "export" / "stage-2-replay",
    }  # fmt: skip
    with clock.step("eval", f"evaluate {len(models)} models (text, CMMLU x{limit}, samples)") as n:
        evals = evaluate_all(out, models, corpora, a, s, limit)
    figures = {k: {m: bits(evals[m], k) for m in models} for k in corpora["heldout"]}
    summary = {
        "quick": cfg.quick, "assets": {k: str(p.resolve()) for k, p in a.items()},
        "scale": s.__dict__, "self_replay": replay, "tokenizer": tok["summary"],
        "logit_check": expanded["logit_check"], "bits_per_char": figures,
        "timeline": clock.rows, "total_seconds": time.time() - clock.t0,
    }  # fmt: skip
    with clock.step("report", "write report.md and report.html") as n:
        inputs = ReportInputs(
            run=run, evals={"imported": evals["imported"], "expanded": evals["expanded"],
                            "no replay": evals["no-replay"], "trained": evals["trained"]},
            baseline="imported", final="trained", tokenizer_report=out / "tokenizer-report",
            timeline=clock.rows, extra=demo_sections(summary),
            title="langgraft demo: stories260K learns Chinese" + (" (--quick)" if cfg.quick else ""),
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
    summary = run_demo(from_namespace(DemoConfig, args))
    f = summary["bits_per_char"]
    print("\nheld-out bits per character (imported -> trained; no replay):")
    for corpus, v in f.items():
        change = v["trained"] / v["imported"] - 1
        print(f"  {corpus:15s} {v['imported']:7.3f} -> {v['trained']:6.3f} ({change:+.1%}); "
              f"no replay {v['no-replay']:.3f}")  # fmt: skip
    print(f"total {summary['total_seconds'] / 60:.1f} min; open {args.out}/report/report.html")
    return 0


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="the whole recipe on the real sample data in one command, with a report",
        description=(
            "stories260K (English TinyStories only) learns Chinese end to end on CPU: import, "
            "self-replay sampling, tokenizer and model expansion (old-token logits checked), data "
            "preparation, three training stages and a no-replay control, evaluation of every "
            "model side by side, and report.md + report.html with plots."
        ),
    )
    add_dataclass_args(p, DemoConfig)
    p.set_defaults(func=run)
