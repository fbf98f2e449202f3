"""Issue 22: `train` on prepared data that is damaged or lies is one line naming the file (and
row), exit 2, before the model is loaded: no out/ left behind, no input changed.

Each case copies a real `prepare` output (stories260K's tok512, the imported stories260K model
whose embedding has 512 rows), damages one thing, and runs `langgraft train` in process.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from train_helpers import prepared, write_recipe

from langgraft.__main__ import main

pytestmark = pytest.mark.timeout(120)

SHARD = "bucket_00/data-00000-of-00001.arrow"


@pytest.fixture(scope="module")
def good(stories: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real prepared dataset tokenized with stories260K's own tokenizer (read-only)."""
    return prepared(tmp_path_factory.mktemp("prepared") / "data", stories, {"en": 40})


def rewrite_shard(path: Path, edit: Callable[[dict[str, list]], None]) -> None:
    """Rewrite an Arrow stream shard with `edit` applied to its columns (as Python lists)."""
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_stream(source).read_all()
    cols = {n: table.column(n).to_pylist() for n in table.column_names}
    edit(cols)
    schema = table.schema
    new = pa.table({n: pa.array(cols[n], type=schema.field(n).type) for n in schema.names},
                   schema=schema)  # fmt: skip
    tmp = path.with_suffix(".new")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        writer.write_table(new)
    tmp.replace(path)


def edit_manifest(data: Path, edit: Callable[[dict], None]) -> None:
    m = json.loads((data / "manifest.json").read_text())
    edit(m)
    (data / "manifest.json").write_text(json.dumps(m))


def id_past_the_embedding(data: Path) -> str:
    def edit(c: dict[str, list]) -> None:
        c["input_ids"][3][5] = 600
        if c["labels"][3][5] != -100:
            c["labels"][3][5] = 600

    rewrite_shard(data / SHARD, edit)
    return f"{data / SHARD}: row 3: token id 600, but the model's embedding has 512 rows"


def negative_id(data: Path) -> str:
    def edit(c: dict[str, list]) -> None:
        c["input_ids"][2][1] = -7
        c["labels"][2][1] = -100

    rewrite_shard(data / SHARD, edit)
    return f"{data / SHARD}: row 2: negative token id -7"


def labels_shorter_than_ids(data: Path) -> str:
    def edit(c: dict[str, list]) -> None:
        c["labels"][4] = c["labels"][4][:-3]

    rewrite_shard(data / SHARD, edit)
    return f"{data / SHARD}: row 4: "


def label_that_is_not_the_id(data: Path) -> str:
    def edit(c: dict[str, list]) -> None:
        k = next(i for i, x in enumerate(c["labels"][1]) if x != -100)
        c["labels"][1][k] = (c["input_ids"][1][k] + 1) % 512

    rewrite_shard(data / SHARD, edit)
    return f"{data / SHARD}: row 1: label "


def doc_lens_that_do_not_sum(data: Path) -> str:
    def edit(c: dict[str, list]) -> None:
        c["doc_lens"][6] = [x + 1 for x in c["doc_lens"][6]]

    rewrite_shard(data / SHARD, edit)
    return f"{data / SHARD}: row 6: doc_lens"


def truncated_shard(data: Path) -> str:
    raw = (data / SHARD).read_bytes()
    (data / SHARD).write_bytes(raw[: len(raw) // 2])
    return f"{data / SHARD}: not a complete Arrow stream"


def empty_shard(data: Path) -> str:
    (data / SHARD).write_bytes(b"")
    return f"{data / SHARD}: not a complete Arrow stream"


def manifest_not_json(data: Path) -> str:
    text = (data / "manifest.json").read_text()
    (data / "manifest.json").write_text(text[: len(text) // 2])
    return f"{data / 'manifest.json'}:{{LINE}}: invalid JSON"


def manifest_without_buckets(data: Path) -> str:
    edit_manifest(data, lambda m: m.pop("buckets"))
    return f"{data / 'manifest.json'}: 'buckets' is missing"


def bucket_name_out_of_the_dataset(data: Path) -> str:
    edit_manifest(data, lambda m: m["buckets"][0].update(name="../elsewhere"))
    return f"{data / 'manifest.json'}: buckets[0].name: '../elsewhere' is not a file name"


def manifest_token_count_lies(data: Path) -> str:
    edit_manifest(data, lambda m: m["counts"]["tokens"].update(out=m["counts"]["tokens"]["out"] + 9))  # fmt: skip
    return f"{data / 'manifest.json'}: counts: the data holds "


def state_not_json(data: Path) -> str:
    (data / "bucket_00" / "state.json").write_text('{"_data_files": [')
    return f"{data / 'bucket_00' / 'state.json'}:1: invalid JSON"


def column_of_the_wrong_type(data: Path) -> str:
    import pyarrow as pa

    path = data / SHARD
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_stream(source).read_all()
    table = table.set_column(1, "labels", table.column("labels").cast(pa.list_(pa.int64())))
    tmp = path.with_suffix(".new")  # not over the file the table is memory-mapped from
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    tmp.replace(path)
    return f"{path}: column labels is list<item: int64>, expected list<item: int32>"


CASES = [id_past_the_embedding, negative_id, labels_shorter_than_ids, label_that_is_not_the_id,
         doc_lens_that_do_not_sum, truncated_shard, empty_shard, manifest_not_json,
         manifest_without_buckets, bucket_name_out_of_the_dataset, manifest_token_count_lies,
         state_not_json, column_of_the_wrong_type]  # fmt: skip


def snapshot(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.mark.parametrize("damage", CASES, ids=[c.__name__ for c in CASES])
def test_damaged_prepared_data_is_one_line_before_anything_starts(
    damage, good: Path, stories: Path, tmp_path: Path, capsys
) -> None:
    data = tmp_path / "data"
    shutil.copytree(good, data)
    message = damage(data)
    out = tmp_path / "run"
    cfg = write_recipe(tmp_path / "r.yaml", {
        "model": str(stories), "out": str(out), "progress": False, "tensorboard": False,
        "train": {"micro_batch_size": 2, "warmup_steps": 0, "lr": 1e-3},
        "stages": [{"name": "s", "data": [{"path": str(data)}], "steps": 2}],
    })  # fmt: skip
    before = snapshot(tmp_path)
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"langgraft train: error: {cfg}: stages[0].data[0].path: "), err
    assert re.search(re.escape(message).replace(re.escape("{LINE}"), "[1-9][0-9]*"), err), err
    assert not out.exists()  # refused before out/ was claimed
    assert snapshot(tmp_path) == before  # no input changed


def test_the_untouched_dataset_passes_and_reports_its_counts(good: Path) -> None:
    from langgraft.train.data import PreparedDataset

    ds = PreparedDataset(good)
    counts = ds.manifest["counts"]
    assert ds.stats.rows == counts["sequences"] > 0
    assert ds.stats.tokens == counts["tokens"]["out"]
    assert ds.stats.supervised == counts["tokens"]["supervised_out"]
    assert 2 < ds.stats.max_id < 512
    ds.check_vocabulary(512)
