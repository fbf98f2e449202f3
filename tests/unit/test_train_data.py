"""The stage sampler over real `prepare` output: bucket 0 before bucket 1, shuffled only within
a bucket, seeded; weights; exact continuation from a state dict; the tokenizer-hash check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from train_helpers import prepared, tiny_model

from langgraft.errors import UserError
from langgraft.train.data import PreparedDataset, StageSampler


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    t = tmp_path_factory.mktemp("train-data")
    model = tiny_model(t / "model")
    return {
        "model": model,
        "two": prepared(t / "two", model, {"a": 80, "b": 50}, num_bins=2, seed=3),
        "en": prepared(t / "en", model, {"en": 60}, num_bins=1, seed=4),
    }


def refs(sampler: StageSampler, steps: int) -> list[tuple[int, int, int]]:
    out = []
    for _ in range(steps):
        start = sampler.cursor
        epoch_order = sampler.order(sampler.epoch)
        sampler.next_step_rows()
        if sampler.cursor < start:  # wrapped into a new epoch
            epoch_order = sampler.order(sampler.epoch)
            start = 0
        out += [tuple(r) for r in epoch_order[start : sampler.cursor].tolist()]
    return out


def test_buckets_in_order_shuffled_within_and_seeded(data) -> None:
    ds = PreparedDataset(data["two"])
    n0, n1 = ds.buckets[0].num_rows, ds.buckets[1].num_rows
    assert n0 > 4 and n1 > 4
    s = StageSampler([ds], [1.0], seed=7, stage=0, rows_per_step=1)
    order = s.order(0)
    buckets = order[:, 1].tolist()
    assert buckets == [0] * n0 + [1] * n1  # the whole of bucket 0 first
    assert sorted(order[:n0, 2].tolist()) == list(range(n0))  # every row once
    assert order[:n0, 2].tolist() != list(range(n0))  # but shuffled
    same = StageSampler([ds], [1.0], seed=7, stage=0, rows_per_step=1).order(0)
    other = StageSampler([ds], [1.0], seed=8, stage=0, rows_per_step=1).order(0)
    assert (same == order).all() and not (other == order).all()
    assert not (s.order(1) == order).all()  # a new shuffle each epoch, same bucket order
    assert s.order(1)[:, 1].tolist() == buckets


def test_rows_come_back_as_prepare_wrote_them(data) -> None:
    ds = PreparedDataset(data["two"])
    row = ds.buckets[1].row(3)
    assert len(row.input_ids) == int(row.doc_lens.sum()) == len(row.labels)
    assert row.category in ("a", "b")
    starts = np.cumsum(row.doc_lens) - row.doc_lens
    assert (row.labels[starts] == -100).all()


def test_weights_mix_sources(data) -> None:
    two, en = PreparedDataset(data["two"]), PreparedDataset(data["en"])
    n_en = en.buckets[0].num_rows
    s = StageSampler([two, en], [1.0, 0.5], seed=1, stage=2, rows_per_step=2)
    order = s.order(0)
    from_en = order[order[:, 0] == 1]
    assert len(from_en) == round(0.5 * n_en) and len(set(from_en[:, 2].tolist())) == len(from_en)
    assert (from_en[:, 1] == 0).all()  # en has one bucket: it mixes into bucket 0 only
    s2 = StageSampler([two, en], [1.0, 2.0], seed=1, stage=2, rows_per_step=2)
    assert (s2.order(0)[:, 0] == 1).sum() == 2 * n_en


def test_state_dict_continues_exactly_across_epochs(data) -> None:
    ds = PreparedDataset(data["two"])
    a = StageSampler([ds], [1.0], seed=5, stage=1, rows_per_step=6)
    straight = refs(a, 40)  # more than one pass
    assert a.epoch >= 1
    b = StageSampler([ds], [1.0], seed=5, stage=1, rows_per_step=6)
    first = refs(b, 13)
    state = b.state_dict()
    assert sum(state["consumed_per_bucket"]) == state["cursor"] == 78
    c = StageSampler([ds], [1.0], seed=5, stage=1, rows_per_step=6)
    c.load_state_dict(state)
    assert first + refs(c, 27) == straight


def test_tokenizers_are_compared_by_what_they_encode_not_file_bytes(data, tmp_path) -> None:
    import json
    import shutil

    from train_helpers import TOK512, swap_two_pieces

    from langgraft.data.tokenize import tokenizer_hash
    from langgraft.tokenizer import load_tokenizer
    from langgraft.train.data import tokenizer_identity

    model = data["model"]
    # Prepared from the bare SentencePiece file; the model directory holds tokenizer.json.
    ds = PreparedDataset(prepared(tmp_path / "f", model, {"a": 20}, tokenizer=TOK512))
    assert ds.manifest["tokenizer"]["sha256"] != tokenizer_hash(model)  # different bytes
    ds.check_tokenizer(tokenizer_identity(load_tokenizer(model), model), model)
    # Re-serialised tokenizer.json (indentation only): same encoding, accepted.
    same = shutil.copytree(model, tmp_path / "same")
    spec = json.loads((same / "tokenizer.json").read_text(encoding="utf-8"))
    (same / "tokenizer.json").write_text(json.dumps(spec, indent=4, ensure_ascii=False))
    ds.check_tokenizer(tokenizer_identity(load_tokenizer(same), same), same)
    # Two pieces trade ids: a really different tokenizer, refused.
    other = shutil.copytree(model, tmp_path / "other")
    swap_two_pieces(other)
    with pytest.raises(
        UserError, match=r"encodes differently \(fingerprint .*re-run `langgraft prepare`"
    ):
        ds.check_tokenizer(tokenizer_identity(load_tokenizer(other), other), other)
    # A manifest written before fingerprints falls back to the file's sha256.
    del ds.manifest["tokenizer"]["fingerprint"]
    with pytest.raises(UserError, match=r"\(sha256 .*re-run `langgraft prepare`"):
        ds.check_tokenizer(tokenizer_identity(load_tokenizer(model), model), model)


def test_not_a_prepared_directory(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no manifest.json"):
        PreparedDataset(tmp_path)


def test_data_parallel_shares_are_contiguous_and_disjoint(data) -> None:
    # rank r of W takes the r-th contiguous share of each step's global rows, so the ranks'
    # shares concatenated are exactly one process's step (the DDP oracle relies on it)
    ds = PreparedDataset(data["two"])
    one = StageSampler([ds], [1.0], seed=7, stage=0, rows_per_step=8)
    ranks = [StageSampler([ds], [1.0], seed=7, stage=0, rows_per_step=8) for _ in range(2)]
    for _ in range(one.steps_per_epoch + 2):  # across an epoch boundary
        whole = [r.input_ids.tolist() for r, _ in one.next_step_rows()]
        shares = [
            [r.input_ids.tolist() for r, _ in s.next_step_rows(k, 2)] for k, s in enumerate(ranks)
        ]
        assert len(shares[0]) == len(shares[1]) == 4
        assert shares[0] + shares[1] == whole
        assert ranks[0].state_dict() == ranks[1].state_dict() == one.state_dict()


def test_a_source_with_fewer_buckets_is_spread_over_every_stage_bucket(data) -> None:
    two, en = PreparedDataset(data["two"]), PreparedDataset(data["en"])
    assert len(two.buckets) == 2 and len(en.buckets) == 1
    n_en = en.buckets[0].num_rows
    s = StageSampler([two, en], [1.0, 1.0], seed=3, stage=2, rows_per_step=1)
    splits = []
    for epoch in (0, 1):
        order = s.order(epoch)
        ends = s._bucket_ends
        pools = [order[: ends[0]], order[ends[0] : ends[1]]]
        en_rows = [p[p[:, 0] == 1][:, 2].tolist() for p in pools]
        # half of the English rows in each stage bucket (not all of them in bucket 0) ...
        assert [len(r) for r in en_rows] == [(n_en + 1) // 2, n_en // 2]
        # ... every English row exactly once per pass ...
        assert sorted(en_rows[0] + en_rows[1]) == list(range(n_en))
        # ... while the two-bucket source keeps its own bucket order (bucket k in stage bucket k)
        for k, p in enumerate(pools):
            mine = p[p[:, 0] == 0]
            assert (mine[:, 1] == k).all() and len(mine) == two.buckets[k].num_rows
        splits.append(set(en_rows[0]))
    assert splits[0] != splits[1]  # which half goes first is reshuffled every epoch
    # weights apply before the spread: 0.5 of English = a seeded half, split over both buckets
    half = StageSampler([two, en], [1.0, 0.5], seed=3, stage=2, rows_per_step=1).order(0)
    assert (half[:, 0] == 1).sum() == round(0.5 * n_en)
