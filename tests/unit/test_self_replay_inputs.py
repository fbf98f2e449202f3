"""Issue 22: `data self-replay` refuses a NaN temperature and text that is not valid Unicode (a
lone surrogate, what a shell's non-UTF-8 byte becomes) with one line, exit 2, nothing written
(the surrogate was a TypeError inside the tokenizer); and its progress bar advances once per
batch, so the first rate (and ETA) is a whole batch's tokens over the batch's time, not one
sample's tokens over it (an 8-hour first ETA on the demo)."""

from __future__ import annotations

from pathlib import Path

import pytest

from langgraft.__main__ import main

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--prompt", "Once\udcffupon"], "--prompt: character 5 ('\\udcff') is not valid Unicode"),
     (["--category", "\ud800"], "--category: character 1 ('\\ud800') is not valid Unicode"),
     (["--temperature", "nan"], "--temperature nan: must be a finite number > 0")],
)  # fmt: skip
def test_bad_text_and_nan_are_one_line(extra, message, stories: Path, tmp_path: Path, capsys) -> None:  # fmt: skip
    out = tmp_path / "sr"
    argv = ["data", "self-replay", "--model", str(stories), "--out", str(out), "--tokens", "50",
            "--no-progress", *extra]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"langgraft data: error: {message}"), err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_the_bar_advances_a_whole_batch_at_a_time(stories: Path, tmp_path: Path, monkeypatch) -> None:  # fmt: skip
    import tqdm

    import langgraft.decoding as decoding
    from langgraft.data.self_replay import SelfReplayConfig, self_replay

    batches: list[int] = []
    updates: list[int] = []
    generate = decoding.generate_ids

    def counted(*args, **kwargs):
        results = generate(*args, **kwargs)
        batches.append(sum(len(ids) for ids, _ in results if len(ids) >= 8))
        return results

    class Bar(tqdm.tqdm):
        def update(self, n=1):
            updates.append(n)
            return super().update(n)

    monkeypatch.setattr(decoding, "generate_ids", counted)
    monkeypatch.setattr(tqdm, "tqdm", Bar)
    cfg = SelfReplayConfig(model=stories, out=tmp_path / "sr", tokens=600, batch_size=4,
                           max_new_tokens=64, progress=False)  # fmt: skip
    self_replay(cfg)
    assert len(batches) >= 2  # more than one batch, so the first update is not the last
    assert len(updates) == len(batches) and sum(updates) == 600
    assert updates[0] == batches[0]  # every kept token of the first batch, at once
