"""A host-sync and collective budget for the training step (issue 20, item 3).

On a GPU every host read of a device tensor (`item`, `tolist`, `float()`, `bool()`) and every
`cuda.synchronize` stalls the CPU until the stream drains, and every collective outside the
model's own all-gather / reduce-scatter is a latency-bound NCCL call. On CPU/gloo none of this
costs anything, so the test counts them instead (tests/distributed/sync_probe.py wraps the
calls and records each step): `langgraft train` under torchrun, 2 ranks, FSDP2 (`zero2`) and
tensor parallel (`3d`, tp 2), log_interval 3, accumulation 2.

Budget of a step that is not logged (stated here, enforced below): 0 host reads; collectives:
FSDP2 on 2 ranks 2 (the [supervised, tokens] all-reduce over "dp" and one gradient-norm
reduction for its one mesh), tp 2 on 2 ranks 1 (dp is 1, so no count all-reduce; one norm
reduction for the TP-sharded weights, whose mesh is "tp"; the replicated rest are plain
tensors). Both are the same for a 2-layer and a 4-layer model: nothing grows with the
parameter count (the previous engine did one `full_tensor()` and one host read per gradient,
an all-reduce + item() before the forward and a token all-reduce + item() after the step)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, free_port

pytestmark = pytest.mark.timeout(600)
TIMEOUT_S = 240


def tiny(out: Path, layers: int, tok512: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from langgraft.tokenizer import load_tokenizer

    tok = load_tokenizer(tok512)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=128, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def models(shared_data, tmp_path_factory) -> dict:
    from langgraft.__main__ import main

    t = tmp_path_factory.mktemp("syncs")
    tok512 = shared_data / "models" / "stories260K" / "tok512.model"
    out = {n: tiny(t / f"l{n}", n, tok512) for n in (2, 4)}
    # Lines as documents: every packed row holds several (the pretraining layout), so the step
    # passes its own document mask and transformers never inspects the positions (a row of
    # one document would cost one read per forward: train/attention.py).
    text = (shared_data / "corpus/en/tinyshakespeare.txt").read_text()[:8000]
    lines = [s.strip() for s in text.splitlines() if s.strip()]
    (t / "en.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in lines))
    args = ["prepare", "pretrain", "--input", f"en={t / 'en.jsonl'}", "--tokenizer", str(out[2]),
            "--out", str(t / "data"), "--max-length", "64", "--text-field", "text",
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    return {"t": t, "data": t / "data", **out}


def probe(models: dict, layers: int, **top) -> list[list[dict]]:
    import os
    import subprocess

    name = f"l{layers}-{top.get('plugin')}"
    out = models["t"] / name
    r = {
        "model": str(models[layers]), "out": str(out), "progress": False, "tensorboard": False,
        "log_interval": 3, "checkpoint": {"save_interval": 0, "export_hf": False},
        "train": {"micro_batch_size": 2, "accumulation_steps": 2, "lr": 1e-3},
        "stages": [{"name": "s", "data": [{"path": str(models["data"])}], "steps": 6}],
        **top,
    }  # fmt: skip
    cfg = models["t"] / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(r))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
           "PROBE_OUT": str(out / "probe"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           str(ROOT / "tests" / "distributed" / "sync_probe.py"), "train", "--config", str(cfg)]  # fmt: skip
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert p.returncode == 0, p.stderr[-3000:]
    ranks = [json.loads((out / "probe" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(x["rc"] == 0 for x in ranks)
    return [x["steps"] for x in ranks]


@pytest.mark.parametrize(("top", "collectives"), [
    ({"plugin": "zero2"}, 2),
    ({"plugin": "3d", "tp": 2}, 1),
], ids=["fsdp2", "tp2"])  # fmt: skip
def test_a_step_that_is_not_logged_reads_nothing_and_issues_a_fixed_set_of_collectives(
    models, top, collectives
) -> None:
    per_layers = {n: probe(models, n, **top) for n in (2, 4)}
    for n, ranks in per_layers.items():
        for steps in ranks:
            assert [s["logged"] for s in steps] == [False, False, True] * 2, steps
            quiet = [s for s in steps if not s["logged"]]
            assert all(s["host_read"] == 0 for s in quiet), (n, quiet)
            assert all(s["collective"] == collectives for s in quiet), (n, quiet)
