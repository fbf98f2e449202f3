"""Issue 23, item 2: the commands that bypassed the output contract (`langgraft.fsutil`) now keep
it. One table: each row builds a workspace, runs one command that must be refused, and checks
exit 2, the one-line message, that nothing in the workspace changed (no lock or scratch left),
and that the refusal came before the work (every slow step is a tripwire here)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from test_bad_inputs import snapshot
from test_report import synthetic_run
from test_tokenizer_bytelevel import CHINESE, write_ranks

from langgraft.__main__ import main
from langgraft.errors import UserError

pytestmark = pytest.mark.timeout(300)
MARKER = ".langgraft-output"  # fsutil.MARKER
PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""  # noqa: E501


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse: an option the command does not have
        return int(e.code or 0)


def marked(d: Path) -> Path:
    """Mark `d` as written by langgraft (as `model import-llama2c` / `expand` do)."""
    (d / MARKER).write_text(json.dumps({"written_by": "langgraft"}) + "\n")
    return d


def foreign(d: Path, *names: str) -> Path:
    d.mkdir(parents=True)
    for n in (*names, "thesis.md"):
        (d / n).write_text(f"the user's {n}\n")
    return d


def replay_argv(model: Path, out: Path, *extra: str) -> list[str]:
    return ["data", "self-replay", "--model", str(model), "--out", str(out), "--tokens", "64",
            "--batch-size", "2", "--no-progress", *extra]  # fmt: skip


def model_copy(ws: Path, stories: Path) -> Path:
    return marked(Path(shutil.copytree(stories, ws / "model")))


def ranks(ws: Path) -> Path:
    merges = [b"th", b"the"]
    for ch in dict.fromkeys(CHINESE.replace("\n", "")):
        b = ch.encode()
        merges += [m for m in (b[:2], b) if m not in merges]
    return write_ranks(ws / "tiny.tiktoken", merges)


def zh_corpus(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "zh.txt").write_text("\n".join([CHINESE] * 10), encoding="utf-8")
    return d / "zh.txt"


def sweep_argv(ws: Path, out: Path, *extra: str) -> list[str]:
    corpus = ws / "corpus" / "zh.txt"
    return ["tokenizer", "sweep", "--source", str(ws / "tiny.tiktoken"), "--pattern", PATTERN,
            "--learn-from", str(corpus), "--hold-out", "0.2", "--sizes", "299,305",
            "--hidden-size", "8", "--out", str(out), *extra]  # fmt: skip


def sweep_ws(ws: Path) -> None:
    ranks(ws)
    zh_corpus(ws / "corpus")
    (ws / "corpus" / "sweep.md").write_text("the user's notes on vocabulary sizes\n")


def bytelevel_expand_argv(source: Path, out: Path, corpus: Path, *extra: str) -> list[str]:
    return ["tokenizer", "expand", "--source", str(source), "--out", str(out), "--learn-from",
            str(corpus), "--target-size", "300", *extra]  # fmt: skip


def l3_output(ws: Path) -> list[str]:
    """A byte-level tokenizer written by `tokenizer expand` (marked), expanded into itself."""
    corpus = zh_corpus(ws / "corpus")
    l3 = ws / "l3"
    assert main([*bytelevel_expand_argv(ranks(ws), l3, corpus)[:-2], "--pattern", PATTERN,
                 "--target-size", "299"]) == 0  # fmt: skip
    return bytelevel_expand_argv(l3, l3, corpus, "--overwrite")


def demo_argv(shared: Path, out: Path, *extra: str) -> list[str]:
    return ["demo", "--quick", "--assets", str(shared), "--out", str(out), "--no-progress", *extra]


def report_run(ws: Path) -> Path:
    return synthetic_run(ws / "run")


Build = Callable[[Path, Path, Path], list[str]]  # (workspace, stories, shared data) -> argv
CASES: dict[str, tuple[Build, str]] = {
    # data self-replay: the model is an input; an existing --out is refused before sampling
    "self-replay --out = --model --overwrite": (
        lambda ws, st, sh: replay_argv(m := model_copy(ws, st), m, "--overwrite"),
        "is the input",
    ),
    "self-replay --out inside --model": (
        lambda ws, st, sh: replay_argv(m := model_copy(ws, st), m / "replay"),
        "is inside the input",
    ),
    "self-replay --out an existing directory": (
        lambda ws, st, sh: replay_argv(model_copy(ws, st), foreign(ws / "mine")),
        "already exists (pass --overwrite",
    ),
    "self-replay --overwrite a directory langgraft did not write": (
        lambda ws, st, sh: replay_argv(model_copy(ws, st), foreign(ws / "mine"), "--overwrite"),
        "not written by langgraft",
    ),
    # demo: its own demo.json is not a marker; --overwrite only over langgraft's outputs
    "demo --out a directory holding a file named demo.json": (
        lambda ws, st, sh: demo_argv(sh, foreign(ws / "mine", "demo.json")),
        "already exists (pass --overwrite",
    ),
    "demo --overwrite a directory holding a file named demo.json": (
        lambda ws, st, sh: demo_argv(sh, foreign(ws / "mine", "demo.json"), "--overwrite"),
        "not written by langgraft",
    ),
    "demo --out inside the assets": (
        lambda ws, st, sh: demo_argv(sh, sh / "models" / "stories260K" / "tok512.model" / "x"),
        "is inside the input",
    ),
    # byte-level tokenizer expand: the source is an input (as on the SentencePiece path)
    "tokenizer expand (byte-level) --source l3 --out l3 --overwrite": (
        lambda ws, st, sh: l3_output(ws),
        "is the input",
    ),
    # report: no more writing into any existing directory
    "report --out an existing directory": (
        lambda ws, st, sh: [
            "report",
            str(report_run(ws)),
            "--out",
            str(foreign(ws / "docs", "report.md")),
        ],  # fmt: skip
        "already exists (pass --overwrite",
    ),
    "report --overwrite a directory langgraft did not write": (
        lambda ws, st, sh: [
            "report",
            str(report_run(ws)),
            "--out",
            str(foreign(ws / "docs", "report.md")),
            "--overwrite",
        ],  # fmt: skip
        "not written by langgraft",
    ),
    "report --out = the run directory": (
        lambda ws, st, sh: ["report", str(r := report_run(ws)), "--out", str(r), "--overwrite"],
        "contains the input",
    ),
    # tokenizer sweep: not into the corpus it learns from, nor over a user's sweep.*
    "tokenizer sweep --out = the corpus directory --overwrite": (
        lambda ws, st, sh: (sweep_ws(ws), sweep_argv(ws, ws / "corpus", "--overwrite"))[1],
        "contains the input",
    ),
    "tokenizer sweep --overwrite a directory langgraft did not write": (
        lambda ws, st, sh: (
            sweep_ws(ws),
            sweep_argv(ws, foreign(ws / "d", "sweep.json"), "--overwrite"),
        )[1],
        "not written by langgraft",
    ),  # fmt: skip
}


def _tripwire(what: str) -> Callable[..., None]:
    def trip(*a, **k) -> None:  # noqa: ANN002, ANN003
        raise AssertionError(f"{what} started before the output was checked")

    return trip


@pytest.fixture
def tripwires(monkeypatch) -> Callable[[], None]:
    """Installed after a case's workspace is built: every slow step of the commands fails."""

    def install() -> None:
        for target in (
            "langgraft.data.self_replay.sample_documents",
            "langgraft.decoding.load_model",
            "langgraft.demo.cli.import_base",
            "langgraft.tokenizer.expand_bytelevel.learn_expansion",
            "langgraft.tokenizer.sweep.sweep_tokenizers",
            "langgraft.report.build.write_report",
        ):
            monkeypatch.setattr(target, _tripwire(target))

    return install


@pytest.mark.parametrize("case", list(CASES))
def test_refused_before_the_work_and_nothing_changes(case: str, stories: Path, shared_data: Path, tmp_path: Path, tripwires, capsys) -> None:  # fmt: skip
    build, message = CASES[case]
    ws = tmp_path / "ws"
    ws.mkdir()
    argv = build(ws, stories, shared_data)
    tripwires()
    before = snapshot(ws)
    capsys.readouterr()
    assert run(argv) == 2, case
    err = capsys.readouterr().err
    assert message in err, err
    assert err.strip().splitlines()[-1].startswith(f"langgraft {argv[0]}"), err
    assert snapshot(ws) == before  # nothing replaced, no lock or scratch left


def test_report_default_out_and_overwrite(tmp_path: Path, capsys) -> None:
    """RUN/report (the default --out) lies inside the run but touches none of its files; a
    second report needs --overwrite, which replaces only the report's own directory."""
    run_dir = synthetic_run(tmp_path / "run")
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report" / MARKER).is_file() and (run_dir / "report/report.md").is_file()
    assert main(["report", str(run_dir)]) == 2
    assert "already exists (pass --overwrite" in capsys.readouterr().err
    (run_dir / "report" / "stale.png").write_bytes(b"old")
    assert main(["report", str(run_dir), "--overwrite"]) == 0
    assert not (run_dir / "report" / "stale.png").exists()
    assert sorted(p.name for p in run_dir.iterdir()) == ["metrics.jsonl", "recipe.json", "report"]


def test_sweep_writes_atomically_and_overwrites_its_own_output(tmp_path: Path, monkeypatch) -> None:  # fmt: skip
    sweep_ws(tmp_path)
    out = tmp_path / "sweep"
    assert main(sweep_argv(tmp_path, out)) == 0
    assert (out / MARKER).is_file() and (out / "sweep.json").is_file()
    old = snapshot(out)

    def full_disk(*a, **k) -> None:  # noqa: ANN002, ANN003
        raise OSError(28, "No space left on device", str(out / "sweep.png"))

    monkeypatch.setattr("langgraft.tokenizer.sweep.write_outputs", full_disk)
    assert main(sweep_argv(tmp_path, out, "--overwrite")) == 2
    assert snapshot(out) == old  # the old sweep is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "sweep", "tiny.tiktoken"]
    monkeypatch.undo()
    assert main(sweep_argv(tmp_path, out, "--overwrite")) == 0


def test_demo_refuses_while_another_demo_writes(shared_data: Path, tmp_path: Path, tripwires, capsys) -> None:  # fmt: skip
    from langgraft.fsutil import output_lock

    out = tmp_path / "demo"
    tripwires()
    with output_lock(out):
        assert run(demo_argv(shared_data, out)) == 2
    assert f"another langgraft run (pid {os.getpid()})" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_failed_demo_restores_the_previous_output(shared_data: Path, tmp_path: Path, monkeypatch, capsys) -> None:  # fmt: skip
    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo.json").write_text('{"status": "done"}\n')
    marked(out)
    before = snapshot(tmp_path)
    seen = {}

    def fail(a: dict, o: Path, progress: bool = True) -> Path:
        seen["marker"] = json.loads((o / MARKER).read_text())
        seen["status"] = json.loads((o / "demo.json").read_text())["status"]
        raise UserError("simulated failure in step 1")

    monkeypatch.setattr("langgraft.demo.cli.import_base", fail)
    assert run(demo_argv(shared_data, out, "--overwrite")) == 2
    assert "simulated failure" in capsys.readouterr().err
    assert seen == {"marker": {**seen["marker"], "partial": True}, "status": "running"}
    assert snapshot(tmp_path) == before


def test_in_place_output_killed_mid_run_gets_the_old_one_back(tmp_path: Path) -> None:
    """A SIGKILL during an in-place run leaves the partial output (marked partial) and the old
    one moved aside; the next run into the same --out puts the old one back first."""
    from langgraft.fsutil import output_dir_in_place

    out = tmp_path / "out"
    with output_dir_in_place(out) as d:
        (d / "result.txt").write_text("first run")
    assert json.loads((out / MARKER).read_text()).get("partial") is None
    # what a kill leaves: the old output aside, a partial one in its place
    out.rename(tmp_path / ".out.old-424242")
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"written_by": "langgraft", "partial": True}))
    (out / "half.txt").write_text("half")
    before = snapshot(tmp_path)
    with pytest.raises(UserError, match="already exists"), output_dir_in_place(out):
        pass  # refused without --overwrite: nothing changes
    assert snapshot(tmp_path) == before
    with pytest.raises(UserError, match="simulated"), output_dir_in_place(out, True) as d:
        assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", ".out.old-" + str(os.getpid()), "out"]  # fmt: skip
        raise UserError("simulated failure")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "result.txt"]
    assert (out / "result.txt").read_text() == "first run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# --- train: a refused --resume touches nothing ---


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    import torch
    from train_helpers import prepared, tiny_model, write_recipe

    torch.set_num_threads(1)
    t = tmp_path_factory.mktemp("resume-refused")
    model = tiny_model(t / "model")
    data = prepared(t / "data", model, {"en": 24})
    recipes = {}
    for seed in (0, 7):
        r = {
            "model": str(model), "out": str(t / "run"), "progress": False, "tensorboard": False,
            "seed": seed, "checkpoint": {"save_interval": 1, "keep_last": 2},
            "train": {"micro_batch_size": 2, "warmup_steps": 0, "lr": 1e-3},
            "stages": [{"name": "s", "data": [{"path": str(data)}], "steps": 2}],
        }  # fmt: skip
        recipes[seed] = write_recipe(t / f"seed{seed}.yaml", r)
    assert main(["train", "--config", str(recipes[0])]) == 0
    return {"t": t, "run": t / "run", **{f"seed{k}": v for k, v in recipes.items()}}


def test_refused_resume_keeps_recipe_json(trained: dict[str, Path], capsys) -> None:
    run_dir = trained["run"]
    before = snapshot(run_dir)
    capsys.readouterr()
    assert main(["train", "--config", str(trained["seed7"]), "--resume", "auto"]) == 2
    assert "cannot resume" in capsys.readouterr().err
    assert snapshot(run_dir) == before  # recipe.json still the run's; no lock file left


def test_refused_resume_path_into_a_new_out_leaves_nothing(trained: dict[str, Path], capsys) -> None:  # fmt: skip
    import yaml

    ck = sorted((trained["run"] / "checkpoints").glob("step-*"))[-1]
    new_out = trained["t"] / "new-run"
    r = yaml.safe_load(trained["seed7"].read_text())
    cfg = trained["t"] / "new-run.yaml"
    cfg.write_text(yaml.safe_dump({**r, "out": str(new_out)}))
    assert main(["train", "--config", str(cfg), "--resume", str(ck)]) == 2
    assert "cannot resume" in capsys.readouterr().err
    assert not new_out.exists()
