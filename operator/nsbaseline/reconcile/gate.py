"""May this replica write? Always when standalone; with peering, when no live peer outranks it.

Kopf decides which replica is active from the shared ClusterKopfPeering object and pauses its own
watches on the others, but it keeps that decision to itself. Our NetworkPolicy watch and writes
are not Kopf's, so the gate reads the same object with the same rule — a live peer with a higher
priority, or another live peer with the same one, pauses us — and follows it: a standby keeps
its view of the cluster warm and takes over the moment the active replica's record expires.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("nsbaseline")


def _parse_time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


def blocking_peers(
    status: dict[str, Any], identity: str, priority: int, now: datetime.datetime
) -> list[tuple[str, datetime.datetime]]:
    """Live peers that keep ``identity`` paused, with the moment each record expires. Pure."""
    blocking = []
    for peer, info in (status or {}).items():
        if peer == identity or not isinstance(info, dict):
            continue
        seen = _parse_time(info.get("lastseen")) or now
        deadline = seen + datetime.timedelta(seconds=int(info.get("lifetime", 60)))
        if deadline <= now:
            continue  # dead: it did not renew its record in time
        if int(info.get("priority", 0)) >= priority:
            blocking.append((peer, deadline))
    return blocking


class ActiveGate:
    """``active`` is set while this replica may reconcile; ``on_change`` hears every flip."""

    def __init__(
        self,
        peering: str | None,
        identity: str = "",
        priority: int = 0,
        on_change: Callable[[bool], None] | None = None,
        clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.peering = peering
        self._identity = identity
        self._priority = priority
        self._on_change = on_change or (lambda _: None)
        self._clock = clock
        self._timer: asyncio.TimerHandle | None = None
        self._last: dict[str, Any] = {}
        self.active = asyncio.Event()
        if peering is None:
            self.active.set()

    def _set(self, active: bool) -> None:
        if active == self.active.is_set():
            return
        if active:
            logger.info("peering: this replica is active")
            self.active.set()
        else:
            logger.info("peering: another replica is active; standing by")
            self.active.clear()
        self._on_change(active)

    def evaluate(self, body: dict[str, Any] | None) -> None:
        """Decide from the peering object (None: it does not exist, so Kopf is paused too)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if body is None:
            self._last = {}
            self._set(False)
            return
        self._last = body
        status = body.get("status") or {}
        if self._identity not in status:
            self._set(False)  # Kopf has not announced us yet: it is not running handlers either
            return
        blocking = blocking_peers(status, self._identity, self._priority, self._clock())
        self._set(not blocking)
        if blocking:
            delay = (min(d for _, d in blocking) - self._clock()).total_seconds() + 0.1
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(max(0.1, delay), self.evaluate, self._last)

    # ----- kube.watch.Mirror for the peering object -----------------------------------------
    def relist_begin(self) -> None:
        self._listed: dict[str, Any] | None = None

    def relist_page(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            if (item.get("metadata") or {}).get("name") == self.peering:
                self._listed = item

    def relist_end(self, resource_version: str) -> None:
        self.evaluate(self._listed)

    def event(self, kind: str, body: dict[str, Any]) -> None:
        if (body.get("metadata") or {}).get("name") != self.peering:
            return
        self.evaluate(None if kind == "DELETED" else body)


__all__ = ["ActiveGate", "blocking_peers"]
