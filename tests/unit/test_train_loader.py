"""The loader thread reads ahead, but its state is the position after the last consumed step,
so a checkpoint taken at any moment resumes at the next unconsumed step; errors surface."""

from __future__ import annotations

import time

import numpy as np
import pytest

from langgraft.train.data import Row
from langgraft.train.loader import StepLoader
from langgraft.train.loss import Collator


class CountingSampler:
    """Step k yields rows whose ids are all k; the state is the number of steps read."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.cursor, self.fail_at = 0, fail_at

    def next_step_rows(self, rank: int = 0, world: int = 1) -> list:
        if self.cursor == self.fail_at:
            raise ValueError("bad row")
        ids = np.full(4, self.cursor + 3, np.int32)
        self.cursor += 1
        return [(Row(ids, ids.copy(), np.array([4], np.int32), "c"), 0)] * 2

    def state_dict(self) -> dict:
        return {"cursor": self.cursor}


def test_state_is_after_the_last_consumed_step_not_the_threads_position() -> None:
    sampler = CountingSampler()
    loader = StepLoader(sampler, Collator(0), micro_batch_size=1, depth=2)
    try:
        assert loader.state_dict() == {"cursor": 0}
        first = loader.next()
        deadline = time.time() + 10
        while sampler.cursor < 3 and time.time() < deadline:  # the thread reads ahead
            time.sleep(0.01)
        assert sampler.cursor >= 3  # read ahead (the thread may hold one more step)
        assert loader.state_dict() == {"cursor": 1}
        second = loader.next()
        assert loader.state_dict() == {"cursor": 2}
        assert len(first) == 2 and int(first[0].input_ids[0, 0]) == 3
        assert int(second[0].input_ids[0, 0]) == 4  # in order, none skipped
    finally:
        loader.close()


def test_an_error_in_the_thread_is_raised_by_next() -> None:
    loader = StepLoader(CountingSampler(fail_at=1), Collator(0), micro_batch_size=2)
    try:
        loader.next()
        with pytest.raises(ValueError, match="bad row"):
            loader.next()
    finally:
        loader.close()
