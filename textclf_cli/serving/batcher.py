"""Micro-batching for serve: concurrent requests' texts gathered into one model call, up to max_batch texts or
max_wait after the oldest request arrived; the call runs in a worker thread, off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Pending:
    """One request's texts waiting for a model call, and the future its handler awaits."""

    texts: list[str]
    future: asyncio.Future
    arrived: float  # loop.time() when it was submitted


@dataclass(frozen=True)
class Slot:
    """What a request gets back: the whole model call's result, and which of its rows are this request's."""

    result: Any
    start: int
    stop: int


@dataclass
class MicroBatcher:
    """submit(texts) -> Slot. run(texts) does the model call (in `executor`) for the texts of every request in
    the batch, in submission order; its result must be indexable by those texts' positions (rows). A request
    larger than max_batch is a batch of its own; a batch never splits a request."""

    run: Callable[[list[str]], Any]
    executor: Executor
    max_batch: int = 256
    max_wait_s: float = 0.005
    on_batch: Callable[[int], None] | None = None  # called with each model call's number of texts
    _queue: asyncio.Queue = field(default_factory=asyncio.Queue, init=False)
    _carry: Pending | None = field(default=None, init=False)  # taken from the queue, left for the next batch
    _task: asyncio.Task | None = field(default=None, init=False)

    async def submit(self, texts: list[str]) -> Slot:
        loop = asyncio.get_running_loop()
        pending = Pending(list(texts), loop.create_future(), loop.time())
        await self._queue.put(pending)
        return await pending.future

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _serve_forever(self) -> None:
        while True:
            batch = await self._gather()
            await self._call(batch)

    async def _gather(self) -> list[Pending]:
        """The next batch: the oldest request, then more while they fit and its wait has not run out. Requests
        that queued up during the previous model call are taken at once (their wait ran out meanwhile)."""
        first = self._carry or await self._queue.get()
        self._carry = None
        batch, size = [first], len(first.texts)
        deadline = first.arrived + self.max_wait_s
        loop = asyncio.get_running_loop()
        while size < self.max_batch:
            if self._queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                item = self._queue.get_nowait()
            if size + len(item.texts) > self.max_batch:
                self._carry = item
                break
            batch.append(item)
            size += len(item.texts)
        return batch

    async def _call(self, batch: list[Pending]) -> None:
        live = [pending for pending in batch if not pending.future.done()]  # a client that went away is skipped
        texts = [text for pending in live for text in pending.texts]
        if not texts:
            return
        if self.on_batch is not None:
            self.on_batch(len(texts))
        try:
            result = await asyncio.get_running_loop().run_in_executor(self.executor, self.run, texts)
        except Exception as exc:  # the model failed: every request of this batch gets the error, the next may work
            for pending in live:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        start = 0
        for pending in live:
            stop = start + len(pending.texts)
            if not pending.future.done():
                pending.future.set_result(Slot(result, start, stop))
            start = stop
