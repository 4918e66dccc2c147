"""serving/batcher.py: concurrent requests share one model call up to max_batch texts or max_wait, a request is never
split, each gets its own rows back, and a failed call fails only its own batch."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from textclf_cli.serving.batcher import MicroBatcher


class Recorder:
    """A model call that echoes its texts upper-cased, records each call's texts, and fails on the text "boom"."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[list[str]] = []
        self.threads: set[str] = set()
        self.delay = delay

    def __call__(self, texts: list[str]) -> list[str]:
        self.calls.append(list(texts))
        self.threads.add(threading.current_thread().name)
        if "boom" in texts:
            raise RuntimeError("the model failed")
        if self.delay:
            threading.Event().wait(self.delay)
        return [text.upper() for text in texts]


async def serve(recorder: Recorder, requests: list[list[str]], **settings) -> list:
    """Submit every request at once; returns each one's rows (or its exception)."""
    with ThreadPoolExecutor(1, "model") as executor:
        batcher = MicroBatcher(recorder, executor, **settings)
        batcher.start()
        try:
            slots = await asyncio.gather(*(batcher.submit(texts) for texts in requests), return_exceptions=True)
        finally:
            await batcher.stop()
    return [slot if isinstance(slot, Exception) else slot.result[slot.start: slot.stop] for slot in slots]


def test_concurrent_requests_share_one_model_call_off_the_event_loop() -> None:
    recorder = Recorder()
    results = asyncio.run(serve(recorder, [[f"t{i}"] for i in range(10)], max_batch=256, max_wait_s=0.05))
    assert recorder.calls == [[f"t{i}" for i in range(10)]]
    assert results == [[f"T{i}"] for i in range(10)]
    assert recorder.threads == {"model_0"}  # the worker thread, not the event loop's


def test_a_batch_stops_at_max_batch_and_never_splits_a_request() -> None:
    recorder = Recorder()
    requests = [[f"r{i}a", f"r{i}b", f"r{i}c"] for i in range(5)]
    results = asyncio.run(serve(recorder, requests, max_batch=7, max_wait_s=0.05))
    assert [len(call) for call in recorder.calls] == [6, 6, 3]
    assert results == [[text.upper() for text in texts] for texts in requests]


def test_a_request_larger_than_max_batch_is_a_batch_of_its_own() -> None:
    recorder = Recorder()
    results = asyncio.run(serve(recorder, [["a"], ["b"] * 5, ["c"]], max_batch=2, max_wait_s=0.05))
    assert recorder.calls == [["a"], ["b"] * 5, ["c"]]
    assert results == [["A"], ["B"] * 5, ["C"]]


def test_a_lone_request_waits_no_longer_than_max_wait() -> None:
    async def timed() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await serve(Recorder(), [["alone"]], max_batch=256, max_wait_s=0.02)
        return loop.time() - started

    assert asyncio.run(timed()) < 0.5


def test_requests_that_arrive_during_a_model_call_form_the_next_batch() -> None:
    recorder = Recorder(delay=0.1)

    async def staggered() -> None:
        with ThreadPoolExecutor(1, "model") as executor:
            batcher = MicroBatcher(recorder, executor, max_batch=256, max_wait_s=0.0)
            batcher.start()
            first = asyncio.ensure_future(batcher.submit(["first"]))
            await asyncio.sleep(0.03)  # the first call is running now
            later = await asyncio.gather(*(batcher.submit([f"later{i}"]) for i in range(4)))
            await first
            await batcher.stop()
            assert [slot.result[slot.start: slot.stop] for slot in later] == [[f"LATER{i}"] for i in range(4)]

    asyncio.run(staggered())
    assert recorder.calls == [["first"], [f"later{i}" for i in range(4)]]


def test_a_failed_model_call_fails_its_own_batch_and_the_next_one_works() -> None:
    recorder = Recorder()

    async def failing_then_working() -> tuple[list, list]:
        with ThreadPoolExecutor(1, "model") as executor:
            batcher = MicroBatcher(recorder, executor, max_batch=256, max_wait_s=0.05)
            batcher.start()
            failed = await asyncio.gather(batcher.submit(["ok"]), batcher.submit(["boom"]), return_exceptions=True)
            slot = await batcher.submit(["after"])
            await batcher.stop()
            return failed, slot.result[slot.start: slot.stop]

    failed, after = asyncio.run(failing_then_working())
    assert all(isinstance(result, RuntimeError) for result in failed)
    assert after == ["AFTER"]


@pytest.mark.parametrize("sizes", [[1, 1, 1], [2, 3, 1, 4]])
def test_on_batch_sees_each_model_call_size(sizes: list[int]) -> None:
    seen: list[int] = []
    requests = [[f"x{i}"] * size for i, size in enumerate(sizes)]
    asyncio.run(serve(Recorder(), requests, max_batch=256, max_wait_s=0.05, on_batch=seen.append))
    assert seen == [sum(sizes)]
