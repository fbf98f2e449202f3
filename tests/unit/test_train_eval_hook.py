"""The training-time eval hook, checked against known answers: its held-out loss per category
equals Hugging Face's own loss computed document by document on the exported weights, its
CMMLU probe equals `langgraft eval mc` on the export, and it runs through the trainer's own
collation and precision (autocast also around the multiple-choice probe)."""

from __future__ import annotations

import json

import pytest
import torch
from train_helpers import SHARED, prepared, tiny_model, write_recipe

from langgraft.__main__ import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    t = tmp_path_factory.mktemp("eval-hook")
    model = tiny_model(t / "model")
    train = prepared(t / "train", model, {"en": 40, "zh": 40})
    held = prepared(t / "held", model, {"en": 8, "zh": 8}, seed=7)
    cfg = write_recipe(t / "r.yaml", {
        "model": str(model), "out": str(t / "run"), "progress": False, "tensorboard": False,
        "train": {"micro_batch_size": 4, "warmup_steps": 0, "lr": 3e-3},
        "eval": {"interval": 2, "data": [str(held)], "max_rows": 8, "mc_task": "cmmlu",
                 "mc_data": str(SHARED / "eval" / "cmmlu"), "mc_limit": 1},
        "stages": [{"name": "s", "data": [{"path": str(train)}], "steps": 4}],
    })  # fmt: skip
    assert main(["train", "--config", str(cfg)]) == 0
    rows = [json.loads(x) for x in (t / "run" / "metrics.jsonl").read_text().splitlines()]
    return {"t": t, "held": held, "evals": [r for r in rows if "eval/held/loss" in r]}


def per_document_loss(model_dir, held, max_rows: int) -> dict[str, float]:
    """The oracle: every packed document scored alone by HF's forward (positions from 0, no
    mask needed), nll of each supervised token, token-weighted per category."""
    from transformers import AutoModelForCausalLM

    from langgraft.train.data import PreparedDataset

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    sums: dict[str, list[float]] = {}
    ds, seen = PreparedDataset(held), 0
    for b in ds.buckets:
        for i in range(b.num_rows):
            if seen == max_rows:
                break
            seen += 1
            row, start = b.row(i), 0
            for n in row.doc_lens.tolist():
                ids = torch.tensor(row.input_ids[start : start + n], dtype=torch.long)[None]
                labels = torch.tensor(row.labels[start : start + n], dtype=torch.long)[None]
                start += n
                with torch.no_grad():
                    logits = model(input_ids=ids).logits[0, :-1]
                target = labels[0, 1:]
                keep = target != -100
                nll = torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum")
                acc = sums.setdefault(row.category, [0.0, 0])
                acc[0] += float(nll)
                acc[1] += int(keep.sum())
    return {c: s / n for c, (s, n) in sums.items()}


def test_heldout_loss_equals_hf_per_document_loss_on_the_export(run) -> None:
    evals = run["evals"]
    # every 2 steps; the stage end (step 4, a multiple of 2) once, not twice
    assert [r["step"] for r in evals] == [2, 4]
    final = evals[-1]  # at the stage end: the exported weights
    oracle = per_document_loss(run["t"] / "run" / "export" / "stage-0-s", run["held"], 8)
    assert set(oracle) == {"en", "zh"}
    for cat, loss in oracle.items():
        assert final[f"eval/held/loss/{cat}"] == pytest.approx(loss, rel=1e-5), cat
    assert evals[0]["eval/held/loss"] != final["eval/held/loss"]  # it tracks training


def test_mc_probe_equals_langgraft_eval_mc_on_the_export(run, tmp_path) -> None:
    final = run["evals"][-1]
    out = tmp_path / "mc"
    export = run["t"] / "run" / "export" / "stage-0-s"
    args = ["eval", "mc", "--model", str(export), "--task", "cmmlu", "--limit", "1"]
    args += ["--data", str(SHARED / "eval" / "cmmlu"), "--out", str(out)]
    assert main(args) == 0
    report = json.loads((out / "results.json").read_text())
    assert final["eval/cmmlu/first_token_acc"] == report["overall"]["first_token_acc"]["acc"]
    for cat, e in report["categories"].items():
        assert final[f"eval/cmmlu/first_token_acc/{cat}"] == e["first_token_acc"]["acc"]
    assert {"STEM", "Humanities", "Social Science", "Other"} <= set(report["categories"])


def test_the_hook_runs_through_training_collation_and_precision(tmp_path, monkeypatch) -> None:
    import langgraft.eval
    import langgraft.train.evaluate as hook

    torch.set_num_threads(1)
    model = tiny_model(tmp_path / "model")
    data = prepared(tmp_path / "data", model, {"en": 24})
    seen: list[tuple] = []
    forward = hook.forward_nll

    def spy_forward(model, mb, *args, **kw):
        seen.append(
            ("loss", mb.attn_implementation, mb.mask_dtype, torch.is_autocast_enabled("cpu"))
        )
        return forward(model, mb, *args, **kw)

    def spy_probe(model, tokenizer, task, limit):
        seen.append(("mc", None, None, torch.is_autocast_enabled("cpu")))
        return {"first_token_acc": 0.0}

    monkeypatch.setattr(hook, "forward_nll", spy_forward)
    monkeypatch.setattr(langgraft.eval, "probe_mc", spy_probe)
    cfg = write_recipe(tmp_path / "r.yaml", {
        "model": str(model), "out": str(tmp_path / "run"), "progress": False,
        "tensorboard": False, "precision": "bf16", "attn_implementation": "eager",
        "checkpoint": {"export_hf": False},
        "train": {"micro_batch_size": 4, "warmup_steps": 0},
        "eval": {"interval": 1, "data": [str(data)], "max_rows": 4, "mc_task": "cmmlu",
                 "mc_data": str(SHARED / "eval" / "cmmlu")},
        "stages": [{"name": "s", "data": [{"path": str(data)}], "steps": 2}],
    })  # fmt: skip
    assert main(["train", "--config", str(cfg)]) == 0
    assert [s[0] for s in seen] == ["loss", "mc", "loss", "mc"]  # step 1 and the stage end (2)
    for kind, impl, mask_dtype, autocast in seen:
        assert autocast, kind  # bf16 like the training step, the probe included
        if kind == "loss":
            assert impl == "eager" and mask_dtype == torch.bfloat16


def test_heldout_rows_are_split_over_data_parallel_ranks(run) -> None:
    """Each dp rank scores every dp-th row (the same number of batches on every rank: a sharded
    forward is collective); the ranks' sums merged are the one-process sums."""
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM

    from langgraft.train.data import PreparedDataset
    from langgraft.train.evaluate import heldout_loss
    from langgraft.train.loss import Collator

    model = AutoModelForCausalLM.from_pretrained(run["t"] / "model", dtype=torch.float32)
    ds = PreparedDataset(run["held"])
    seen: list[int] = []

    def collate(rows):
        seen.append(len(rows))
        return Collator(0)(rows)

    cpu, none = torch.device("cpu"), __import__("contextlib").nullcontext
    whole = heldout_loss(model, ds, 7, cpu, collate, 3, none)
    assert seen == [3, 3, 1]
    merged: dict[str, tuple[float, int]] = {}
    for r in (0, 1):
        seen.clear()
        dims = SimpleNamespace(dp=2, dp_rank=r, dp_group=None)
        part = heldout_loss(model, ds, 7, cpu, collate, 3, none, dims)
        # rows 0,2,4,6 / 1,3,5: two batches on each rank (rank 1's second repeats row 0 and is
        # dropped)
        assert seen == [3, 1]
        for c, (s, n) in part.items():
            merged[c] = (merged.get(c, (0.0, 0))[0] + s, merged.get(c, (0.0, 0))[1] + n)
    assert merged.keys() == whole.keys()
    for c in whole:
        assert merged[c][1] == whole[c][1] and merged[c][0] == pytest.approx(whole[c][0], rel=1e-6)
