"""llama2.c import: layout, rotary permutation, and logits against a direct port of run.c's
forward pass, on the real stories260K and on a synthetic untied GQA checkpoint."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from langgraft.__main__ import main
from langgraft.errors import UserError
from langgraft.model.llama2c import (
    HEADER,
    Llama2cHeader,
    read_header,
    rotary_pairs_to_halves,
)


def read_raw(path: Path) -> tuple[Llama2cHeader, dict[str, torch.Tensor]]:
    """The checkpoint's tensors in llama2.c's own layout (no permutation)."""
    hdr = read_header(path)
    flat = torch.from_numpy(np.fromfile(path, dtype="<f4", offset=HEADER.size).copy())
    d, h, n_l, v, hs = hdr.dim, hdr.hidden_dim, hdr.n_layers, hdr.vocab_size, hdr.head_size
    kv = hdr.n_kv_heads * hs
    shapes = [
        ("tok", (v, d)), ("att", (n_l, d)), ("wq", (n_l, d, d)), ("wk", (n_l, kv, d)),
        ("wv", (n_l, kv, d)), ("wo", (n_l, d, d)), ("ffn", (n_l, d)), ("w1", (n_l, h, d)),
        ("w2", (n_l, d, h)), ("w3", (n_l, h, d)), ("final", (d,)), ("rope", (hdr.seq_len * hs,)),
    ]  # fmt: skip
    if not hdr.shared_classifier:
        shapes.append(("cls", (v, d)))
    w, pos = {}, 0
    for name, shape in shapes:
        n = math.prod(shape)
        w[name] = flat[pos : pos + n].view(shape)
        pos += n
    assert pos == flat.numel()
    w.setdefault("cls", w["tok"])
    return hdr, w


def run_c_forward(
    hdr: Llama2cHeader, w: dict[str, torch.Tensor], tokens: list[int]
) -> torch.Tensor:
    """run.c's forward(), position by position semantics, written for a whole sequence."""
    hs, nh, nkv, T = hdr.head_size, hdr.n_heads, hdr.n_kv_heads, len(tokens)

    def rmsnorm(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return g * x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5)

    freq = 1.0 / 10000.0 ** (torch.arange(0, hs, 2, dtype=torch.float32) / hs)
    ang = torch.arange(T, dtype=torch.float32)[:, None] * freq[None]
    cos, sin = torch.cos(ang)[:, None], torch.sin(ang)[:, None]

    def rope(v: torch.Tensor, n: int) -> torch.Tensor:  # rotate adjacent pairs
        v = v.view(T, n, hs // 2, 2)
        a, b = v[..., 0], v[..., 1]
        return torch.stack([a * cos - b * sin, a * sin + b * cos], -1).reshape(T, n * hs)

    x = w["tok"][tokens]
    mask = torch.full((T, T), float("-inf")).triu(1)
    for layer in range(hdr.n_layers):
        h = rmsnorm(x, w["att"][layer])
        q = rope(h @ w["wq"][layer].T, nh).view(T, nh, hs)
        k = rope(h @ w["wk"][layer].T, nkv).view(T, nkv, hs)
        v = (h @ w["wv"][layer].T).view(T, nkv, hs)
        out = torch.empty(T, nh, hs)
        for head in range(nh):
            kvh = head // (nh // nkv)
            att = (q[:, head] @ k[:, kvh].T) / math.sqrt(hs) + mask
            out[:, head] = att.softmax(-1) @ v[:, kvh]
        x = x + out.reshape(T, -1) @ w["wo"][layer].T
        h = rmsnorm(x, w["ffn"][layer])
        hidden = torch.nn.functional.silu(h @ w["w1"][layer].T) * (h @ w["w3"][layer].T)
        x = x + hidden @ w["w2"][layer].T
    return rmsnorm(x, w["final"]) @ w["cls"].T


def write_synthetic(path: Path, dim: int, hidden: int, n_layers: int, n_heads: int, n_kv: int,
                    vocab: int, seq_len: int, shared: bool, seed: int = 0) -> None:  # fmt: skip
    hs = dim // n_heads
    hdr = Llama2cHeader(dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len, shared)
    rng = np.random.default_rng(seed)
    floats = rng.standard_normal(hdr.n_floats()).astype("<f4") * 0.2
    # rmsnorm gains near 1 keep activations sane; their positions: after the embedding...
    v_d = vocab * dim
    floats[v_d : v_d + n_layers * dim] = 1.0 + 0.1 * floats[v_d : v_d + n_layers * dim]
    assert hdr.head_size == hs
    with open(path, "wb") as f:
        f.write(
            struct.pack(
                "<7i", dim, hidden, n_layers, n_heads, n_kv, vocab if shared else -vocab, seq_len
            )
        )
        f.write(floats.tobytes())


def test_header_of_real_checkpoint(shared_data: Path) -> None:
    hdr = read_header(shared_data / "models" / "stories260K" / "stories260K.bin")
    assert (hdr.dim, hdr.hidden_dim, hdr.n_layers, hdr.n_heads, hdr.n_kv_heads) == (
        64,
        172,
        5,
        8,
        4,
    )
    assert (hdr.vocab_size, hdr.seq_len, hdr.shared_classifier) == (512, 512, True)


def test_rotary_permutation_preserves_attention_scores() -> None:
    """q.k after llama2.c's pairwise RoPE equals q'.k' after HF's rotate-half on permuted rows."""
    torch.manual_seed(0)
    n_heads, hs, d, pos = 2, 8, 16, torch.tensor([3.0])
    wq, x = torch.randn(n_heads * hs, d), torch.randn(d)
    freq = 1.0 / 10000.0 ** (torch.arange(0, hs, 2) / hs)
    cos, sin = torch.cos(pos * freq), torch.sin(pos * freq)
    q = (wq @ x).view(n_heads, hs // 2, 2)
    pairs = torch.stack([q[..., 0] * cos - q[..., 1] * sin, q[..., 0] * sin + q[..., 1] * cos], -1)
    q2 = (rotary_pairs_to_halves(wq, n_heads) @ x).view(n_heads, hs)
    c, s = torch.cat([cos, cos]), torch.cat([sin, sin])
    rotated = q2 * c + torch.cat([-q2[:, hs // 2 :], q2[:, : hs // 2]], -1) * s
    # Same values, each head's pairs (2j, 2j+1) moved to (j, j + hs/2).
    expect = torch.cat([pairs[..., 0], pairs[..., 1]], -1)
    torch.testing.assert_close(rotated, expect, rtol=0, atol=1e-5)


def test_stories260k_logits_match_run_c(stories: Path, shared_data: Path) -> None:
    hdr, w = read_raw(shared_data / "models" / "stories260K" / "stories260K.bin")
    tokens = [1, 403, 407, 261, 425, 263, 315, 410, 288, 286, 299, 1, 40]
    model = AutoModelForCausalLM.from_pretrained(stories).eval()
    with torch.no_grad():
        got = model(torch.tensor([tokens])).logits[0]
    want = run_c_forward(hdr, w, tokens)
    assert (got - want).abs().max().item() < 1e-4


def test_untied_gqa_checkpoint_matches_run_c(tmp_path: Path, shared_data: Path) -> None:
    ckpt = tmp_path / "untied.bin"
    write_synthetic(
        ckpt, dim=32, hidden=48, n_layers=2, n_heads=4, n_kv=2, vocab=512, seq_len=32, shared=False
    )
    rc = main(["model", "import-llama2c", "--checkpoint", str(ckpt), "--tokenizer",
               str(shared_data / "models/stories260K/tok512.model"), "--out", str(tmp_path / "hf")])  # fmt: skip
    assert rc == 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert not model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    hdr, w = read_raw(ckpt)
    tokens = list(range(1, 30, 2))
    with torch.no_grad():
        got = model(torch.tensor([tokens])).logits[0]
    torch.testing.assert_close(got, run_c_forward(hdr, w, tokens), rtol=0, atol=1e-4)


def test_bad_checkpoints_are_user_errors(tmp_path: Path, shared_data: Path) -> None:
    real = (shared_data / "models/stories260K/stories260K.bin").read_bytes()
    cases = {
        "truncated.bin": real[:-4],
        "short.bin": real[:10],
        "v1.bin": struct.pack("<I", 0x616B3432) + real[4:],
        "zero.bin": struct.pack("<7i", 0, 1, 1, 1, 1, 1, 1),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UserError, match=name):
            read_header(tmp_path / name)


def test_tokenizer_mismatch_exit_2_and_nothing_written(tmp_path: Path, shared_data: Path, llama2_model: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / "out"
    rc = main(["model", "import-llama2c", "--checkpoint",
               str(shared_data / "models/stories260K/stories260K.bin"),
               "--tokenizer", str(llama2_model), "--out", str(out)])  # fmt: skip
    assert rc == 2
    assert "32000 pieces" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
