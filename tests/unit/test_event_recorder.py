"""Events: held until the work queue is quiet, and counted until they are out.

The count is what ``nsbaseline_events_pending`` shows; the benchmark waits for it to reach zero
before it times anything else, so an Event backlog is never billed to the next window.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from nsbaseline.reconcile.events import EventRecorder, Involved


class GatedSink:
    """Posts only when let through; ``fail`` makes every post raise."""

    def __init__(self, fail: bool = False) -> None:
        self.gate = asyncio.Event()
        self.fail = fail
        self.posted: list[str] = []

    async def post_event(
        self, involved: Involved, *, reason: str, message: str, type_: str = "Normal"
    ) -> None:
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("the API server said no")
        self.posted.append(message)


def recorder(sink: GatedSink, quiet: Any = None, seen: list[int] | None = None) -> EventRecorder:
    record = seen.append if seen is not None else (lambda _: None)
    return EventRecorder(sink, lambda _: None, quiet, record)


async def stop(worker: asyncio.Task[None]) -> None:
    worker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await worker


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_an_event_is_pending_until_its_post_has_returned() -> None:
    async def scenario() -> None:
        sink, seen = GatedSink(), list[int]()
        events = recorder(sink, seen=seen)
        events.on_namespace("team-a", "Applied", "one")
        events.on_namespace("team-b", "Applied", "two")
        worker = asyncio.create_task(events.run())
        await settle()
        assert len(events) == 2  # one on its way, one queued
        sink.gate.set()
        await settle()
        assert sink.posted == ["one", "two"]
        assert len(events) == 0
        assert seen[:2] == [1, 2] and seen[-1] == 0
        await stop(worker)

    asyncio.run(scenario())


def test_an_event_that_could_not_be_posted_is_no_longer_pending() -> None:
    async def scenario() -> None:
        sink, seen = GatedSink(fail=True), list[int]()
        events = recorder(sink, seen=seen)
        events.on_namespace("team-a", "Applied", "one")
        worker = asyncio.create_task(events.run())
        sink.gate.set()
        await settle()
        assert sink.posted == []
        assert len(events) == 0 and seen[-1] == 0
        await stop(worker)

    asyncio.run(scenario())


def test_events_wait_for_a_quiet_queue_and_count_as_pending_meanwhile() -> None:
    async def scenario() -> None:
        sink, quiet = GatedSink(), asyncio.Event()
        sink.gate.set()
        events = recorder(sink, quiet=quiet.wait)
        events.on_namespace("team-a", "Applied", "one")
        worker = asyncio.create_task(events.run())
        await settle()
        assert sink.posted == [] and len(events) == 1
        quiet.set()
        await settle()
        assert sink.posted == ["one"] and len(events) == 0
        await stop(worker)

    asyncio.run(scenario())
