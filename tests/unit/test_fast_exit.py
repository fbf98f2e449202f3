"""`langgraft` leaves without the interpreter's teardown once a command is done (~1 s with torch
and transformers loaded), and only after everything a normal exit does for the outputs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from safetensors import safe_open

from langgraft.__main__ import KEEP_TEARDOWN, _other_threads

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def test_atexit_handlers_run_output_is_flushed_and_the_code_kept(tmp_path):
    marker, cyclic = tmp_path / "atexit-ran", tmp_path / "cyclic-flushed"
    code = (
        "import atexit, sys\n"
        "from langgraft.__main__ import leave_now\n"
        f"atexit.register(lambda: open({str(marker)!r}, 'w').write('ran'))\n"
        "class Writer:\n"  # an unclosed writer in a reference cycle: only a collection flushes it
        f"    def __del__(self): open({str(cyclic)!r}, 'w').write('flushed')\n"
        "w = Writer(); w.me = w; del w\n"
        "sys.stdout.write('x' * 200_000)\n"  # more than any pipe buffer, never flushed by hand
        "sys.stderr.write('partial line without newline')\n"
        "leave_now(3)\n"
        "raise SystemExit('not reached')\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60
    )
    assert p.returncode == 3
    assert p.stdout == "x" * 200_000
    assert p.stderr.endswith("partial line without newline")
    assert marker.read_text() == "ran"
    assert cyclic.read_text() == "flushed"


def test_a_command_leaves_early_with_its_outputs_whole(shared_data, tmp_path):
    d = shared_data / "models" / "stories260K"
    out = tmp_path / "model"
    cmd = [sys.executable, "-m", "langgraft", "-v", "model", "import-llama2c"]
    cmd += ["--checkpoint", str(d / "stories260K.bin"), "--tokenizer", str(d / "tok512.model")]
    p = subprocess.run(
        [*cmd, "--out", str(out)], capture_output=True, text=True, env=ENV, timeout=120
    )
    assert p.returncode == 0, p.stderr
    assert "exit 0 without the interpreter's teardown" in p.stderr
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert len(list(f.keys())) > 0
        for k in f.keys():
            f.get_tensor(k)  # every tensor readable to its last byte
    assert (out / "config.json").is_file() and (out / "tokenizer.model").is_file()


def test_commands_with_threads_or_process_groups_keep_the_teardown():
    assert {"train", "launch"} <= KEEP_TEARDOWN
    gate = threading.Event()
    worker = threading.Thread(target=gate.wait)  # non-daemon: a normal exit waits for it
    worker.start()
    try:
        assert worker in _other_threads()
    finally:
        gate.set()
        worker.join()
    daemon = threading.Thread(target=gate.wait, daemon=True)
    daemon.start()
    assert daemon not in _other_threads()


def test_a_profiled_run_keeps_its_profile(tmp_path):
    """`python -m cProfile -o F -m langgraft ...` writes F after the program returns."""
    prof = tmp_path / "run.prof"
    script = tmp_path / "run.py"  # torch loaded, so the fast path would apply
    script.write_text("import torch\nfrom langgraft.__main__ import cli\ncli()\n")
    args = ["eval", "mc", "--compare", str(tmp_path / "missing")]  # a quick command, exit 2
    p = subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(prof), str(script), *args],
        capture_output=True, text=True, env=ENV, timeout=120,
    )  # fmt: skip
    assert "langgraft eval: error" in p.stderr, p.stderr  # (cProfile swallows the exit code)
    assert prof.stat().st_size > 0
