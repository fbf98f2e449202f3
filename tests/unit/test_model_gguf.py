"""`langgraft model import-gguf` refusals: one line naming the file, exit 2, nothing at --out.

The files are tiny GGUFs written with the `gguf` package (a header and one small tensor); the
architecture check happens on the header, before transformers would dequantize anything. The
known-answer test on the real SmolLM2 file is in tests/integration/test_smollm2.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from langgraft.__main__ import main


def write_gguf(path: Path, arch: str, tokenizer: bool = True, name: str = "tiny") -> Path:
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(name)
    w.add_block_count(1)
    if tokenizer:
        w.add_tokenizer_model("gpt2")
        w.add_token_list(["a", "b"])
    w.add_tensor("token_embd.weight", np.zeros((2, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("langgraft model: error:"), err
    return err


def test_refuses_unsupported_architecture(tmp_path: Path, capsys) -> None:
    f = write_gguf(tmp_path / "g.gguf", "gemma2")
    err = refused(["model", "import-gguf", "--gguf", str(f), "--out", str(tmp_path / "o")], capsys)
    assert str(f) in err and "'gemma2'" in err and "not supported" in err
    assert not (tmp_path / "o").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["g.gguf"]  # no scratch, no lock left


def test_mistral_named_llama_file_is_checked_as_mistral(tmp_path: Path) -> None:
    from langgraft.model.gguf import model_type_of, read_header

    header = read_header(write_gguf(tmp_path / "m.gguf", "llama", name="Mistral 7B Instruct"))
    assert model_type_of(header) == "mistral"
    assert model_type_of(read_header(write_gguf(tmp_path / "l.gguf", "llama"))) == "llama"
    assert model_type_of(read_header(write_gguf(tmp_path / "q.gguf", "qwen3"))) == "qwen3"


@pytest.mark.parametrize("case", ["missing", "text", "truncated", "no-tokenizer"])
def test_refuses_bad_file(tmp_path: Path, capsys, case: str) -> None:
    f = tmp_path / "x.gguf"
    if case == "text":
        f.write_text("not a model\n")
    elif case == "truncated":
        good = write_gguf(tmp_path / "good.gguf", "llama").read_bytes()
        f.write_bytes(good[:40])
    elif case == "no-tokenizer":
        write_gguf(f, "llama", tokenizer=False)
    err = refused(["model", "import-gguf", "--gguf", str(f), "--out", str(tmp_path / "o")], capsys)
    assert str(f) in err
    assert not (tmp_path / "o").exists()
