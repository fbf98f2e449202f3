"""The import oracle: llama2.c's own reference output for stories260K, reproduced byte for byte
after `langgraft model import-llama2c` and a save/from_pretrained round trip."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from langgraft.__main__ import main


def read_run_c_vocab(path: Path) -> list[bytes]:
    """llama2.c's tokenizer .bin: int max_len, then per token (float score, int len, bytes).
    Its pieces have "▁" already turned into " ", and BOS/EOS are "\\n<s>\\n" / "\\n</s>\\n"."""
    data, pos, vocab = path.read_bytes(), 4, []
    while pos < len(data):
        _, n = struct.unpack_from("<fi", data, pos)
        vocab.append(data[pos + 8 : pos + 8 + n])
        pos += 8 + n
    return vocab


def run_c_decode(vocab: list[bytes], tokens: list[int]) -> bytes:
    """What run.c's generate() prints for `tokens` sampled after BOS (decode + safe_printf)."""
    out, prev = b"", 1
    for tok in tokens:
        piece = vocab[tok]
        if prev == 1 and piece.startswith(b" "):  # sentencepiece strips the space after BOS
            piece = piece[1:]
        m = re.match(rb"<0x([0-9A-Fa-f]{1,2})", piece)  # sscanf("<0x%02hhX>")
        if m:
            piece = bytes([int(m.group(1), 16)])
        # safe_printf: drop a lone byte that is neither printable nor whitespace (C locale)
        if len(piece) == 1 and not (0x20 <= piece[0] < 0x7F or piece[0] in b"\t\n\v\f\r"):
            piece = b""
        out += piece
        prev = tok
    return out


@pytest.mark.slow
def test_import_reproduces_llama2c_greedy_output(shared_data: Path, tmp_path: Path) -> None:
    d = shared_data / "models" / "stories260K"
    out = tmp_path / "stories260K"
    rc = main(["model", "import-llama2c", "--checkpoint", str(d / "stories260K.bin"),
               "--tokenizer", str(d / "tok512.model"), "--out", str(out)])  # fmt: skip
    assert rc == 0
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert tok("").input_ids == [1]  # run.c's prompt for an empty string: BOS alone
    # run.c -n 200: 200 forward passes from BOS, each sampling one token; stop on sampling BOS.
    gen = model.generate(torch.tensor([[1]]), max_new_tokens=200, do_sample=False)[0, 1:].tolist()
    if gen and gen[-1] == 1:
        gen = gen[:-1]
    assert 2 not in gen  # run.c would print EOS and go on; the shipped config would stop
    expected = (d / "expected_greedy_n200.txt").read_bytes()
    assert run_c_decode(read_run_c_vocab(d / "tok512.bin"), gen) == expected
    # With no lone non-printable bytes in the output, the HF decode is the same text.
    assert tok.decode(gen, skip_special_tokens=True).encode() == expected


@pytest.mark.slow
def test_import_expand_generate_end_to_end(shared_data: Path, tmp_path: Path) -> None:
    """The issue's user path: import stories260K, give its tokenizer Chinese pieces, expand the
    model, generate from it with `langgraft generate` and with plain transformers."""
    import json

    from langgraft.tokenizer.hf import write_hf_tokenizer
    from langgraft.tokenizer.spmodel import NORMAL, load_proto

    d = shared_data / "models" / "stories260K"
    args = ["--checkpoint", str(d / "stories260K.bin"), "--tokenizer", str(d / "tok512.model")]
    assert main(["model", "import-llama2c", *args, "--out", str(tmp_path / "base")]) == 0
    # `tokenizer expand` refuses tok512 (it folds whitespace); append chinese_sp pieces directly
    proto = load_proto(d / "tok512.model")
    have = {p.piece for p in proto.pieces}
    zh = load_proto(shared_data / "tokenizers/chinese-llama-sp/chinese_sp.model")
    low = min(p.score for p in proto.pieces if p.type == NORMAL)
    for p in [p for p in zh.pieces if p.type == NORMAL and p.piece not in have][:300]:
        new = proto.pieces.add()
        new.piece, new.score, new.type = p.piece, low - 1 - len(proto.pieces), NORMAL
    write_hf_tokenizer(proto, tmp_path / "tok")
    assert main(["model", "expand", "--model", str(tmp_path / "base"), "--tokenizer",
                 str(tmp_path / "tok"), "--out", str(tmp_path / "zh"), "--pad-to-multiple-of", "64"]) == 0  # fmt: skip
    out = tmp_path / "gen.jsonl"
    rc = main(["generate", "--model", str(tmp_path / "zh"), "--prompt", "从前有一个小女孩", "Once upon",
               "--max-new-tokens", "40", "--temperature", "1.0", "--out", str(out)])  # fmt: skip
    assert rc == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2 and all(r["completion_tokens"] > 0 for r in records)
    assert all(max(r["token_ids"]) < len(proto.pieces) for r in records)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "zh")
    tok = AutoTokenizer.from_pretrained(tmp_path / "zh")
    assert len(tok) == 812 <= model.config.vocab_size == 832
    ids = tok("从前", return_tensors="pt").input_ids
    sample = model.generate(ids, max_new_tokens=30, do_sample=True, top_k=0)
    assert (sample[0, ids.shape[1] :] < len(tok)).all()
