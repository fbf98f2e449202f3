"""Loading without a full copy of the model per rank (issue 20, item 1).

The real SmolLM2-135M (fp32, 538 MB of weights, tied embeddings) on 4 gloo ranks under FSDP2:
each rank builds the model on the meta device, shards it and reads only its own slices of the
safetensors file (train/build.py). Measured per rank by tests/distributed/load_probe.py: the
peak resident memory that building and loading add above the process's memory just before.
Their sum over the ranks must stay within 2x the model's bytes (one copy's worth of shards plus
transients); the previous engine loaded the whole fp32 model on every rank (4x and more). The
first logged loss equals one process's on the same global batch, so the shards hold the right
weights (the rotary buffers, which no file holds, included)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, free_port, langgraft, rows

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def data(smollm2: Path, shared_data: Path, tmp_path_factory) -> Path:
    from langgraft.__main__ import main

    t = tmp_path_factory.mktemp("load")
    lines = [s for s in (shared_data / "corpus/en/tinyshakespeare.txt").read_text()
             .splitlines()[:200] if s.strip()]  # fmt: skip
    (t / "en.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in lines))
    args = ["prepare", "pretrain", "--input", f"en={t / 'en.jsonl'}", "--tokenizer",
            str(smollm2), "--out", str(t / "data"), "--max-length", "32", "--text-field",
            "text", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    return t / "data"


def recipe(smollm2: Path, data: Path, out: Path, acc: int, **top) -> Path:
    r = {
        "model": str(smollm2), "out": str(out), "progress": False, "tensorboard": False,
        "checkpoint": {"save_interval": 0, "export_hf": False},
        "train": {"micro_batch_size": 1, "accumulation_steps": acc, "lr": 1e-4},
        "stages": [{"name": "s", "data": [{"path": str(data)}], "steps": 1}], **top,
    }  # fmt: skip
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(r))
    return path


def test_ranks_hold_their_shards_not_the_model(smollm2, data, tmp_path) -> None:
    from safetensors import safe_open

    with safe_open(str(smollm2 / "model.safetensors"), framework="pt") as f:
        model_bytes = 4 * sum(_numel(f.get_slice(k).get_shape()) for k in f.keys())  # fp32
    out = tmp_path / "fsdp4"
    cfg = recipe(smollm2, data, out, acc=1, plugin="zero2")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
           "PROBE_OUT": str(out.parent / "probe"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "4",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           str(ROOT / "tests" / "distributed" / "load_probe.py"), "train", "--config", str(cfg)]  # fmt: skip
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    probes = [json.loads((out.parent / "probe" / f"rank{r}.json").read_text()) for r in range(4)]
    added = [(x["anon_peak_kb"] - x["anon_before_kb"]) * 1024 for x in probes]
    kept = [(x["anon_after_kb"] - x["anon_before_kb"]) * 1024 for x in probes]
    mapped = [(x["file_peak_kb"] - x["file_before_kb"]) * 1024 for x in probes]
    mib = lambda xs: [round(a / 2**20) for a in xs]  # noqa: E731
    print(f"model {model_bytes / 2**20:.0f} MiB; private peak added per rank (MiB) "
          f"{mib(added)}, sum {sum(added) / model_bytes:.2f}x the model; kept after loading "
          f"{mib(kept)}; shared page cache mapped {mib(mapped)}")
    assert sum(added) <= 2 * model_bytes, (added, model_bytes)
    # The same global batch in one process (4 micro-batches of 1): the same first loss.
    one = tmp_path / "one"
    q = langgraft("train", "--config", str(recipe(smollm2, data, one, acc=4)), timeout=600)
    assert q.returncode == 0, q.stderr[-3000:]
    got, want = rows(out)[0]["loss"], rows(one)[0]["loss"]
    assert abs(got - want) / want < 1e-5, (got, want)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
