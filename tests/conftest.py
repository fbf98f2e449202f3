"""Shared fixtures. Real data is read in place from ../shared/data (never copied)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data; a missing copy is a failure, not a skip (real-data tests must run)."""
    assert (SHARED_DATA / "SOURCES.md").is_file(), f"shared data not found at {SHARED_DATA}"
    return SHARED_DATA


@pytest.fixture(scope="session")
def llama2_model(shared_data: Path) -> Path:
    return shared_data / "tokenizers" / "llama2" / "tokenizer.model"


@pytest.fixture(scope="session")
def stories(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real stories260K imported once per session (read-only: copy it before changing it)."""
    from langgraft.model.llama2c import import_llama2c

    d = shared_data / "models" / "stories260K"
    out = tmp_path_factory.mktemp("stories") / "stories260K"
    out.mkdir()
    import_llama2c(d / "stories260K.bin", d / "tok512.model", out)
    return out


@pytest.fixture(scope="session")
def smollm2(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real SmolLM2-135M-Instruct, imported once per session from its GGUF (fp32 HF
    directory; read-only: copy it before changing it)."""
    from langgraft.model.gguf import import_gguf

    gguf = shared_data / "models" / "smollm2-135m" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    out = tmp_path_factory.mktemp("smollm2") / "smollm2"
    out.mkdir()
    import_gguf(gguf, out)
    return out
