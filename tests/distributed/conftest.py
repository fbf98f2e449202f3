"""Fixtures of the multi-process tests: the real stories260K, imported from llama2.c and given
Chinese pieces by the real `tokenizer expand` + `model expand` chain, real Hongloumeng and Tiny
Shakespeare rows from `prepare`, and a torchrun launcher with a timeout (CPU, gloo, one thread
per rank)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 240
EVAL = "eval/data-en/loss"  # per torchrun; a hang fails the test instead of stalling CI


def _cut(src: Path, out: Path, chars: int) -> Path:
    text = src.read_text(encoding="utf-8")
    out.write_text(text[: text.index("\n", chars) + 1], encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def real(stories: Path, shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """{"model": expanded stories260K (tied, 641 pieces), "untied": the same with its own
    lm_head, "zh": two-bucket Hongloumeng rows, "en": one-bucket Tiny Shakespeare rows}."""
    import torch
    from transformers import AutoModelForCausalLM

    from langgraft.__main__ import main

    t = tmp_path_factory.mktemp("dist")
    zh = _cut(shared_data / "corpus/zh/hongloumeng.txt", t / "zh.txt", 12_000)
    en = _cut(shared_data / "corpus/en/tinyshakespeare.txt", t / "en.txt", 8_000)
    args = ["tokenizer", "expand", "--source", str(stories), "--learn-from", str(zh),
            "--target-size", "641", "--out", str(t / "tok")]  # fmt: skip
    assert main(args) == 0
    model = t / "model"
    args = ["model", "expand", "--model", str(stories), "--tokenizer", str(t / "tok"),
            "--out", str(model)]  # fmt: skip
    assert main(args) == 0
    untied = t / "untied"
    m = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    m.config.tie_word_embeddings = False
    m.lm_head.weight = torch.nn.Parameter(m.model.embed_tokens.weight.detach().clone())
    m.save_pretrained(untied)
    for f in model.glob("tok*"):
        (untied / f.name).write_bytes(f.read_bytes())
    for f in ("special_tokens_map.json",):
        if (model / f).is_file():
            (untied / f).write_bytes((model / f).read_bytes())
    out = {"t": t, "model": model, "untied": untied}
    for name, path, bins in (("zh", zh, 2), ("en", en, 1)):
        args = ["prepare", "pretrain", "--input", f"{name}={path}", "--tokenizer", str(model),
                "--out", str(t / f"data-{name}"), "--max-length", "64", "--num-bins",
                str(bins), "--no-progress"]  # fmt: skip
        assert main(args) == 0
        out[name] = t / f"data-{name}"
    return out


def recipe(real: dict, out: Path, acc: int, model: str = "model", **top: Any) -> Path:
    """Two stages (embeddings-only, then everything on zh + en): 2 + 3 steps of 2 x acc x
    ranks rows; `top` sets top-level keys (plugin, tp, ...)."""
    r = {
        "model": str(real[model]), "out": str(out), "progress": False, "tensorboard": False,
        "train": {"micro_batch_size": 2, "accumulation_steps": acc, "lr": 3e-3},
        "checkpoint": {"save_interval": 2, "keep_last": 3},
        # collective under FSDP2/TP: every rank runs the forward, rank 0 writes the row
        "eval": {"interval": 2, "data": [str(real["en"])], "max_rows": 8},
        "stages": [
            {"name": "warm", "data": [{"path": str(real["zh"])}], "steps": 2,
             "freeze_non_embeds_params": True, "lr": 1e-2},
            {"name": "mix", "data": [{"path": str(real["zh"])},
                                     {"path": str(real["en"]), "weight": 0.5}], "steps": 3},
        ],
        **top,
    }  # fmt: skip
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(r, sort_keys=False))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def langgraft(*args: str, nproc: int = 1, env: dict[str, str] | None = None,
              timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:  # fmt: skip
    """`langgraft ARGS` in one process, or under torchrun with `nproc` ranks."""
    e = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", **(env or {})}
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), e.get("PYTHONPATH", "")])
    if nproc == 1:
        launcher = [sys.executable, "-m", "langgraft"]
    else:
        launcher = [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "langgraft",
        ]  # fmt: skip
    return subprocess.run([*launcher, *args], cwd=ROOT, env=e, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def rows(out: Path, kind: str = "loss") -> list[dict]:
    """Training rows (kind "loss") or eval rows (kind "eval/data-en/loss") of metrics.jsonl."""
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if kind in r]


def export_weights(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "export" / "stage-1-mix" / "model.safetensors"))


@pytest.fixture(scope="session")
def oracle(real) -> dict:
    """One process, micro-batch 2 x 4 accumulation steps: the reference of every layout."""
    out = real["t"] / "oracle"
    p = langgraft("train", "--config", str(recipe(real, out, acc=4)))
    assert p.returncode == 0, p.stderr[-3000:]
    return {"rows": rows(out), "weights": export_weights(out), "out": out,
            "eval": rows(out, EVAL)}  # fmt: skip


@pytest.fixture(scope="session")
def straight(real) -> Any:
    """straight(plugin) -> out dir of an uninterrupted 2-rank run (2 x 2 per rank), run once."""
    done: dict[str, Path] = {}

    def run(plugin: str) -> Path:
        if plugin not in done:
            out = real["t"] / plugin
            cfg = recipe(real, out, acc=2, plugin=plugin)
            p = langgraft("train", "--config", str(cfg), nproc=2)
            assert p.returncode == 0, p.stderr[-3000:]
            (out / "stderr.txt").write_text(p.stderr)  # the layout the ranks logged
            done[plugin] = out
        return done[plugin]

    return run
