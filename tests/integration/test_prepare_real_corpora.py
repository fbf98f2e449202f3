"""Zero loss on the real corpora: every row and every trained token accounted for, checked
against the written Arrow files, with inputs hashed as in ../shared/data/SHA256SUMS."""

from __future__ import annotations

from pathlib import Path

import pytest

from langgraft.data.config import PrepareConfig
from langgraft.data.convert import json_to_jsonl
from langgraft.data.prepare import prepare


@pytest.mark.slow
def test_real_corpora_lose_no_row_and_no_token(tmp_path: Path, shared_data: Path) -> None:
    import pyarrow.compute as pc
    from datasets import load_from_disk

    corpus = shared_data / "corpus"
    poetry = tmp_path / "poetry.jsonl"
    n_poems = json_to_jsonl(
        sorted((corpus / "zh" / "chinese-poetry").glob("*.json")), poetry, category="zh"
    )
    cfg = PrepareConfig(
        input=[f"zh={corpus / 'zh' / 'hongloumeng.txt'}", str(poetry), f"en={corpus / 'en'}"],
        tokenizer=shared_data / "models" / "stories260K" / "tok512.model",
        out=tmp_path / "out",
        text_field="text",
        max_length=512,
        num_bins=3,
        progress=False,
    )
    m = prepare(cfg).manifest
    c = m["counts"]
    blocks = {"hongloumeng.txt": 2654, "tinyshakespeare.txt": 7222, "wikitext-2-valid.txt": 1160}
    assert c["rows"] == {
        "in": n_poems + sum(blocks.values()),
        "packed": c["rows"]["in"],
        "rejected": {},
        "boundary_inside_token": 0,
    }
    assert {Path(i["path"]).name: i["rows"] for i in m["inputs"] if i["format"] == "txt"} == blocks
    t = c["tokens"]
    assert t["target_in"] == t["supervised_out"] > 5_000_000
    assert t["out"] == t["in"] + t["overlap_added"] - t["context_only_dropped"]
    assert t["context_only_dropped"] == 0 and c["documents"]["split"] > 0
    assert set(m["categories"]) == {"zh", "en"}
    assert c["packing_efficiency"] >= 0.98
    sums = {}
    for line in (shared_data / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        sums[name.removeprefix("./")] = digest
    for inp in m["inputs"]:
        if inp["path"].startswith(str(corpus)):
            rel = Path(inp["path"]).relative_to(shared_data).as_posix()
            assert sums[rel] == inp["sha256"], rel
    # the manifest agrees with what is on disk
    dd = load_from_disk(str(tmp_path / "out"))
    supervised = tokens = sequences = 0
    for name, bucket in zip(dd, m["buckets"], strict=True):
        table = dd[name].data.table
        labels = pc.list_flatten(table.column("labels"))
        n_sup = int(pc.sum(pc.not_equal(labels, -100)).as_py())
        assert n_sup == bucket["supervised"]
        assert int(pc.max(pc.list_value_length(table.column("input_ids"))).as_py()) <= 512
        doc_total = int(pc.sum(pc.list_flatten(table.column("doc_lens"))).as_py())
        assert doc_total == len(pc.list_flatten(table.column("input_ids"))) == bucket["tokens"]
        supervised += n_sup
        tokens += bucket["tokens"]
        sequences += table.num_rows
    assert (supervised, tokens, sequences) == (t["supervised_out"], t["out"], c["sequences"])
    # sentencepiece (the default here) and tokenizer.json give the same ids on every row, and a
    # second run with the other backend and 2 workers is byte-identical
    cfg.out, cfg.tokenizer_backend, cfg.workers = tmp_path / "hf", "hf", 2
    assert prepare(cfg).manifest["content_sha256"] == m["content_sha256"]
