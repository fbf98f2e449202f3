"""The data-loss scenarios of issue 15, each as found by the sweep: nothing a user owns may be
destroyed by a langgraft command (`langgraft.fsutil`: the one output contract)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_bad_inputs import snapshot

from langgraft.__main__ import main
from langgraft.errors import UserError

# langgraft.fsutil.MARKER; fsutil names are imported inside the tests that use them, so that this
# module also runs against code that predates them (each test then fails on its own).
MARKER = ".langgraft-output"

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tok512(shared_data: Path) -> Path:
    return shared_data / "models" / "stories260K" / "tok512.model"


def expand_tok(tok512: Path, pieces: Path, out: Path | str, *extra: str) -> int:
    return main(["tokenizer", "expand", "--source", str(tok512), "--pieces", str(pieces),
                 "--out", str(out), *extra])  # fmt: skip


def prepare_argv(corpus: Path, tok: Path, out: Path, *extra: str) -> list[str]:
    return ["prepare", "pretrain", "--input", f"en={corpus}", "--tokenizer", str(tok),
            "--out", str(out), "--max-length", "64", "--no-progress", *extra]  # fmt: skip


@pytest.fixture
def pieces(tmp_path: Path) -> Path:
    p = tmp_path / "inputs" / "pieces.jsonl"
    p.parent.mkdir()
    p.write_text('{"piece": "▁中国"}\n')
    return p


def test_overwrite_with_out_an_inputs_parent_deletes_nothing(tok512: Path, tmp_path: Path, capsys) -> None:  # fmt: skip
    corpus = tmp_path / "w" / "corpus"
    corpus.mkdir(parents=True)
    (corpus / "x.txt").write_text("Once upon a time there was a cat.\n\nThe end.\n")
    (corpus / "thesis.md").write_text("three years of work\n")
    before = snapshot(tmp_path)
    rc = main(prepare_argv(corpus / "x.txt", tok512, corpus, "--overwrite"))
    assert rc == 2
    assert "contains the input" in capsys.readouterr().err
    assert snapshot(tmp_path) == before
    # --out equal to the input file, and --out inside an input directory, are refused too
    assert main(prepare_argv(corpus / "x.txt", tok512, corpus / "x.txt", "--overwrite")) == 2
    assert main(["tokenizer", "report", "--tokenizer", str(tok512), "--corpus", str(corpus),
                 "--out", str(corpus / "report")]) == 2  # fmt: skip
    assert snapshot(tmp_path) == before


def test_model_expand_into_the_models_parent_is_refused(stories: Path, tok512: Path, tmp_path: Path, capsys) -> None:  # fmt: skip
    d = tmp_path / "d"
    shutil.copytree(stories, d / "mymodel")
    (d / "notes.txt").write_text("mine\n")
    (tmp_path / "p.jsonl").write_text('{"piece": "▁中国"}\n')
    assert expand_tok(tok512, tmp_path / "p.jsonl", tmp_path / "tok") == 0
    before = snapshot(d)
    argv = ["model", "expand", "--model", str(d / "mymodel"), "--tokenizer", str(tmp_path / "tok")]
    assert main([*argv, "--out", str(d), "--overwrite"]) == 2
    assert "contains the input" in capsys.readouterr().err
    assert main([*argv, "--out", str(d / "mymodel" / "sub")]) == 2  # inside the input
    assert "is inside the input" in capsys.readouterr().err
    assert snapshot(d) == before


def test_overwrite_replaces_only_langgraft_outputs(tok512: Path, pieces: Path, tmp_path: Path, capsys) -> None:  # fmt: skip
    a_file = tmp_path / "report"
    a_file.write_text("a file, not a directory\n")
    assert expand_tok(tok512, pieces, a_file, "--overwrite") == 2
    assert "is a file" in capsys.readouterr().err
    assert a_file.read_text() == "a file, not a directory\n"

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    assert expand_tok(tok512, pieces, foreign, "--overwrite") == 2
    assert "not written by langgraft" in capsys.readouterr().err
    assert [p.name for p in foreign.iterdir()] == ["keep.txt"]

    ours = tmp_path / "ours"
    assert expand_tok(tok512, pieces, ours) == 0
    assert (ours / MARKER).is_file()
    (ours / "stale.txt").write_text("from the old run")
    assert expand_tok(tok512, pieces, ours) == 2  # no --overwrite
    assert expand_tok(tok512, pieces, ours, "--overwrite") == 0
    assert not (ours / "stale.txt").exists() and (ours / "tokenizer.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign", "inputs", "ours", "report"]


def test_out_dot(tok512: Path, pieces: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    work = tmp_path / "work"
    assert expand_tok(tok512, pieces, work) == 0
    (work / "old.txt").write_text("old output")
    monkeypatch.chdir(work)
    assert expand_tok(tok512, pieces, ".") == 2  # exists, no --overwrite
    assert expand_tok(tok512, pieces, ".", "--overwrite") == 0
    os.chdir(tmp_path)  # the old directory (our cwd) was replaced
    assert (work / "tokenizer.json").is_file() and not (work / "old.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "work"]  # no ..tmp-*, .lock
    assert not [p for p in work.iterdir() if ".tmp-" in p.name]

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("x")
    os.chdir(foreign)
    assert expand_tok(tok512, pieces, ".", "--overwrite") == 2
    assert "not written by langgraft" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign", "inputs", "work"]
    assert [p.name for p in foreign.iterdir()] == ["mine.txt"]


def test_a_held_lock_refuses_a_second_run(tok512: Path, pieces: Path, tmp_path: Path, capsys) -> None:  # fmt: skip
    from langgraft.fsutil import output_lock

    out = tmp_path / "out"
    with output_lock(out):
        assert expand_tok(tok512, pieces, out) == 2
    assert f"another langgraft run (pid {os.getpid()})" in capsys.readouterr().err
    assert not out.exists()
    assert expand_tok(tok512, pieces, out) == 0  # the lock is gone with its holder
    assert not (tmp_path / ".out.lock").exists()


def test_final_rename_rechecks_the_output(tmp_path: Path) -> None:
    from langgraft.fsutil import atomic_output_dir

    out = tmp_path / "out"
    with pytest.raises(UserError, match="already exists"), atomic_output_dir(out) as tmp:
        (tmp / "result.txt").write_text("ours")
        out.mkdir()  # someone else (not taking the lock) wrote there meanwhile
        (out / "theirs.txt").write_text("theirs")
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # scratch and lock removed


def test_two_concurrent_prepare_runs_exactly_one_succeeds(shared_data: Path, tok512: Path, tmp_path: Path) -> None:  # fmt: skip
    corpus = shared_data / "corpus" / "en" / "tinyshakespeare.txt"
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "langgraft", *prepare_argv(corpus, tok512, out)]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    results = [p.communicate(timeout=240) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], results
    loser = next(err for p, (_, err) in zip(procs, results, strict=True) if p.returncode == 2)
    assert "another langgraft run" in loser or "already exists" in loser, loser
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["rows"]["packed"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_output_dirs_respect_the_umask(tok512: Path, pieces: Path, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        assert expand_tok(tok512, pieces, tmp_path / "a") == 0
        os.umask(0o077)
        assert expand_tok(tok512, pieces, tmp_path / "b") == 0
    finally:
        os.umask(old)
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "b").stat().st_mode & 0o777 == 0o700


def test_disk_full_is_one_line_and_leaves_nothing(tok512: Path, pieces: Path, tmp_path: Path, monkeypatch, capsys) -> None:  # fmt: skip
    def full(directory: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(directory / MARKER))

    monkeypatch.setattr("langgraft.fsutil._write_marker", full)
    assert expand_tok(tok512, pieces, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device; free some space" in err, err
    assert MARKER in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs"]


def test_scratch_of_a_killed_run_is_cleaned_up(tok512: Path, pieces: Path, tmp_path: Path) -> None:
    stale = tmp_path / ".out.tmp-999999-abc"
    stale.mkdir()
    (stale / "half.bin").write_bytes(b"x")
    assert expand_tok(tok512, pieces, tmp_path / "out") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "out"]


# --- generate --out: the same contract for a file ---


def gen_argv(model: Path, prompts: Path, out: Path, *extra: str) -> list[str]:
    return ["generate", "--model", str(model), "--prompts-file", str(prompts), "--out", str(out),
            "--greedy", "--max-new-tokens", "8", "--batch-size", "1", *extra]  # fmt: skip


def test_generate_out_refuses_to_overwrite(stories: Path, tmp_path: Path, capsys) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("Lily\nTom\n")
    old = tmp_path / "samples.jsonl"
    old.write_text("precious\n")
    assert main(gen_argv(stories, prompts, old)) == 2
    assert "already exists (pass --overwrite" in capsys.readouterr().err
    assert old.read_text() == "precious\n"
    assert main(gen_argv(stories, prompts, prompts, "--overwrite")) == 2  # the input itself
    assert prompts.read_text() == "Lily\nTom\n"
    assert main(gen_argv(stories, prompts, old, "--overwrite")) == 0
    assert [json.loads(x)["prompt"] for x in old.read_text().splitlines()] == ["Lily", "Tom"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.txt", "samples.jsonl"]


def test_generate_failing_mid_run_keeps_the_old_file(stories: Path, tmp_path: Path, monkeypatch) -> None:  # fmt: skip
    import langgraft.generate as gen

    prompts = tmp_path / "p.txt"
    prompts.write_text("Lily\nTom\nSue\n")
    old = tmp_path / "samples.jsonl"
    old.write_text("precious\n")
    real, calls = gen.generate_ids, []

    def fail_second(*a, **k):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == 2:
            raise UserError("simulated failure in batch 2")
        return real(*a, **k)

    monkeypatch.setattr(gen, "generate_ids", fail_second)
    assert main(gen_argv(stories, prompts, old, "--overwrite")) == 2
    assert old.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.txt", "samples.jsonl"]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_generate_killed_mid_run_keeps_the_old_file(
    stories: Path, tmp_path: Path, sig: int
) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"Once upon a time {i}\n" for i in range(400)))
    old = tmp_path / "samples.jsonl"
    old.write_text("precious\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "langgraft",
           *gen_argv(stories, prompts, old, "--overwrite", "--max-new-tokens", "64")]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            scratch = list(tmp_path.glob(".samples.jsonl.tmp-*"))
            if scratch and scratch[0].stat().st_size > 0:  # records are being written
                break
            time.sleep(0.05)
        assert proc.poll() is None, "generate finished before it could be killed"
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == (-signal.SIGKILL if sig == signal.SIGKILL else 128 + sig)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert old.read_text() == "precious\n"
    if sig == signal.SIGTERM:  # unwound: nothing left behind
        assert sorted(p.name for p in tmp_path.iterdir()) == ["p.txt", "samples.jsonl"]
    # the next run into the same --out removes the killed run's scratch file
    prompts.write_text("Lily\n")
    assert main(gen_argv(stories, prompts, old, "--overwrite")) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.txt", "samples.jsonl"]


def test_symlink_at_out_is_refused(tok512: Path, pieces: Path, tmp_path: Path, capsys) -> None:
    assert expand_tok(tok512, pieces, tmp_path / "real") == 0
    (tmp_path / "link").symlink_to(tmp_path / "real")
    before = snapshot(tmp_path / "real")
    assert expand_tok(tok512, pieces, tmp_path / "link", "--overwrite") == 2
    assert "is a symbolic link" in capsys.readouterr().err
    assert snapshot(tmp_path / "real") == before and (tmp_path / "link").is_symlink()


def test_an_output_moved_aside_by_a_killed_run_is_restored(tmp_path: Path) -> None:
    """A kill between moving the old output aside and renaming the new one into place leaves
    the old output as `.out.old-PID`; the next run into `out` puts it back."""
    from langgraft.fsutil import atomic_output_dir

    out = tmp_path / "out"
    with atomic_output_dir(out) as tmp:
        (tmp / "result.txt").write_text("first run")
    out.rename(tmp_path / ".out.old-424242")
    with pytest.raises(UserError, match="already exists"), atomic_output_dir(out):
        pass
    assert (out / "result.txt").read_text() == "first run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
