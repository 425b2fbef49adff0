"""Compliance reports (PolicyReport or OpenReports Report), written only on change, off the
repair path.

Reconciles record each namespace's results here (:func:`nsbaseline.reports.namespace_results`,
pure and cheap). A loop of its own turns the namespaces whose results changed into reports and
writes only those that differ from what the API server holds: in batches, a few requests at a
time, and only while the work queue is idle — each write checks, and a busy queue defers it, up
to :data:`MAX_DELAY` after the change; a repair's writes never wait behind a report, and a rollout
does not share the API server with thousands of report writes. The reports that exist are listed
once (paginated, label-selected) when the report CRD is found, so a restart on a converged cluster
writes nothing.

The CRD may come after the operator: :class:`CrdPresence`, fed by a watch of that one CRD (by
name), switches reports on when it is Established and off when it goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from nsbaseline import metrics, names
from nsbaseline.reports import (
    REPORT_NAME,
    PieceResult,
    ReportFormat,
    content_key,
    report_body,
    timestamps,
)

logger = logging.getLogger("nsbaseline")

#: The longest a changed report waits for the work queue to be idle before it is written anyway.
MAX_DELAY = 30.0
#: Reports written per flush, at most this many requests in flight; the loop yields to other
#: tasks after every COMPARE_STEP comparisons (a start-up compares every namespace).
BATCH = 200
IN_FLIGHT = 4
COMPARE_STEP = 100
#: A report the API server refused is tried again after this long (never in a tight loop).
RETRY_AFTER = 30.0
SELECTOR = f"{names.MANAGED_BY_LABEL}={names.MANAGED_BY_VALUE}"


class ReportWriter(Protocol):
    async def list_reports(
        self, group: str, version: str, plural: str, label_selector: str
    ) -> list[dict[str, Any]]: ...

    async def apply_report(
        self, group: str, version: str, plural: str, body: Mapping[str, Any]
    ) -> None: ...

    async def delete_report(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> None: ...


@dataclass(frozen=True)
class _Stored:
    """What the API server holds for one namespace: its content key and result timestamps."""

    key: str
    stamps: dict[str, dict[str, int]]


class CrdPresence:
    """Whether the report CRD is installed and usable; a :class:`nsbaseline.kube.watch.Mirror`
    for a watch of the CustomResourceDefinitions selected by the CRD's name."""

    def __init__(self, fmt: ReportFormat, on_change: Callable[[bool], None]) -> None:
        self._fmt = fmt
        self._on_change = on_change
        self._listed = False
        self.present = False

    @property
    def params(self) -> dict[str, str]:
        return {"fieldSelector": f"metadata.name={self._fmt.crd_name}"}

    def _usable(self, crd: Mapping[str, Any]) -> bool:
        if (crd.get("metadata") or {}).get("name") != self._fmt.crd_name:
            return False
        status = crd.get("status") or {}
        established = any(
            c.get("type") == "Established" and c.get("status") == "True"
            for c in status.get("conditions") or ()
        )
        versions = (crd.get("spec") or {}).get("versions") or ()
        served = any(v.get("name") == self._fmt.version and v.get("served") for v in versions)
        return established and served

    def _set(self, present: bool) -> None:
        if present == self.present:
            return
        self.present = present
        what = f"{self._fmt.kind} CRD {self._fmt.crd_name} ({self._fmt.api_version})"
        if present:
            logger.info("%s found: keeping a %s per selected namespace", what, self._fmt.kind)
        else:
            logger.info("%s not installed: no compliance reports", what)
        self._on_change(present)

    def relist_begin(self) -> None:
        self._listed = False

    def relist_page(self, items: list[dict[str, Any]]) -> None:
        self._listed = self._listed or any(self._usable(item) for item in items)

    def relist_end(self, resource_version: str) -> None:
        self._set(self._listed)

    def event(self, kind: str, body: dict[str, Any]) -> None:
        self._set(kind != "DELETED" and self._usable(body))


class ReportBook:
    def __init__(
        self,
        writer: ReportWriter,
        fmt: ReportFormat,
        clock: Callable[[], datetime.datetime],
        idle: asyncio.Event | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._writer = writer
        self._timer = timer
        self._fmt = fmt
        self._clock = clock
        #: Set while the work queue is idle (None: never wait).
        self._idle = idle
        #: namespace -> its latest results (empty: selected by nothing, so no report).
        self._book: dict[str, tuple[PieceResult, ...]] = {}
        self._dirty: set[str] = set()
        #: When the oldest change not yet written was recorded (for MAX_DELAY).
        self._oldest = 0.0
        self._retry: set[str] = set()
        self._retry_at = 0.0
        #: namespace -> what the API server holds (known once listed, then kept by our writes).
        self._stored: dict[str, _Stored] = {}
        self._listed = False
        self.available = False
        self.presence = CrdPresence(fmt, self._crd_changed)

    @property
    def dirty(self) -> bool:
        return bool(self._dirty)

    def record(self, namespace: str, results: tuple[PieceResult, ...]) -> None:
        """The results of ``namespace`` after a reconcile; a change makes it dirty."""
        if self._book.get(namespace) != results:
            self._book[namespace] = results
            self._mark({namespace})
            self._gauges()

    def _mark(self, namespaces: set[str]) -> None:
        if not self._dirty:
            self._oldest = self._timer()
        self._dirty |= namespaces

    def _defer(self) -> bool:
        """Whether a report write must wait: the queue is busy and the change is not overdue."""
        if self._idle is None or self._idle.is_set():
            return False
        return self._timer() < self._oldest + MAX_DELAY

    def forget(self, namespace: str) -> None:
        """``namespace`` is gone or going: its report goes with it (nothing to delete)."""
        self._book.pop(namespace, None)
        self._stored.pop(namespace, None)
        self._dirty.discard(namespace)
        self._retry.discard(namespace)

    def _crd_changed(self, present: bool) -> None:
        self.available = present
        self._listed = False
        self._stored.clear()
        self._gauges()

    def _gauges(self) -> None:
        pending = len(self._dirty) + len(self._retry) if self.available else 0
        metrics.REPORTS_PENDING.set(pending)
        metrics.REPORTS_STORED.set(len(self._stored) if self._listed else 0)

    async def _list(self) -> bool:
        fmt = self._fmt
        try:
            items = await self._writer.list_reports(fmt.group, fmt.version, fmt.plural, SELECTOR)
        except Exception as exc:
            logger.warning("could not list %s objects: %s", fmt.kind, exc)
            return False
        self._stored = {
            meta["namespace"]: _Stored(content_key(item), timestamps(item))
            for item in items
            if (meta := item.get("metadata") or {}).get("name") == REPORT_NAME
            and meta.get("namespace")
        }
        self._listed = True
        self._mark(set(self._book))  # compare everything recorded so far
        logger.info("%d %s objects of ours exist", len(self._stored), fmt.kind)
        return True

    async def flush(self) -> None:
        """Compare dirty namespaces with what is stored; write (or delete) up to :data:`BATCH`
        reports that differ, each only while the queue is idle or the change is overdue."""
        if not self.available or (not self._listed and not await self._list()):
            return
        now = self._clock()
        work: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        for count, namespace in enumerate(sorted(self._dirty)):
            if len(work) >= BATCH:
                break
            if count and count % COMPARE_STEP == 0:
                await asyncio.sleep(0)  # let reconciles run between comparisons
            self._dirty.discard(namespace)
            results = self._book.get(namespace)
            stored = self._stored.get(namespace)
            if results is None:
                continue  # forgotten meanwhile
            if not results:
                if stored is not None:
                    work.append((namespace, functools.partial(self._delete, namespace)))
                continue
            previous = stored.stamps if stored else None
            body = report_body(self._fmt, namespace, results, now, previous)
            key = content_key(body)
            if stored is None or stored.key != key:
                work.append((namespace, functools.partial(self._apply, namespace, body, key)))
        semaphore = asyncio.Semaphore(IN_FLIGHT)

        async def limited(namespace: str, job: Callable[[], Awaitable[None]]) -> None:
            async with semaphore:
                if self._defer():
                    self._dirty.add(namespace)  # keeps its age: overdue stays overdue
                    return
                await job()

        await asyncio.gather(*(limited(namespace, job) for namespace, job in work))
        self._gauges()

    async def _apply(self, namespace: str, body: dict[str, Any], key: str) -> None:
        fmt = self._fmt
        try:
            await self._writer.apply_report(fmt.group, fmt.version, fmt.plural, body)
        except Exception as exc:
            self._failed(namespace, "write", exc)
            return
        metrics.WRITES.labels("apply", fmt.kind).inc()
        if namespace in self._book:  # not forgotten while the write was in flight
            self._stored[namespace] = _Stored(key, timestamps(body))

    async def _delete(self, namespace: str) -> None:
        fmt = self._fmt
        try:
            await self._writer.delete_report(
                fmt.group, fmt.version, fmt.plural, namespace, REPORT_NAME
            )
        except Exception as exc:
            self._failed(namespace, "delete", exc)
            return
        metrics.WRITES.labels("delete", fmt.kind).inc()
        self._stored.pop(namespace, None)

    def _failed(self, namespace: str, verb: str, exc: Exception) -> None:
        # Refusals and lost connections alike: try again later, never in a tight loop.
        logger.warning(
            "could not %s the %s of namespace %s: %s", verb, self._fmt.kind, namespace, exc
        )
        if namespace in self._book:
            if not self._retry:
                self._retry_at = self._timer() + RETRY_AFTER
            self._retry.add(namespace)

    async def run(self, active: asyncio.Event, interval: float = 1.0) -> None:
        """Flush forever, on the active replica only; relist whenever this replica turns active
        (the other one may have written meanwhile)."""
        was_active = False
        while True:
            await asyncio.sleep(interval)
            if not active.is_set():
                was_active = False
                continue
            if not was_active:
                was_active, self._listed = True, False
            if self._retry and self._timer() >= self._retry_at:
                self._mark(self._retry)
                self._retry.clear()
            if not self.available or (self._listed and not self._dirty):
                continue
            left = self._oldest + MAX_DELAY - self._timer()
            if self._idle is not None and left > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._idle.wait(), left)
            await self.flush()


__all__ = ["BATCH", "MAX_DELAY", "CrdPresence", "ReportBook", "ReportWriter"]
