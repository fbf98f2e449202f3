"""Every accepted family trains the same on 2 FSDP2 ranks and on a tensor-parallel pair as in
one process (issue 21): tiny random mistral (sliding window 6 on every layer), qwen2 (q/k/v
biases, the top layer windowed) and qwen3 (q/k RMSNorm, the top layer windowed), untied with a
514-row vocabulary (tp 2 splits it unpadded; every family reads the one tok512 tokenizer, so the sharded path builds on the meta
device and reads its shards), on real packed text whose documents are longer than the windows.
llama is the family of test_plugins.py. Losses within rel 1e-5, exports within 1e-4."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import langgraft, rows

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
FAMILIES = ("mistral", "qwen2", "qwen3")


def tiny(model_type: str, out, tok512) -> None:
    import torch
    from transformers import AutoModelForCausalLM, MistralConfig, Qwen2Config, Qwen3Config

    from langgraft.tokenizer import load_tokenizer

    tok = load_tokenizer(tok512)
    kw = dict(vocab_size=514, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
              tie_word_embeddings=False, bos_token_id=tok.bos_token_id,
              eos_token_id=tok.eos_token_id)  # fmt: skip
    if model_type == "mistral":
        cfg = MistralConfig(**kw, sliding_window=6)
    else:
        cls = Qwen2Config if model_type == "qwen2" else Qwen3Config
        cfg = cls(**kw, use_sliding_window=True, sliding_window=6, max_window_layers=1)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    tok.save_pretrained(out)


@pytest.fixture(scope="module")
def setup(shared_data, tmp_path_factory) -> dict:
    from langgraft.__main__ import main

    t = tmp_path_factory.mktemp("families")
    tok512 = shared_data / "models" / "stories260K" / "tok512.model"
    models = {f: t / f for f in FAMILIES}
    for f, d in models.items():
        tiny(f, d, tok512)
    text = (shared_data / "corpus/en/tinyshakespeare.txt").read_text()[:6000]
    speeches = [s.strip() for s in text.split("\n\n") if s.strip()]
    (t / "en.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in speeches))
    args = ["prepare", "pretrain", "--input", f"en={t / 'en.jsonl'}", "--tokenizer",
            str(models["mistral"]), "--out", str(t / "data"), "--max-length", "64",
            "--text-field", "text", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    return {"t": t, "data": t / "data", **models}


def run(setup, family: str, name: str, acc: int, nproc: int = 1, **top):
    out = setup["t"] / f"{family}-{name}"
    r = {
        "model": str(setup[family]), "tokenizer": str(setup["mistral"]), "out": str(out),
        "progress": False, "tensorboard": False,
        "checkpoint": {"save_interval": 0},
        "train": {"micro_batch_size": 2, "accumulation_steps": acc, "lr": 3e-3},
        "stages": [{"name": "s", "data": [{"path": str(setup["data"])}], "steps": 3}], **top,
    }  # fmt: skip
    cfg = setup["t"] / f"{family}-{name}.yaml"
    cfg.write_text(yaml.safe_dump(r))
    p = langgraft("train", "--config", str(cfg), nproc=nproc)
    assert p.returncode == 0, p.stderr[-3000:]
    return out


def weights(out):
    from safetensors.torch import load_file

    return load_file(str(out / "export" / "stage-0-s" / "model.safetensors"))


@pytest.mark.parametrize("family", FAMILIES)
def test_family_fsdp2_and_tp_equal_one_process(setup, family) -> None:
    one = run(setup, family, "one", acc=4)
    for name, top in (("fsdp2", {"plugin": "zero2"}), ("tp2", {"plugin": "3d", "tp": 2})):
        acc = 2 if name == "fsdp2" else 4  # tp ranks share their rows
        out = run(setup, family, name, acc=acc, nproc=2, **top)
        a, b = rows(one), rows(out)
        assert [r["step"] for r in b] == [1, 2, 3], (family, name)
        for ra, rb in zip(a, b, strict=True):
            assert rb["tokens_seen"] == ra["tokens_seen"]
            assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5), (family, name)
            assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=1e-4), (family, name)
        wa, wb = weights(one), weights(out)
        assert wa.keys() == wb.keys()
        for k in wa:
            assert float((wb[k] - wa[k]).abs().max()) < 1e-4, (family, name, k)
