"""`langgraft data self-replay` on the real stories260K: seeded reproducibility, the pretrain
schema (read back by the real `prepare`), and the --tokens budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langgraft.__main__ import main
from langgraft.data.self_replay import SelfReplayConfig, self_replay
from langgraft.errors import UserError

pytestmark = pytest.mark.timeout(300)


def sample(stories: Path, out: Path, **kw) -> dict:
    cfg = dict(model=stories, out=out, tokens=900, batch_size=6, max_new_tokens=96,
               heldout_fraction=0.25, progress=False)  # fmt: skip
    return self_replay(SelfReplayConfig(**{**cfg, **kw}))


def rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_same_seed_same_bytes_other_seed_other_text(stories: Path, tmp_path: Path) -> None:
    a, b = sample(stories, tmp_path / "a", seed=3), sample(stories, tmp_path / "b", seed=3)
    c = sample(stories, tmp_path / "c", seed=4)
    for name in ("train.jsonl", "heldout.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert a["files"] == b["files"]
    assert (tmp_path / "a/train.jsonl").read_bytes() != (tmp_path / "c/train.jsonl").read_bytes()
    assert c["config"]["seed"] == 4 and c["config"]["temperature"] == 1.0


def test_schema_budget_and_prepare_reads_it(stories: Path, tmp_path: Path) -> None:
    from langgraft.data.config import PrepareConfig
    from langgraft.data.prepare import prepare
    from langgraft.tokenizer import load_tokenizer

    s = sample(stories, tmp_path / "sr", tokens=1000, category="en-original", heldout_fraction=0.5)
    train, held = rows(tmp_path / "sr/train.jsonl"), rows(tmp_path / "sr/heldout.jsonl")
    assert train and held, "with heldout_fraction 0.5 both files get samples"
    for r in train + held:
        assert set(r) == {"source", "target", "category"}
        assert r["source"] == "" and r["category"] == "en-original"
        assert isinstance(r["target"], str) and r["target"].strip() == r["target"] != ""
    # The budget: exactly N tokens recorded, and the text itself re-tokenizes to about N (a
    # sampled sequence may re-encode a little shorter, never much longer).
    assert s["tokens"] == 1000
    assert sum(f["tokens"] for f in s["files"].values()) == 1000
    assert s["samples"] == len(train) + len(held)
    assert s["finish_reasons"]["budget"] <= 1
    tok = load_tokenizer(stories)
    n = sum(len(tok(r["target"], add_special_tokens=False).input_ids) for r in train + held)
    assert 850 <= n <= 1000 + len(train) + len(held), n
    # TinyStories English: the samples look like the model's training data.
    assert sum(r["target"].count(" the ") for r in train) > 5
    m = prepare(PrepareConfig(input=[str(tmp_path / "sr/train.jsonl")], tokenizer=stories,
                              out=tmp_path / "prep", max_length=128, progress=False)).manifest  # fmt: skip
    assert m["counts"]["rows"]["in"] == len(train)
    assert sum(m["counts"]["rows"]["rejected"].values()) == 0


def test_cli_and_bad_options(stories: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    argv = ["data", "self-replay", "--model", str(stories), "--out", str(out), "--tokens", "300",
            "--batch-size", "4", "--max-new-tokens", "64", "--seed", "1", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert "300 tokens" in capsys.readouterr().out
    assert json.loads((out / "self_replay.json").read_text())["tokens"] == 300
    assert main(argv) == 2  # the output exists: refused, nothing overwritten
    assert "already exists" in capsys.readouterr().err
    for bad, message in ((dict(tokens=0), "--tokens"), (dict(heldout_fraction=1.0), "heldout"),
                         (dict(max_new_tokens=4000), "context")):  # fmt: skip
        with pytest.raises(UserError, match=message):
            sample(stories, tmp_path / "bad", **bad)
    assert not (tmp_path / "bad").exists()
