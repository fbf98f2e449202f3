"""Encoding batches of rows in input order: in this process (a background thread one batch
ahead) or in N worker processes (`prepare --workers N`) that import neither transformers nor
torch (they encode with sentencepiece alone; see `langgraft.data.textenc`).
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from langgraft.data.sources import Item
from langgraft.data.textenc import LightSpec, TextEncoder
from langgraft.data.tokenize import EncodedBatch, Encoder, EncoderSpec

_WORKER: Encoder | None = None


def _init_worker(spec: EncoderSpec, light: LightSpec | None) -> None:
    # Each worker encodes single-threaded: N processes x all-core threads oversubscribe.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    global _WORKER
    _WORKER = Encoder(spec, light)


def _encode_in_worker(items: list[Item]) -> EncodedBatch:
    assert _WORKER is not None
    return _WORKER.encode(items)


def _ready() -> None:
    pass


def _start_pool(stack: contextlib.ExitStack, workers: int, spec: EncoderSpec, light: Any) -> Any:
    """A process pool, started now. ProcessPoolExecutor rather than multiprocessing.Pool: if a
    worker dies, its futures fail (BrokenProcessPool) instead of waiting forever. "spawn", not
    fork: a forked copy of a tokenizer that has used its thread pool can deadlock."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(
        workers,
        mp_context=mp.get_context("spawn"),
        initializer=_init_worker,
        initargs=(spec, light),
    )
    stack.callback(pool.shutdown, wait=True, cancel_futures=True)
    for _ in range(workers):
        pool.submit(_ready)  # start the processes while the main process encodes batch 1
    return pool


def encode_stream(
    encoder: Encoder, batches: Iterable[list[Item]], workers: int
) -> Iterator[EncodedBatch]:
    """Encode batches in input order, in this process (workers=1: a background thread, one
    batch ahead) or in a pool of processes.

    The first batch is always encoded here, while the workers start: it settles which backend
    encodes (see textenc). At most 2 x workers batches are in flight, so memory does not grow
    with the input (`Pool.imap` would read the whole input ahead into its task queue).
    """
    from concurrent.futures.process import BrokenProcessPool

    batches = iter(batches)
    light = encoder.light_spec()
    with contextlib.ExitStack() as stack:
        pool = _start_pool(stack, workers, encoder.spec, light) if workers > 1 else None
        first = next(batches, None)
        if first is None:
            return
        out = encoder.encode(first)
        if pool is not None and light is not None and encoder.light_spec() is None:
            # sentencepiece was rejected on the first batch: the workers need tokenizer.json
            pool.shutdown(wait=False, cancel_futures=True)
            pool = _start_pool(stack, workers, encoder.spec, None)
        yield out
        if pool is None:
            # One background thread encodes the next batch while this one packs the last:
            # sentencepiece releases the GIL while it encodes, so the two overlap.
            from concurrent.futures import ThreadPoolExecutor

            thread = stack.enter_context(ThreadPoolExecutor(1))
            ahead: deque[Any] = deque()
            for batch in batches:
                ahead.append(thread.submit(encoder.encode, batch))
                if len(ahead) >= 2:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()
            return
        pending: deque[Any] = deque()

        def result() -> EncodedBatch:
            try:
                out = pending.popleft().result()
            except BrokenProcessPool as e:
                raise RuntimeError(
                    f"a prepare worker process died ({e}); rerun with --workers 1 to see why"
                ) from e
            if isinstance(encoder.text, TextEncoder):
                encoder.text.check_samples(out.samples)
            return out

        for batch in batches:
            pending.append(pool.submit(_encode_in_worker, batch))
            if len(pending) >= 2 * workers:
                yield result()
        while pending:
            yield result()
