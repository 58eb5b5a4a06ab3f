"""Optional dynamic micro-batching: concurrent requests share one model run.

The first waiting request opens a batch; others join until the batch holds `max_texts` texts or
`max_delay_s` has passed since it opened. A request is never split across runs, so one larger than
`max_texts` runs alone, and one that would overflow the open batch starts the next. Runs happen one at
a time on the given executor, off the event loop.

A text's answer can depend on its batch-mates: padding to the longest text changes the tensors, and a
dynamically quantized (int8) engine computes its activation scales over the whole batch. On the demo
bundle scores moved by up to 0.1 and near-tie labels flipped (bench/serve_load.py --micro-batch shows
it), so the server warns when micro-batching such an engine or beyond the profile's batch sizes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

from slimline.serve.predictor import Prediction

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future[list[Prediction]] = field(repr=False)


class MicroBatcher:
    def __init__(self, run_batch: Callable[[list[str]], list[Prediction]], executor: Executor, max_texts: int,
                 max_delay_s: float, on_batch: Callable[[int, float], None] | None = None) -> None:
        self._run_batch = run_batch
        self._executor = executor
        self.max_texts = max_texts
        self.max_delay_s = max_delay_s
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._carry: _Pending | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="slimline-micro-batcher")

    async def stop(self) -> None:
        """Finish what is queued, then end the loop (called after the server stopped taking requests)."""
        if self._task is not None:
            await self._queue.put(None)
            await self._task
            self._task = None

    async def submit(self, texts: list[str]) -> list[Prediction]:
        if self._task is None or self._task.done():
            raise RuntimeError("the micro-batcher is not running")
        future: asyncio.Future[list[Prediction]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(texts, future))
        return await future

    async def _collect(self, first: _Pending) -> tuple[list[_Pending], bool]:
        loop = asyncio.get_running_loop()
        batch, count, deadline = [first], len(first.texts), loop.time() + self.max_delay_s
        while count < self.max_texts:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                item = await asyncio.wait_for(self._queue.get(), remaining)
            except asyncio.TimeoutError:
                break
            if item is None:
                return batch, True
            if count + len(item.texts) > self.max_texts:
                self._carry = item
                break
            batch.append(item)
            count += len(item.texts)
        return batch, False

    async def _loop(self) -> None:
        stopping = False
        while not stopping or self._carry is not None:
            first = self._carry or await self._queue.get()
            self._carry = None
            if first is None:
                stopping = True
                continue
            batch, stopping_now = await self._collect(first)
            stopping = stopping or stopping_now
            await self._run(batch)

    async def _run(self, batch: list[_Pending]) -> None:
        texts = [text for pending in batch for text in pending.texts]
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            predictions = await loop.run_in_executor(self._executor, self._run_batch, texts)
        except Exception as err:  # one failed run fails its requests, not the batcher
            log.exception("micro-batch of %d texts failed", len(texts))
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(err)
            return
        if self._on_batch is not None:
            self._on_batch(len(texts), loop.time() - started)
        offset = 0
        for pending in batch:
            share = predictions[offset : offset + len(pending.texts)]
            offset += len(pending.texts)
            if not pending.future.done():  # the client may have gone away
                pending.future.set_result(share)
