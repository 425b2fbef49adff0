"""Events that say what happened, posted off the reconcile path and never twice for one cause.

Reconciles only queue Events; a couple of workers post them, best effort (an Event that cannot be
posted must never hold back a repair). They wait for the work queue to be quiet — at most
:data:`MAX_DELAY` — so a rollout across thousands of namespaces does not share the API server
with thousands of Event writes (an Event costs the API server about what a NetworkPolicy write
does). The bound is the sweep interval, longer than a rollout takes: at 30 s, a rollout of 5,000
namespaces (45 s) posted its first Events in the middle of itself, and the next policy change
shared the API server with the rest. A conflict or a failing template is announced once when it
appears, not on every reconcile while it lasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from nsbaseline import metrics, names
from nsbaseline.assessment import Assessment

logger = logging.getLogger("nsbaseline")

Involved = Mapping[str, Any]
#: The longest an Event waits for the operator to be quiet before it is posted anyway.
MAX_DELAY = 300.0


class EventSink(Protocol):
    async def post_event(
        self, involved: Involved, *, reason: str, message: str, type_: str = "Normal"
    ) -> None: ...


class EventRecorder:
    def __init__(
        self,
        sink: EventSink,
        policy_uid: Callable[[str], str | None],
        quiet: Callable[[], Awaitable[Any]] | None = None,
        on_pending: Callable[[int], None] = lambda _: None,
    ) -> None:
        self._sink = sink
        self._policy_uid = policy_uid
        self._quiet = quiet
        self._on_pending = on_pending
        self._queue: asyncio.Queue[tuple[float, Involved, str, str, str]] = asyncio.Queue()
        self._posting = 0
        self._reported: dict[str, set[tuple[str, ...]]] = {}

    def __len__(self) -> int:
        """Events not yet posted: queued, waiting for a quiet queue, or on their way."""
        return self._queue.qsize() + self._posting

    # ----- what can be said -----------------------------------------------------------------
    def emit(self, involved: Involved, reason: str, message: str, type_: str = "Normal") -> None:
        self._queue.put_nowait((time.monotonic(), involved, reason, message, type_))
        self._on_pending(len(self))

    def on_namespace(
        self, namespace: str, reason: str, message: str, type_: str = "Normal"
    ) -> None:
        involved = {"apiVersion": "v1", "kind": "Namespace", "name": namespace}
        self.emit({**involved, "namespace": namespace}, reason, message, type_)

    def on_policy(self, policy: str, reason: str, message: str) -> None:
        involved: dict[str, Any] = {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "name": policy,
        }
        uid = self._policy_uid(policy)
        if uid is not None:
            involved["uid"] = uid
        self.emit(involved, reason, message, "Warning")

    def on_object(self, namespace: str, name: str, uid: str, reason: str, message: str) -> None:
        involved = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "name": name,
            "namespace": namespace,
            "uid": uid,
        }
        self.emit(involved, reason, message, "Warning")

    def applied(self, namespace: str, pieces_by_policy: Mapping[str, Iterable[str]]) -> None:
        for policy, pieces in sorted(pieces_by_policy.items()):
            self.on_namespace(
                namespace,
                "Applied",
                f"Applied BaselinePolicy {policy}: {', '.join(sorted(pieces))}",
            )

    def problems(self, namespace: str, assessments: Mapping[str, Assessment]) -> None:
        """Announce conflicts and errors of ``namespace`` that were not there before."""
        live: set[tuple[str, ...]] = set()
        key: tuple[str, ...]
        reported = self._reported.get(namespace, set())
        for policy, assessment in assessments.items():
            for name in assessment.conflicts:
                key = ("conflict", policy, name)
                live.add(key)
                if key not in reported:
                    message = (
                        f"NetworkPolicy {namespace}/{name} exists and is not managed by "
                        f"nsbaseline; BaselinePolicy {policy} leaves it untouched"
                    )
                    self.on_policy(policy, "Conflict", message)
                    self.on_namespace(namespace, "Conflict", message, "Warning")
            for error in assessment.errors:
                key = ("error", policy, error.piece, error.message)
                live.add(key)
                if key not in reported:
                    if error.kind == "template":
                        metrics.TEMPLATE_ERRORS.labels(error.piece).inc()
                    reason = "TemplateError" if error.kind == "template" else "ApplyFailed"
                    self.on_policy(policy, reason, error.message)
        if live:
            self._reported[namespace] = live
        else:
            self._reported.pop(namespace, None)

    def forget_namespace(self, namespace: str) -> None:
        self._reported.pop(namespace, None)

    # ----- posting --------------------------------------------------------------------------
    async def run(self) -> None:
        """Post queued Events forever (run a couple of these)."""
        while True:
            since, involved, reason, message, type_ = await self._queue.get()
            self._posting += 1
            try:
                if self._quiet is not None:
                    left = MAX_DELAY - (time.monotonic() - since)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._quiet(), max(0.0, left))
                await self._sink.post_event(involved, reason=reason, message=message, type_=type_)
                metrics.WRITES.labels("create", "Event").inc()
            except Exception as exc:  # best effort; never block reconciling
                logger.debug("could not post event %s: %s", reason, exc)
            finally:
                self._posting -= 1
                self._on_pending(len(self))


__all__ = ["EventRecorder", "EventSink"]
