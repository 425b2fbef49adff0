"""A deduplicating work queue of namespace names, with retry backoff, like client-go's.

A namespace is never handed to two workers at once; asking for it again while it is being
reconciled re-queues it once, after. A failed reconcile comes back after an exponential backoff.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable


class WorkQueue:
    def __init__(
        self,
        max_backoff: float = 60.0,
        on_depth: Callable[[int], None] | None = None,
    ) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._running: set[str] = set()
        self._again: set[str] = set()
        self._enqueued_at: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._max_backoff = max_backoff
        self._on_depth = on_depth or (lambda _: None)
        #: Set whenever nothing is queued or running.
        self.idle = asyncio.Event()
        self.idle.set()

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, key: str) -> None:
        """Ask for ``key`` to be processed soon; repeated asks collapse into one."""
        if key in self._running:
            self._again.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self._enqueued_at.setdefault(key, time.monotonic())
        self._queue.put_nowait(key)
        self.idle.clear()
        self._on_depth(len(self._queued))

    def add_all(self, keys: Iterable[str]) -> None:
        for key in sorted(keys):
            self.add(key)

    async def get(self) -> tuple[str, float]:
        """The next key and when it was first asked for; the caller must call :meth:`done`."""
        key = await self._queue.get()
        self._queued.discard(key)
        self._running.add(key)
        self._on_depth(len(self._queued))
        return key, self._enqueued_at.pop(key, time.monotonic())

    def done(self, key: str, ok: bool) -> None:
        """Processing of ``key`` ended; a failure brings it back after a backoff."""
        self._running.discard(key)
        if ok:
            self._failures.pop(key, None)
        else:
            count = self._failures.get(key, 0) + 1
            self._failures[key] = count
            delay = min(self._max_backoff, 0.5 * 2 ** min(count, 10))
            asyncio.get_running_loop().call_later(delay, self.add, key)
        if key in self._again:
            self._again.discard(key)
            self.add(key)
        if not self._queued and not self._running:
            self.idle.set()

    def retries(self, key: str) -> int:
        """How many times in a row processing ``key`` has failed."""
        return self._failures.get(key, 0)


__all__ = ["WorkQueue"]
