"""The front half of the recipe on a real pretrained model: SmolLM2-135M-Instruct (LLaMA
architecture, tied embeddings, GPT-2-style byte-level BPE of 49,152 tokens) from its 4-bit GGUF.

Oracles: transformers' own GGUF load of the same file (greedy text, token ids), llama.cpp's
"smollm" pre-tokenizer split (digits alone, then GPT-2's regex) re-implemented with `regex`, the
original tokenizer's ids on every line of real English text, the model's own logits before
`model expand`, and for training one process against two FSDP2 ranks on the same global batch.
The model forwards at ~140 tokens/s and trains at ~40 tokens/s on one CPU thread: every text
here is short, and training runs 2 + 2 steps of 2 rows of <= 64 tokens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from langgraft.__main__ import main

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
N_OLD = 49152
N_NEW = 4000
PROMPTS = ["Once upon a time, there was a little girl named", "The three primary colors are"]
# OpenAI's GPT-2 encoder.py pattern; llama.cpp's "smollm" pre-tokenizer runs it after
# splitting off every digit (llama-vocab.cpp, LLAMA_VOCAB_PRE_TYPE_SMOLLM).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def gguf_file(shared_data: Path) -> Path:
    return shared_data / "models" / "smollm2-135m" / GGUF_NAME


@pytest.fixture(scope="module")
def smollm(tmp_path_factory: pytest.TempPathFactory, gguf_file: Path) -> Path:
    out = tmp_path_factory.mktemp("smollm") / "smollm2"
    assert main(["model", "import-gguf", "--gguf", str(gguf_file), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def tok_zh(tmp_path_factory: pytest.TempPathFactory, shared_data: Path, smollm: Path) -> Path:
    """SmolLM2's tokenizer + 4,000 merges learned from the modern corpus (last 10% held out)."""
    out = tmp_path_factory.mktemp("tokzh") / "tok"
    rc = main(["tokenizer", "expand", "--source", str(smollm),
               "--learn-from", *map(str, sorted((shared_data / "corpus" / "zh-modern").glob("*.jsonl"))),
               "--hold-out", "0.1", "--min-count", "3", "--no-measure-keep-cost",
               "--target-size", str(N_OLD + N_NEW), "--out", str(out)])  # fmt: skip
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def smollm_zh(tmp_path_factory: pytest.TempPathFactory, smollm: Path, tok_zh: Path) -> Path:
    out = tmp_path_factory.mktemp("smollmzh") / "smollm2-zh"
    rc = main(["model", "expand", "--model", str(smollm), "--tokenizer", str(tok_zh),
               "--out", str(out)])  # fmt: skip
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def english_lines(shared_data: Path) -> list[str]:
    return (shared_data / "corpus" / "en" / "wikitext-2-valid.txt").read_text().split("\n")


@pytest.fixture(scope="module")
def chinese_heldout(shared_data: Path) -> list[str]:
    """Lines with Chinese of the corpus's last document (inside the --hold-out 0.1 tail)."""
    f = sorted((shared_data / "corpus" / "zh-modern").glob("*.jsonl"))[-1]
    last = json.loads(f.read_text(encoding="utf-8").splitlines()[-1])["text"]
    return [x for x in last.split("\n") if any("\u4e00" <= c <= "\u9fff" for c in x)]


def greedy(model, tok, prompt: str, n: int = 20) -> tuple[list[int], str]:
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False)[0, ids.shape[1] :].tolist()
    return out, tok.decode(out)


def llama_cpp_smollm_ids(tok, text: str) -> list[int]:
    """llama.cpp's segmentation: "\\p{N}" alone, then GPT-2's regex, then BPE per piece."""
    import regex
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    spell = bytes_to_unicode()
    bpe = tok.backend_tokenizer.model
    ids: list[int] = []
    for chunk in regex.split(r"(\p{N})", text):
        for piece in regex.findall(GPT2_PATTERN, chunk):
            ids += [t.id for t in bpe.tokenize("".join(spell[b] for b in piece.encode()))]
    return ids


def test_import_matches_transformers_gguf_load(smollm, gguf_file, english_lines, chinese_heldout):
    cfg = json.loads((smollm / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["tie_word_embeddings"] is True
    assert cfg["model_type"] == "llama" and cfg["vocab_size"] == N_OLD
    mask = os.umask(0)
    os.umask(mask)
    assert (smollm / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (smollm / "tokenizer.json").is_file() and (smollm / "chat_template.jinja").is_file()

    ref_tok = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=GGUF_NAME)
    tok = AutoTokenizer.from_pretrained(smollm)
    assert (tok.bos_token, tok.eos_token, len(tok)) == (ref_tok.bos_token, ref_tok.eos_token, N_OLD)
    assert tok.chat_template == ref_tok.chat_template
    lines = [x for x in english_lines[1:40] if x.strip()][:8] + chinese_heldout[:8]
    for line in lines:
        assert tok(line).input_ids == ref_tok(line).input_ids, line[:60]
    # transformers' GGUF rebuild has no "smollm" digit split; ours follows llama.cpp's.
    for text in ["a  2", "In 1999  ,  42 people\n  7 left", "价格是  300 元", "x\t\t9.75"]:
        assert tok(text).input_ids == llama_cpp_smollm_ids(tok, text), text

    ref = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=GGUF_NAME).eval()
    ref_out = [greedy(ref, ref_tok, p) for p in PROMPTS]
    del ref
    ours = AutoModelForCausalLM.from_pretrained(smollm).eval()
    assert ours.lm_head.weight.data_ptr() == ours.model.embed_tokens.weight.data_ptr()
    for p, theirs in zip(PROMPTS, ref_out, strict=True):
        mine = greedy(ours, tok, p)
        print(f"\n{p!r} -> {mine[1]!r}")
        assert mine == theirs and len(mine[0]) == 20


def test_bytelevel_expand_keeps_english_ids(smollm, tok_zh, english_lines, chinese_heldout, capsys):
    from tokenizers import Tokenizer

    old = Tokenizer.from_file(str(smollm / "tokenizer.json"))
    new = Tokenizer.from_file(str(tok_zh / "tokenizer.json"))
    assert new.get_vocab_size() == N_OLD + N_NEW
    encode = lambda t, xs: [e.ids for e in t.encode_batch(xs, add_special_tokens=False)]  # noqa: E731
    a, b = encode(old, english_lines), encode(new, english_lines)
    diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    assert not diff, (
        f"{len(diff)} of {len(english_lines)} English lines differ: {english_lines[diff[0]][:80]!r}"
    )
    # Chinese: fewer tokens per character, and decode(encode) is the text.
    zh = chinese_heldout
    chars = sum(map(len, zh))
    before, after = sum(map(len, encode(old, zh))), sum(map(len, encode(new, zh)))
    assert new.decode_batch(encode(new, zh)) == zh
    held = json.loads((tok_zh / "expansion.json").read_text())["held_out"]
    with capsys.disabled():
        print(f"\nEnglish: {len(english_lines)} lines of wikitext-2-valid, ids unchanged")
        print(
            f"zh-modern held-out 10% ({held['samples']} samples, {held['characters']} chars): "
            f"{held['tokens_per_char_source']:.3f} -> {held['tokens_per_char']:.3f} tokens/char"
        )
        print(f"last document's Chinese lines ({chars} chars): {before / chars:.3f} -> "
              f"{after / chars:.3f} tokens/char")  # fmt: skip
    assert held["tokens_per_char"] < 0.7 * held["tokens_per_char_source"]
    assert after < 0.8 * before
    # The tokenizer directory keeps what the model's chat use needs.
    t = AutoTokenizer.from_pretrained(tok_zh)
    assert (t.bos_token, t.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert t.chat_template == AutoTokenizer.from_pretrained(smollm).chat_template


def test_model_expand_keeps_old_logits(smollm, smollm_zh):
    text = "The quick brown fox jumps over the lazy dog, and then"
    base = AutoModelForCausalLM.from_pretrained(smollm).eval()
    tok = AutoTokenizer.from_pretrained(smollm)
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        old = base(ids).logits
    del base
    zh = AutoModelForCausalLM.from_pretrained(smollm_zh).eval()
    assert zh.config.tie_word_embeddings and zh.config.vocab_size == N_OLD + N_NEW
    assert zh.lm_head.weight.data_ptr() == zh.model.embed_tokens.weight.data_ptr()
    assert AutoTokenizer.from_pretrained(smollm_zh)(text).input_ids == ids[0].tolist()
    template = (smollm / "chat_template.jinja").read_text()
    assert (smollm_zh / "chat_template.jinja").read_text() == template
    with torch.no_grad():
        new = zh(ids).logits
    assert new.shape[-1] == N_OLD + N_NEW
    err = (new[..., :N_OLD] - old).abs().max().item()
    print(f"\nold-vocabulary logits, max |diff| = {err:.2e}")
    assert err <= 1e-4
    assert torch.equal(new[..., :N_OLD].argmax(-1), old.argmax(-1))


def test_eval_text_heldout(tmp_path, smollm, smollm_zh, tok_zh, english_lines, chinese_heldout):
    en = tmp_path / "en.txt"
    en.write_text("\n".join(english_lines[8:10]), encoding="utf-8")  # ~650 chars
    zh = tmp_path / "zh.txt"
    zh.write_text("\n".join(chinese_heldout)[:300], encoding="utf-8")
    res = {}
    for name, model in [("base", smollm), ("zh", smollm_zh)]:
        out = tmp_path / f"eval-{name}"
        rc = main(["eval", "text", "--model", str(model), "--data", str(en), str(zh),
                   "--max-length", "512", "--batch-size", "4", "--device", "cpu",
                   "--out", str(out)])  # fmt: skip
        assert rc == 0
        rows = json.loads((out / "text_results.json").read_text())["corpora"]
        res[name] = {r["name"]: r for r in rows}
    for name, r in res.items():
        print(f"\n{name}: " + ", ".join(
            f"{c} {r[c]['bits_per_char']:.3f} bits/char ({r[c]['tokens']} tokens)" for c in r
        ))  # fmt: skip
    base, new = res["base"], res["zh"]
    assert base["en.txt"]["bits_per_char"] < 2.0  # a real English model (uniform: ~3.5 here)
    # Same English tokens, same old logits; the new rows only take some probability mass.
    assert base["en.txt"]["tokens"] == new["en.txt"]["tokens"]
    assert base["en.txt"]["bits_per_char"] <= new["en.txt"]["bits_per_char"] + 1e-6
    assert new["en.txt"]["bits_per_char"] < 1.1 * base["en.txt"]["bits_per_char"]
    assert new["zh.txt"]["tokens"] < base["zh.txt"]["tokens"]


def test_generate_from_imported_model(tmp_path, smollm):
    out = tmp_path / "gen.jsonl"
    rc = main(["generate", "--model", str(smollm), "--prompt", PROMPTS[0], "--greedy",
               "--max-new-tokens", "20", "--device", "cpu", "--out", str(out)])  # fmt: skip
    assert rc == 0
    (rec,) = [json.loads(x) for x in out.read_text().splitlines()]
    model = AutoModelForCausalLM.from_pretrained(smollm).eval()
    ids, text = greedy(model, AutoTokenizer.from_pretrained(smollm), PROMPTS[0])
    assert rec["token_ids"] == ids and rec["completion"] == text
    assert rec["completion_tokens"] == 20 and rec["finish_reason"] == "length"


def test_self_replay_tiny_budget(tmp_path, smollm):
    out = tmp_path / "replay"
    rc = main(["data", "self-replay", "--model", str(smollm), "--out", str(out),
               "--tokens", "64", "--max-new-tokens", "24", "--batch-size", "4",
               "--heldout-fraction", "0.5", "--device", "cpu", "--no-progress"])  # fmt: skip
    assert rc == 0
    info = json.loads((out / "self_replay.json").read_text())
    assert info["tokens"] == 64
    rows = {
        f: [json.loads(x) for x in (out / f).read_text().splitlines()]
        for f in ("train.jsonl", "heldout.jsonl")
    }
    assert sum(info["files"][f]["samples"] for f in rows) == sum(map(len, rows.values())) >= 3
    text = "".join(r["target"] for rs in rows.values() for r in rs)
    assert sum(info["files"][f]["chars"] for f in rows) == len(text)
    tok = AutoTokenizer.from_pretrained(smollm)
    n = len(tok(text, add_special_tokens=False).input_ids)
    print(f"\nself-replay: {len(text)} chars, {n} tokens re-encoded: {text[:120]!r}")
    assert abs(n - 64) <= 8  # re-encoding the decoded samples may merge across sample joins
    assert sum(c.isascii() for c in text) > 0.9 * len(text)  # an English model's own text


# ---------------------------------------------------------------- training

ROOT = Path(__file__).resolve().parents[2]
TRAIN_TIMEOUT_S = 300  # per `langgraft train` process tree; a hang fails instead of stalling CI


def langgraft_train(config: Path, nproc: int = 1) -> subprocess.CompletedProcess:
    """`langgraft train --config` in one process, or under torchrun with `nproc` CPU ranks
    (gloo over loopback, one thread per rank), like tests/distributed/conftest.py."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    launcher = [sys.executable, "-m", "langgraft"]
    if nproc > 1:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                    str(nproc), "--master_addr", "127.0.0.1", "--master_port", str(port),
                    "-m", "langgraft"]  # fmt: skip
    return subprocess.run([*launcher, "train", "--config", str(config)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=TRAIN_TIMEOUT_S)  # fmt: skip


@pytest.fixture(scope="module")
def smollm_data(tmp_path_factory, shared_data: Path, smollm_zh: Path) -> Path:
    """~1.6k chars of wikitext-2 English + 3 LibreOffice help pages (zh-modern, ~8.8k chars),
    packed to 64 tokens by the expanded tokenizer (about 60 rows)."""
    t = tmp_path_factory.mktemp("smollmdata")
    en = (shared_data / "corpus" / "en" / "wikitext-2-valid.txt").read_text(encoding="utf-8")
    (t / "en.txt").write_text(en[: en.index("\n", 1500) + 1], encoding="utf-8")
    pages = (shared_data / "corpus" / "zh-modern" / "libreoffice-help-zh-cn.jsonl").read_text(
        encoding="utf-8"
    )
    (t / "zh.jsonl").write_text("\n".join(pages.splitlines()[1:4]) + "\n", encoding="utf-8")
    rc = main(["prepare", "pretrain", "--input", f"en={t / 'en.txt'}",
               f"zh-modern={t / 'zh.jsonl'}", "--text-field", "text", "--tokenizer",
               str(smollm_zh), "--out", str(t / "data"), "--max-length", "64",
               "--no-progress"])  # fmt: skip
    assert rc == 0
    manifest = json.loads((t / "data" / "manifest.json").read_text())
    assert manifest["tokenizer"]["vocab_size"] == N_OLD + N_NEW
    return t / "data"


def train_recipe(model: Path, data: Path, out: Path, **top) -> Path:
    """Embeddings-only warm-up then everything, 2 steps each of 2 rows x 64 tokens (one
    process: micro-batch 1 x 2 accumulation steps; two ranks: 1 x 1 each)."""
    r = {
        "model": str(model), "out": str(out), "seed": 1024, "precision": "fp32",
        "max_length": 64, "progress": False, "tensorboard": False,
        "train": {"micro_batch_size": 1, "accumulation_steps": 2, "lr": 3e-4},
        "checkpoint": {"save_interval": 0, "keep_last": 1},
        "stages": [
            {"name": "warm", "data": [{"path": str(data)}], "steps": 2, "lr": 1e-3,
             "freeze_non_embeds_params": True},
            {"name": "full", "data": [{"path": str(data)}], "steps": 2},
        ],
        **top,
    }  # fmt: skip
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(r, sort_keys=False))
    return path


def loss_rows(out: Path) -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
            if "loss" in r]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory, smollm_zh: Path, smollm_data: Path) -> dict[str, Path]:
    """The same 2-stage recipe in one process and on 2 FSDP2 ranks (`plugin: zero2`)."""
    t = tmp_path_factory.mktemp("smollmtrain")
    p = langgraft_train(train_recipe(smollm_zh, smollm_data, t / "one"))
    assert p.returncode == 0, p.stderr[-3000:]
    cfg = train_recipe(smollm_zh, smollm_data, t / "zero2", plugin="zero2",
                       train={"micro_batch_size": 1, "accumulation_steps": 1, "lr": 3e-4})  # fmt: skip
    p = langgraft_train(cfg, nproc=2)
    assert p.returncode == 0, p.stderr[-3000:]
    (t / "zero2" / "stderr.txt").write_text(p.stderr)
    return {"one": t / "one", "zero2": t / "zero2"}


def test_train_two_fsdp2_ranks_equal_one_process(trained, smollm_zh):
    """Same global batch (2 rows per step): the ranks take contiguous shares of the same seeded
    rows, and FSDP2's reduce-scatter averages the token-weighted gradients, so losses agree to
    float summation order (rel 1e-5) and so do the weights (1e-4; tests/distributed/
    test_plugins.py explains the AdamW amplification of near-zero gradients)."""
    from safetensors.torch import load_file

    log = (trained["zero2"] / "stderr.txt").read_text()
    assert "FSDP2 over 2 rank(s): reshard after forward False, fp32, CPU offload False" in log
    a, b = loss_rows(trained["one"]), loss_rows(trained["zero2"])
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4]
    assert [r["stage"] for r in b] == [0, 0, 1, 1]
    for ra, rb in zip(a, b, strict=True):
        print(f"\nstep {ra['step']}: loss {ra['loss']:.6f} (1 process) {rb['loss']:.6f} "
              f"(2 ranks), grad norm {ra['grad_norm']:.4f}", end="")  # fmt: skip
        assert (ra["supervised_tokens"], ra["tokens_seen"]) == (rb["supervised_tokens"],
                                                                rb["tokens_seen"])  # fmt: skip
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5)
        assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=1e-4)
        assert rb["lr"] == ra["lr"]
    # a pretrained model, not a random one: a uniform guess costs ln(53,152) = 10.9 nats
    assert a[0]["loss"] < 8.0
    base = load_file(str(smollm_zh / "model.safetensors"))
    for stage in ("stage-0-warm", "stage-1-full"):
        wa, wb = (load_file(str(trained[k] / "export" / stage / "model.safetensors"))
                  for k in ("one", "zero2"))  # fmt: skip
        assert wa.keys() == wb.keys() == base.keys()
        worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
        print(f"\n{stage}: max |weight difference| 1 process vs 2 ranks {worst:.2e}", end="")
        assert worst < 1e-4, stage
        # the warm-up moves only the (tied) embedding matrix; the full stage moves every layer
        moved = {k for k in wa if not torch.equal(wa[k], base[k])}
        if stage == "stage-0-warm":
            assert moved == {"model.embed_tokens.weight"}, sorted(moved)[:5]
        else:
            assert len(moved) == len(wa), sorted(set(wa) - moved)[:5]
    ckpts = trained["zero2"] / "checkpoints"
    ck = ckpts / (ckpts / "latest").read_text().strip()
    assert len(list((ck / "dcp").glob("*.distcp"))) == 2


def test_trained_export_loads_and_generates(tmp_path, trained, smollm_zh):
    export = trained["zero2"] / "export" / "stage-1-full"
    model = AutoModelForCausalLM.from_pretrained(export).eval()
    assert model.config.tie_word_embeddings and model.config.vocab_size == N_OLD + N_NEW
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    tokenizer = [json.loads((d / "tokenizer.json").read_text()) for d in (export, smollm_zh)]
    assert tokenizer[0] == tokenizer[1]  # the same tokenizer (written again, indented)
    assert (export / "chat_template.jinja").is_file()
    out = tmp_path / "gen.jsonl"
    prompt = "LibreOffice 帮助"
    rc = main(["generate", "--model", str(export), "--prompt", prompt, "--greedy",
               "--max-new-tokens", "12", "--device", "cpu", "--out", str(out)])  # fmt: skip
    assert rc == 0
    (rec,) = [json.loads(x) for x in out.read_text().splitlines()]
    ids, text = greedy(model, AutoTokenizer.from_pretrained(export), prompt, n=12)
    print(f"\n{prompt!r} -> {rec['completion']!r}")
    assert rec["token_ids"] == ids and rec["completion"] == text
