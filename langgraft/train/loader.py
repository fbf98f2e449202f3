"""A background thread that reads and collates the next optimizer steps while this one computes.

The sampler is a pure function of its (epoch, cursor) state, so the thread may run ahead: each
queued step carries the sampler state *after* it, and `state_dict()` returns the state after
the last step handed to the trainer, not the thread's position. A checkpoint therefore resumes
at the very next unconsumed step, bit for bit, however far the thread had read. On CUDA the
tensors are page-locked in the thread so the host-to-device copies are asynchronous.
"""

from __future__ import annotations

import copy
import queue
import threading
from typing import Any

from langgraft.train.data import StageSampler
from langgraft.train.loss import Collator, MicroBatch


class StepLoader:
    def __init__(
        self,
        sampler: StageSampler,
        collate: Collator,
        micro_batch_size: int,
        rank: int = 0,
        world: int = 1,
        depth: int = 2,
        pin_memory: bool = False,
    ) -> None:
        self.sampler, self.collate, self.mbs = sampler, collate, micro_batch_size
        self.rank, self.world, self.pin = rank, world, pin_memory
        self._consumed = copy.deepcopy(sampler.state_dict())
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="langgraft-loader", daemon=True)
        self._thread.start()

    def _step(self) -> list[MicroBatch]:
        rows = [r for r, _ in self.sampler.next_step_rows(self.rank, self.world)]
        out = [self.collate(rows[i : i + self.mbs]) for i in range(0, len(rows), self.mbs)]
        return [mb.pin_memory() for mb in out] if self.pin else out

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                item: Any = (self._step(), copy.deepcopy(self.sampler.state_dict()))
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as e:  # surfaced in the training thread by next()
            self._queue.put(e)

    def next(self) -> list[MicroBatch]:
        """The next step's micro-batches (this rank's share)."""
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        micro, self._consumed = item
        return micro

    def state_dict(self) -> dict[str, Any]:
        """The sampler state after the last step returned by `next()`."""
        return copy.deepcopy(self._consumed)

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:  # unblock a put() waiting on a full queue
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=0.05)
