"""The independent observer: one cluster-wide watch on NetworkPolicies, timestamped on arrival.

Every figure that says "seen" is the moment this watch delivered the event, so operator and
reference are judged by the same eye. Waiters are keyed by object, so at tens of thousands of
objects each event costs one dict lookup plus a spec fingerprint.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping
from typing import Any, TypeVar

from kubeaccess import Api, ApiFailure

from nsbaseline import canonical

Key = tuple[str, str]
W = TypeVar("W", bound="Waiter")
#: The fingerprint of an object that does not exist.
ABSENT = ""


def spec_fingerprint(spec: Mapping[str, Any]) -> str:
    """Equal for the rendered spec and the same spec as the API server returns it (defaults)."""
    return canonical.fingerprint(canonical.spec(spec))


class Waiter:
    """Resolves with the arrival time of the event that satisfied it."""

    def __init__(self) -> None:
        self.future: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def keys(self) -> list[Key]:
        raise NotImplementedError

    def feed(self, key: Key, fingerprint: str, at: float) -> None:
        raise NotImplementedError

    def _done(self, at: float) -> None:
        if not self.future.done():
            self.future.set_result(at)


class AllMatch(Waiter):
    """Every key holds its expected spec at the same time."""

    def __init__(self, expected: Mapping[Key, str], current: Mapping[Key, str]) -> None:
        super().__init__()
        self.expected = dict(expected)
        self.missing = {k for k, fp in self.expected.items() if current.get(k) != fp}
        #: When the first key came to its expected spec: a run's start-up latency, apart from
        #: its pace.
        self.first: float | None = None
        if not self.missing:
            self._done(time.time())

    def keys(self) -> list[Key]:
        return list(self.expected)

    def feed(self, key: Key, fingerprint: str, at: float) -> None:
        if fingerprint == self.expected[key]:
            if self.first is None and key in self.missing:
                self.first = at
            self.missing.discard(key)
            if not self.missing:
                self._done(at)
        else:
            self.missing.add(key)

    @property
    def progress(self) -> str:
        return f"{len(self.expected) - len(self.missing)}/{len(self.expected)}"


class Restored(Waiter):
    """The object leaves its expected spec (the tamper) and comes back to it (the repair)."""

    def __init__(self, key: Key, expected: str) -> None:
        super().__init__()
        self.key = key
        self.expected = expected
        self.tampered = False

    def keys(self) -> list[Key]:
        return [self.key]

    def feed(self, key: Key, fingerprint: str, at: float) -> None:
        if fingerprint != self.expected:
            self.tampered = True
        elif self.tampered:
            self._done(at)


class Watcher:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.specs: dict[Key, str] = {}
        self.events = 0
        self._waiters: dict[Key, list[Waiter]] = {}
        self._task: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        await self.synced.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def add(self, waiter: W) -> W:
        if not waiter.future.done():
            for key in waiter.keys():  # noqa: SIM118 - a method of Waiter, not a dict
                self._waiters.setdefault(key, []).append(waiter)
            waiter.future.add_done_callback(lambda _: self._remove(waiter))
        return waiter

    def _remove(self, waiter: Waiter) -> None:
        for key in waiter.keys():  # noqa: SIM118 - a method of Waiter, not a dict
            waiters = self._waiters.get(key)
            if waiters is not None:
                with contextlib.suppress(ValueError):
                    waiters.remove(waiter)
                if not waiters:
                    del self._waiters[key]

    def _observe(self, key: Key, fingerprint: str, at: float) -> None:
        if fingerprint == ABSENT:
            self.specs.pop(key, None)
        else:
            self.specs[key] = fingerprint
        for waiter in list(self._waiters.get(key, ())):
            waiter.feed(key, fingerprint, at)

    async def _list(self) -> str:
        path = "/apis/networking.k8s.io/v1/networkpolicies"
        params = {"limit": "500"}
        specs: dict[Key, str] = {}
        while True:
            page = await self.api.request("GET", path, params=params)
            for obj in page.get("items", []):
                meta = obj["metadata"]
                specs[(meta["namespace"], meta["name"])] = spec_fingerprint(obj.get("spec") or {})
            cont = page["metadata"].get("continue")
            if not cont:
                now = time.time()
                for key in set(self.specs) - set(specs):
                    self._observe(key, ABSENT, now)
                for key, fp in specs.items():
                    if self.specs.get(key) != fp:
                        self._observe(key, fp, now)
                return str(page["metadata"]["resourceVersion"])
            params = {"limit": "500", "continue": cont}

    async def _run(self) -> None:
        path = "/apis/networking.k8s.io/v1/networkpolicies"
        rv = ""
        while True:
            try:
                if not rv:
                    rv = await self._list()
                    self.synced.set()
                params = {
                    "watch": "1",
                    "resourceVersion": rv,
                    "allowWatchBookmarks": "true",
                    "timeoutSeconds": "1800",
                }
                async with self.api.session.get(
                    self.api.url(path, params), headers=self.api.access.headers
                ) as resp:
                    if resp.status >= 400:
                        raise ApiFailure(resp.status, await resp.text())
                    async for line in resp.content:
                        at = time.time()
                        event = json.loads(line)
                        kind = event["type"]
                        obj = event["object"]
                        if kind == "ERROR":
                            rv = "" if obj.get("code") == 410 else rv
                            break
                        meta = obj["metadata"]
                        rv = str(meta.get("resourceVersion", rv))
                        if kind == "BOOKMARK":
                            continue
                        self.events += 1
                        key = (meta["namespace"], meta["name"])
                        fp = (
                            ABSENT if kind == "DELETED" else spec_fingerprint(obj.get("spec") or {})
                        )
                        self._observe(key, fp, at)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a dropped watch: resume from the last rv, or relist
                print(f"  (watch interrupted: {exc!r}; resuming)", flush=True)
                if isinstance(exc, ApiFailure) and exc.status == 410:
                    rv = ""
                await asyncio.sleep(0.5)
