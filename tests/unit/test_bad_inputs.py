"""The bad-input contract, command by command: given a missing, truncated or corrupt input, every
non-training command exits 2 with one error line naming the file (and line), leaves nothing at
--out (no scratch directory either) and changes no input or unrelated file.

Each case builds its bad input in a fresh workspace (copies of the real stories260K model and
tok512 tokenizer from ../shared/data), runs the CLI in process, and compares a hash of every file
in the workspace before and after.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from langgraft.__main__ import main

pytestmark = pytest.mark.timeout(300)

Setup = Callable[[Path, dict[str, Path]], tuple[list[str], str]]


@pytest.fixture(scope="module")
def assets(stories: Path, shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Real inputs, read-only: the imported model, its tok512 and an expanded tokenizer dir."""
    root = tmp_path_factory.mktemp("assets")
    tok512 = shared_data / "models" / "stories260K" / "tok512.model"
    (root / "pieces.jsonl").write_text('{"piece": "▁中国"}\n{"piece": "人工智能"}\n', "utf-8")
    expanded = root / "tok_zh"
    argv = ["tokenizer", "expand", "--source", str(tok512), "--pieces", str(root / "pieces.jsonl")]
    assert main([*argv, "--out", str(expanded)]) == 0
    return {
        "model": stories,
        "tok512": tok512,
        "tok_zh": expanded,
        "cmmlu": shared_data / "eval" / "cmmlu",
        "text": shared_data / "corpus" / "en" / "tinyshakespeare.txt",
    }


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        out[p.relative_to(root).as_posix()] = (digest, st.st_mode)
    return out


def model_copy(ws: Path, a: dict, name: str = "model") -> Path:
    d = ws / name
    shutil.copytree(a["model"], d)
    return d


def edit_config(model: Path, **changes: object) -> None:
    cfg = json.loads((model / "config.json").read_text())
    cfg.update(changes)
    (model / "config.json").write_text(json.dumps(cfg))


def tok_copy(ws: Path, a: dict) -> Path:
    d = ws / "tok"
    shutil.copytree(a["tok_zh"], d)
    return d


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def pickled_weights(model: Path) -> None:
    """Weights as a pickle holding a non-tensor object: weights_only loading must refuse it (the
    object is harmless, so a test run never executes anything even if the loader were unsafe)."""
    import argparse

    import torch

    (model / "model.safetensors").unlink()
    torch.save({"payload": argparse.Namespace(x=1)}, model / "pytorch_model.bin")


DEEP = "[" * 100_000 + "]" * 100_000


# --- the case table: name -> setup(ws, assets) -> (argv, fragment the one error line holds) ---


def te_gz_not_gzip(ws: Path, a: dict) -> tuple[list[str], str]:
    (ws / "c.txt.gz").write_bytes(b"plain text, not gzip\n" * 10)
    return ["tokenizer", "expand", "--source", str(a["tok512"]), "--learn-from",
            str(ws / "c.txt.gz"), "--target-size", "600"], "c.txt.gz: not a valid gzip"  # fmt: skip


def te_gz_truncated(ws: Path, a: dict) -> tuple[list[str], str]:
    packed = gzip.compress(a["text"].read_bytes()[:50_000])
    (ws / "c.txt.gz").write_bytes(packed[: len(packed) // 2])
    return ["tokenizer", "expand", "--source", str(a["tok512"]), "--learn-from",
            str(ws / "c.txt.gz"), "--target-size", "600"], "c.txt.gz: not a valid gzip"  # fmt: skip


def te_pieces_surrogate(ws: Path, a: dict) -> tuple[list[str], str]:
    (ws / "p.jsonl").write_text('{"piece": "ok"}\n{"piece": "a\\ud800"}\n')
    return ["tokenizer", "expand", "--source", str(a["tok512"]), "--pieces",
            str(ws / "p.jsonl")], "p.jsonl:2: lone surrogate"  # fmt: skip


def te_pieces_gz_not_gzip(ws: Path, a: dict) -> tuple[list[str], str]:
    (ws / "p.jsonl.gz").write_text('{"piece": "ok"}\n')
    return ["tokenizer", "expand", "--source", str(a["tok512"]), "--pieces",
            str(ws / "p.jsonl.gz")], "p.jsonl.gz: not a valid gzip"  # fmt: skip


def te_source_corrupt(ws: Path, a: dict) -> tuple[list[str], str]:
    (ws / "tokenizer.model").write_bytes(b"\x00\xff garbage" * 50)
    (ws / "p.jsonl").write_text('{"piece": "ok"}\n')
    return ["tokenizer", "expand", "--source", str(ws / "tokenizer.model"), "--pieces",
            str(ws / "p.jsonl")], "tokenizer.model: not a SentencePiece model"  # fmt: skip


def tr_gz_not_gzip(ws: Path, a: dict) -> tuple[list[str], str]:
    (ws / "c.jsonl.gz").write_text('{"text": "hello"}\n')
    return ["tokenizer", "report", "--tokenizer", str(a["tok512"]), "--corpus",
            str(ws / "c.jsonl.gz")], "c.jsonl.gz: not a valid gzip"  # fmt: skip


def tr_nested(ws: Path, a: dict) -> tuple[list[str], str]:
    (ws / "c.jsonl").write_text('{"text": "fine"}\n' + DEEP + "\n")
    return ["tokenizer", "report", "--tokenizer", str(a["tok512"]), "--corpus",
            str(ws / "c.jsonl")], "c.jsonl:2: JSON nested too deeply"  # fmt: skip


def tr_nested_json_file(ws: Path, a: dict) -> tuple[list[str], str]:
    (ws / "c.json").write_text(DEEP)
    return ["tokenizer", "report", "--tokenizer", str(a["tok512"]), "--corpus",
            str(ws / "c.json")], "c.json: JSON nested too deeply"  # fmt: skip


def tr_surrogate(ws: Path, a: dict) -> tuple[list[str], str]:
    (ws / "c.jsonl").write_text('{"text": "fine"}\n{"text": "bad \\udc00 text"}\n')
    return ["tokenizer", "report", "--tokenizer", str(a["tok512"]), "--corpus",
            str(ws / "c.jsonl")], "c.jsonl:2: lone surrogate"  # fmt: skip


def tr_broken_tokenizer_json(ws: Path, a: dict) -> tuple[list[str], str]:
    tok = tok_copy(ws, a)
    truncate(tok / "tokenizer.json")
    return ["tokenizer", "report", "--tokenizer", str(tok), "--corpus", str(a["text"]),
            "--max-samples", "5"], "tok/tokenizer.json"  # fmt: skip


def tr_max_samples_negative(ws: Path, a: dict) -> tuple[list[str], str]:
    """-1 used to read one sample (a silent change of meaning)."""
    return ["tokenizer", "report", "--tokenizer", str(a["tok512"]), "--corpus", str(a["text"]),
            "--max-samples", "-1"], "--max-samples -1: must be >= 1"  # fmt: skip


def pp_broken_tokenizer_json(ws: Path, a: dict) -> tuple[list[str], str]:
    tok = tok_copy(ws, a)
    (tok / "tokenizer.json").write_text('{"version": "1.0", "model": 17}')
    (ws / "c.txt").write_text("Once upon a time.\n")
    return ["prepare", "pretrain", "--input", str(ws / "c.txt"), "--tokenizer", str(tok),
            "--max-length", "64"], "tok/tokenizer.json"  # fmt: skip


def pp_gz_not_gzip(ws: Path, a: dict) -> tuple[list[str], str]:
    (ws / "c.txt.gz").write_text("Once upon a time.\n")
    return ["prepare", "pretrain", "--input", str(ws / "c.txt.gz"), "--tokenizer",
            str(a["tok512"]), "--max-length", "64"], "c.txt.gz"  # fmt: skip


def pc_not_an_object(ws: Path, a: dict) -> tuple[list[str], str]:
    (ws / "chat.jsonl").write_text("[1, 2]\n")
    return ["prepare", "chat", "--input", str(ws / "chat.jsonl"), "--tokenizer",
            str(a["tok512"]), "--max-length", "64"], "chat.jsonl:1"  # fmt: skip


def mi_truncated(ws: Path, a: dict) -> tuple[list[str], str]:
    src = Path(a["tok512"]).parent / "stories260K.bin"
    (ws / "s.bin").write_bytes(src.read_bytes()[:5000])
    return ["model", "import-llama2c", "--checkpoint", str(ws / "s.bin"), "--tokenizer",
            str(a["tok512"])], "s.bin"  # fmt: skip


def _expand(ws: Path, a: dict, model: Path, tok: Path | None = None) -> list[str]:
    return ["model", "expand", "--model", str(model), "--tokenizer", str(tok or a["tok_zh"])]


def me_config_not_json(ws: Path, a: dict) -> tuple[list[str], str]:
    m = model_copy(ws, a)
    (m / "config.json").write_text('{"hidden_size": 64,\n  oops}')
    return _expand(ws, a, m), "model/config.json:2: invalid JSON"


def me_config_array(ws: Path, a: dict) -> tuple[list[str], str]:
    m = model_copy(ws, a)
    (m / "config.json").write_text("[1, 2, 3]")
    return _expand(ws, a, m), "model/config.json: expected a JSON object"


def me_config_more_layers(ws: Path, a: dict) -> tuple[list[str], str]:
    m = model_copy(ws, a)
    edit_config(m, num_hidden_layers=8)
    return _expand(ws, a, m), "config.json says 8 layers, the weights hold 5"


def me_truncated_weights(ws: Path, a: dict) -> tuple[list[str], str]:
    m = model_copy(ws, a)
    truncate(m / "model.safetensors")
    return _expand(ws, a, m), "model.safetensors: truncated safetensors file"


def me_empty_weights(ws: Path, a: dict) -> tuple[list[str], str]:
    m = model_copy(ws, a)
    (m / "model.safetensors").write_bytes(b"")
    return _expand(ws, a, m), "model.safetensors: not a safetensors file"


def me_oversized_header(ws: Path, a: dict) -> tuple[list[str], str]:
    m = model_copy(ws, a)
    data = (m / "model.safetensors").read_bytes()
    (m / "model.safetensors").write_bytes(struct.pack("<Q", 2**60) + data[8:])
    return _expand(ws, a, m), "model.safetensors: not a safetensors file (header length"


def me_corrupt_tokenizer_json(ws: Path, a: dict) -> tuple[list[str], str]:
    m, tok = model_copy(ws, a), tok_copy(ws, a)
    truncate(tok / "tokenizer.json", 0.3)
    return _expand(ws, a, m, tok), "tok/tokenizer.json"


def me_tokenizer_json_disagrees(ws: Path, a: dict) -> tuple[list[str], str]:
    """A valid tokenizer.json that is not the tokenizer.model beside it (the 512-piece one)."""
    m, tok = model_copy(ws, a), tok_copy(ws, a)
    shutil.copyfile(m / "tokenizer.json", tok / "tokenizer.json")
    return _expand(ws, a, m, tok), "tok/tokenizer.json: has 512 tokens"


def me_pad_huge(ws: Path, a: dict) -> tuple[list[str], str]:
    """Used to try to allocate 25 TB of padding rows."""
    argv = [*_expand(ws, a, a["model"]), "--pad-to-multiple-of", "100000000000"]
    return argv, "--pad-to-multiple-of must be between 1 and 65536"


def _mc(model: Path, a: dict) -> list[str]:
    return ["eval", "mc", "--task", "cmmlu", "--data", str(a["cmmlu"]), "--model", str(model),
            "--limit", "1", "--shots", "0", "--subjects", "anatomy"]  # fmt: skip


def em_truncated_weights(ws: Path, a: dict) -> tuple[list[str], str]:
    m = model_copy(ws, a)
    truncate(m / "model.safetensors", 0.9)
    return _mc(m, a), "model.safetensors: truncated safetensors file"


def em_config_array(ws: Path, a: dict) -> tuple[list[str], str]:
    m = model_copy(ws, a)
    (m / "config.json").write_text("[]")
    return _mc(m, a), "model/config.json: expected a JSON object"


def em_auto_map(ws: Path, a: dict) -> tuple[list[str], str]:
    m = model_copy(ws, a)
    edit_config(m, auto_map={"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"})
    return _mc(m, a), "--trust-remote-code"


def em_pickle(ws: Path, a: dict) -> tuple[list[str], str]:
    m = model_copy(ws, a)
    pickled_weights(m)
    return _mc(m, a), "refusing to unpickle"


def em_no_weights(ws: Path, a: dict) -> tuple[list[str], str]:
    m = model_copy(ws, a)
    (m / "model.safetensors").unlink()
    return _mc(m, a), "model: no weights file"


def et_config_shapes(ws: Path, a: dict) -> tuple[list[str], str]:
    m = model_copy(ws, a)
    edit_config(m, intermediate_size=128)
    return ["eval", "text", "--model", str(m), "--data", str(a["text"]), "--max-chars",
            "500"], "mlp.gate_proj.weight has shape [172, 64]"  # fmt: skip


def _gen(model: Path, *extra: str) -> list[str]:
    return ["generate", "--model", str(model), "--max-new-tokens", "4", *extra]


def g_temperature_zero(ws: Path, a: dict) -> tuple[list[str], str]:
    return _gen(a["model"], "--prompt", "Lily", "--temperature", "0"), "use --greedy"


def g_temperature_negative(ws: Path, a: dict) -> tuple[list[str], str]:
    return _gen(a["model"], "--prompt", "Lily", "--temperature", "-0.5"), "use --greedy"


def g_prompt_surrogate(ws: Path, a: dict) -> tuple[list[str], str]:
    return _gen(a["model"], "--prompt", "ok", "a\ud800"), "--prompt 2: not valid"


def g_prompts_file_surrogate(ws: Path, a: dict) -> tuple[list[str], str]:
    (ws / "p.jsonl").write_text('{"prompt": "ok"}\n"x\\ud83d"\n')
    return _gen(a["model"], "--prompts-file", str(ws / "p.jsonl")), "p.jsonl:2: not valid Unicode"


def g_prompts_file_not_utf8(ws: Path, a: dict) -> tuple[list[str], str]:
    (ws / "p.txt").write_bytes(b"fine\nbad \xff\n")
    return _gen(a["model"], "--prompts-file", str(ws / "p.txt")), "p.txt:2: not valid UTF-8"


def g_config_more_layers(ws: Path, a: dict) -> tuple[list[str], str]:
    m = model_copy(ws, a)
    edit_config(m, num_hidden_layers=8)
    return _gen(m, "--prompt", "Lily"), "config.json says 8 layers, the weights hold 5"


def g_config_fewer_layers(ws: Path, a: dict) -> tuple[list[str], str]:
    m = model_copy(ws, a)
    edit_config(m, num_hidden_layers=3)
    return _gen(m, "--prompt", "Lily"), "config.json says 3 layers, the weights hold 5"


def g_broken_tokenizer_json(ws: Path, a: dict) -> tuple[list[str], str]:
    m = model_copy(ws, a)
    (m / "tokenizer.json").write_bytes(b"\xff\xfe not json")
    return _gen(m, "--prompt", "Lily"), "model/tokenizer.json"


def g_pickle(ws: Path, a: dict) -> tuple[list[str], str]:
    m = model_copy(ws, a)
    pickled_weights(m)
    return _gen(m, "--prompt", "Lily"), "pytorch_model.bin: refusing to unpickle"


def g_auto_map(ws: Path, a: dict) -> tuple[list[str], str]:
    m = model_copy(ws, a)
    edit_config(m, auto_map={"AutoConfig": "configuration_x.XConfig"})
    return _gen(m, "--prompt", "Lily"), "--trust-remote-code"


def _chat(model: Path, *extra: str) -> list[str]:
    return ["chat", "--model", str(model), "--template", "llama2", "--greedy", *extra]


def c_max_new_tokens_zero(ws: Path, a: dict) -> tuple[list[str], str]:
    return _chat(a["model"], "--max-new-tokens", "0"), "--max-new-tokens 0: must be >= 1"


def c_max_new_tokens_negative(ws: Path, a: dict) -> tuple[list[str], str]:
    return _chat(a["model"], "--max-new-tokens", "-3"), "--max-new-tokens -3: must be >= 1"


def c_stdin_not_utf8(ws: Path, a: dict) -> tuple[list[str], str]:
    return _chat(a["model"], "--max-new-tokens", "2"), "stdin:2: not valid UTF-8"


def c_stdin_surrogate(ws: Path, a: dict) -> tuple[list[str], str]:
    return _chat(a["model"], "--max-new-tokens", "2"), "input line 1: not valid Unicode"


def c_truncated_weights(ws: Path, a: dict) -> tuple[list[str], str]:
    m = model_copy(ws, a)
    truncate(m / "model.safetensors", 0.99)
    return _chat(m), "model.safetensors: truncated"


def g_device_invalid(ws: Path, a: dict) -> tuple[list[str], str]:
    return _gen(a["model"], "--prompt", "Lily", "--device", "tpu9"), "--device tpu9: not a device"


def g_generation_config_broken(ws: Path, a: dict) -> tuple[list[str], str]:
    """transformers ignores a broken generation_config.json (and its stop ids) silently."""
    m = model_copy(ws, a)
    (m / "generation_config.json").write_text("{broken")
    return _gen(m, "--prompt", "Lily"), "model/generation_config.json:1: invalid JSON"


def g_tokenizer_config_broken(ws: Path, a: dict) -> tuple[list[str], str]:
    m = model_copy(ws, a)
    (m / "tokenizer_config.json").write_text("{broken")
    return _gen(m, "--prompt", "Lily"), "model/tokenizer_config.json:1: invalid JSON"


def me_index_broken(ws: Path, a: dict) -> tuple[list[str], str]:
    m = model_copy(ws, a)
    (m / "model.safetensors").rename(m / "model-00001-of-00001.safetensors")
    (m / "model.safetensors.index.json").write_text("{oops")
    return _expand(ws, a, m), "model/model.safetensors.index.json:1: invalid JSON"


def c_meta_not_utf8(ws: Path, a: dict) -> tuple[list[str], str]:
    m = model_copy(ws, a)
    (m / "langgraft.json").write_bytes(b"\xff\xfe{}")
    return ["chat", "--model", str(m)], "model/langgraft.json: not UTF-8"


def c_manifest_broken(ws: Path, a: dict) -> tuple[list[str], str]:
    (ws / "ds").mkdir()
    (ws / "ds" / "manifest.json").write_text('{"template": ')
    return ["chat", "--model", str(a["model"]), "--dataset", str(ws / "ds")], "ds/manifest.json:1"


def os_out_under_a_file(ws: Path, a: dict) -> tuple[list[str], str]:
    """--out below a plain file: the OSError becomes one line naming the path."""
    (ws / "afile").write_text("mine")
    (ws / "p.jsonl").write_text('{"piece": "ok"}\n')
    return ["tokenizer", "expand", "--source", str(a["tok512"]), "--pieces", str(ws / "p.jsonl"),
            "--out", str(ws / "afile" / "out")], "afile"  # fmt: skip


CASES: dict[str, Setup] = {f.__name__: f for f in [
    te_gz_not_gzip, te_gz_truncated, te_pieces_surrogate, te_pieces_gz_not_gzip,
    te_source_corrupt, tr_gz_not_gzip, tr_nested, tr_nested_json_file, tr_surrogate,
    tr_broken_tokenizer_json, tr_max_samples_negative, pp_broken_tokenizer_json, pp_gz_not_gzip, pc_not_an_object,
    mi_truncated, me_config_not_json, me_config_array, me_config_more_layers,
    me_truncated_weights, me_empty_weights, me_oversized_header, me_corrupt_tokenizer_json,
    me_tokenizer_json_disagrees, em_truncated_weights, em_config_array, em_auto_map, em_pickle,
    em_no_weights, et_config_shapes, g_temperature_zero, g_temperature_negative,
    g_prompt_surrogate, g_prompts_file_surrogate, g_prompts_file_not_utf8, g_config_more_layers,
    g_config_fewer_layers, g_broken_tokenizer_json, g_pickle, g_auto_map, c_max_new_tokens_zero,
    c_max_new_tokens_negative, c_stdin_not_utf8, c_stdin_surrogate, c_truncated_weights,
    g_generation_config_broken, g_tokenizer_config_broken, me_index_broken, c_meta_not_utf8,
    c_manifest_broken, me_pad_huge, g_device_invalid, os_out_under_a_file,
]}  # fmt: skip
STDIN = {
    "c_stdin_not_utf8": lambda: io.TextIOWrapper(io.BytesIO(b"hello\nbad \xff\xfe\n")),
    "c_stdin_surrogate": lambda: io.StringIO("x\udcff\n"),
}


def assert_one_error_line(err: str, fragment: str) -> None:
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("langgraft ")]
    assert len(errors) == 1 and ": error: " in errors[0], err
    assert err.rstrip("\n").splitlines()[-1] == errors[0], err  # the last thing printed
    assert fragment in errors[0], (fragment, errors[0])


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_and_touches_nothing(
    name: str, assets: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "thesis.md").write_text("unrelated work of the user\n")
    argv, fragment = CASES[name](ws, assets)
    out = ws / "out"
    if argv[0] != "chat" and "--out" not in argv:
        argv += ["--out", str(out)]
    if name in STDIN:
        monkeypatch.setattr(sys, "stdin", STDIN[name]())
    before = snapshot(ws)
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert_one_error_line(err, fragment)
    assert not out.exists() and not out.is_symlink()
    assert not [p.name for p in ws.iterdir() if p.name.startswith(".out.")]  # no scratch, lock
    assert snapshot(ws) == before  # every input and unrelated file as it was
