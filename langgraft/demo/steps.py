"""The demo's steps before and after training: assets, import, self-replay, corpus split,
tokenizer and model expansion, data preparation, evaluation. Each writes under the demo's --out
and returns what the report needs."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from langgraft.demo.recipe import Scale
from langgraft.errors import UserError

DEFAULT_ASSETS = Path("../shared/data")
MARKER = "demo.json"  # the demo's figures and status (fsutil.MARKER marks the output as ours)
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


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the training processes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Timeline:
    """Numbered steps with wall times, printed as they finish and kept for the report."""

    def __init__(self, total: int) -> None:
        self.total, self.rows, self.t0 = total, [], time.time()

    @contextmanager
    def step(self, name: str, what: str) -> Iterator[dict[str, Any]]:
        note: dict[str, Any] = {}
        k = sum(not r.get("part_of") for r in self.rows) + 1
        print(f"[{k}/{self.total}] {what} ...", flush=True)
        start, cpu = time.time(), _cpu_seconds()
        yield note
        wall, cpu = time.time() - start, _cpu_seconds() - cpu
        # Wall time means little on a shared machine without the load it ran at (issue 22).
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        self.rows.append({"name": name, "start": start - self.t0, "seconds": wall,
                          "cpu_seconds": cpu, "load_1min": load})  # fmt: skip
        at = f", load {load:.1f}" if load is not None else ""
        print(f"      {note.get('done', 'done')} ({wall:.1f} s, CPU {cpu:.1f} s{at})", flush=True)


def find_assets(root: Path, model: Path | None = None) -> dict[str, Path]:
    """The asset paths under `root`; the default root is also tried beside the repository, so
    the demo runs from any directory of a checkout. With `model` (--model), stories260K's files
    are not needed and "model" is that path (checked to exist)."""
    wanted = dict(ASSETS)
    if model is not None:
        if not model.exists():
            raise UserError(f"--model {model}: no such file or directory")
        del wanted["checkpoint"], wanted["tokenizer"]
    roots = [root]
    if root == DEFAULT_ASSETS:
        roots.append(Path(__file__).resolve().parents[1] / DEFAULT_ASSETS)
    for rel in wanted.values():
        if not any((r / rel).exists() for r in roots):
            looked = " and ".join(str((r / rel).resolve()) for r in roots)
            raise UserError(
                f"demo asset {rel} not found: looked for {looked} (--assets {root}); point "
                "--assets at the shared data directory (see its SOURCES.md)"
            )
    found = next((r for r in roots if all((r / rel).exists() for rel in wanted.values())), None)
    if found is None:
        raise UserError(f"{' and '.join(map(str, roots))}: each holds only part of the demo assets")
    return {k: found / rel for k, rel in wanted.items()} | ({"model": model} if model else {})


def model_name(a: dict[str, Path]) -> str:
    """What the report calls the imported model: stories260K, or --model's name."""
    if "model" not in a:
        return "stories260K"
    m = a["model"]
    return m.name.split(".")[0] if m.is_file() else m.resolve().name


def import_base(a: dict[str, Path], out: Path, progress: bool = True) -> Path:
    """stories260K from llama2.c into out/base; or --model: a GGUF is imported into out/base
    (dequantized to fp32, `langgraft model import-gguf`), a Hugging Face directory of a
    supported family is checked and used where it is (not copied: it may be gigabytes)."""
    if "model" in a and a["model"].is_dir():
        from langgraft.model.checks import check_model_dir

        check_model_dir(a["model"])
        if not any((a["model"] / f).is_file() for f in ("tokenizer.json", "tokenizer.model")):
            raise UserError(f"--model {a['model']}: no tokenizer.json or tokenizer.model in it")
        return a["model"]
    (out / "base").mkdir()
    if "model" in a:
        from langgraft.model.gguf import import_gguf

        import_gguf(a["model"], out / "base", progress=progress and sys.stderr.isatty())
    else:
        from langgraft.model.llama2c import import_llama2c

        import_llama2c(a["checkpoint"], a["tokenizer"], out / "base")
    return out / "base"


def sample_self_replay(base: Path, out: Path, s: Scale, progress: bool) -> dict[str, Any]:
    from langgraft.data.self_replay import SelfReplayConfig, self_replay

    cfg = SelfReplayConfig(
        model=base, out=out / "self-replay", tokens=s.replay_tokens,
        heldout_fraction=s.replay_heldout,
        category="en-original", batch_size=128 if s.replay_max_new is None else 32,
        max_new_tokens=s.replay_max_new, progress=progress, seed=0,
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


def expand_tokenizer(
    base: Path, corpora: dict[str, Any], out: Path, s: Scale, name: str = "stories260K"
) -> dict[str, Any]:
    """SentencePiece sources get pieces, byte-level BPE ones merges (`expand` chooses)."""
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
        ReportConfig(tokenizer=[base, out / "tokenizer"], corpus=held, names=[name, "expanded"])
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
    corpora: dict[str, Any], model: Path, out: Path, progress: bool, max_length: int = 256
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
                input=inputs, tokenizer=model, out=data / name, max_length=max_length,
                num_bins=bins, text_field=text_field, progress=progress,
            )
        )  # fmt: skip
    return {name: data / name for name in jobs}


def evaluate_all(out: Path, models: dict[str, Path], corpora, a, s: Scale, limit: int) -> dict:
    from langgraft.report.evaluate import EvalPlan, evaluate_model

    text_only = EvalPlan(
        corpora=corpora["heldout"], prompts=PROMPTS, max_new_tokens=s.sample_tokens
    )
    full = EvalPlan(
        corpora=corpora["heldout"], prompts=PROMPTS, mc_task="cmmlu", mc_data=a["cmmlu"].parent,
        mc_limit=limit, max_new_tokens=s.sample_tokens,
    )  # fmt: skip
    with_mc = {"imported", "trained"} if limit > 0 else set()
    return {
        name: evaluate_model(
            name, path, out / "eval" / name, full if name in with_mc else text_only
        )
        for name, path in models.items()
    }
