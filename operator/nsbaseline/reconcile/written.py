"""What we wrote that the watch has not shown yet: an overlay, so nothing is written twice.

Our own writes come back through the watch a moment later. Until they do, the result of each
write (the object as stored, or a tombstone for a delete) is laid over the watched state, so a
reconcile in between does not mistake the old state for drift. The echo of a write — the very
version we wrote, or the deletion we sent — needs no reconcile: it tells us nothing new.

The echo can also arrive before the answer to the write itself (the watch and the write are two
connections). So a write is announced (:meth:`WriteCache.sending`) before it is sent, and events
for that object meanwhile are held until the answer says which version the write made: the
echo, or anything older, then needs nothing; a newer version means somebody changed the object
after us, and the namespace is checked again (``recheck``). Without this, about one namespace in
four was reconciled a second time at convergence, for nothing.

Also remembered: the hash of what we last applied per object, so restoring it after someone
changed it counts as a repair (metrics, a Repaired Event).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nsbaseline.observed import ManagedObject

#: Forget an overlay entry the watch never confirmed after this long (the watch was restarted
#: and its relist is authoritative by then).
OVERLAY_TTL = 30.0


@dataclass
class _Entry:
    obj: ManagedObject | None  # None: a tombstone for an object we deleted
    version: int
    since: float = field(default_factory=time.monotonic)


#: What the watch showed of an object while our write of it was on its way: nothing yet, or
#: the newest (version, deleted) it saw.
_Early = tuple[int, bool] | None


class WriteCache:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        recheck: Callable[[str], None] | None = None,
    ) -> None:
        self._overlay: dict[str, dict[str, _Entry]] = {}
        self._applied: dict[tuple[str, str], str] = {}
        self._inflight: dict[tuple[str, str], _Early] = {}
        self._clock = clock
        self._recheck = recheck or (lambda _: None)

    # ----- recording our writes -------------------------------------------------------------
    def sending(self, namespace: str, name: str) -> None:
        """A write of ``name`` is about to be sent: hold its watch events until the answer."""
        self._inflight[(namespace, name)] = None

    def unsent(self, namespace: str, name: str) -> None:
        """The write failed or was not needed: events held meanwhile are news after all."""
        if self._inflight.pop((namespace, name), None) is not None:
            self._recheck(namespace)

    def wrote(self, obj: ManagedObject, digest: str) -> None:
        """We created or updated ``obj`` (as stored by the API server) to the desired ``digest``."""
        self._applied[(obj.namespace, obj.name)] = digest
        early = self._inflight.pop((obj.namespace, obj.name), None)
        if early is not None and early[0] >= obj.version:
            if early[0] > obj.version:
                self._recheck(obj.namespace)  # changed (or deleted) after our write
            self._drop(obj.namespace, obj.name)  # an older write's entry is outdated too
            return  # the watch has shown our write already: nothing to lay over it
        self._overlay.setdefault(obj.namespace, {})[obj.name] = _Entry(
            obj, obj.version, self._clock()
        )

    def deleted(self, namespace: str, name: str, watched: list[ManagedObject]) -> None:
        """We deleted ``name``: hide every version of it we knew until the watch says so.

        The tombstone must cover the version our own last apply produced too (possibly still
        only in the overlay when the watch lags): a stale allow-dns taken for present would let
        default-deny isolate egress without DNS. Only the DELETED event or a newer version (a
        re-creation) retires it.
        """
        self._applied.pop((namespace, name), None)
        early = self._inflight.pop((namespace, name), None)
        if early is not None and early[1]:
            # The watch has shown the deletion already: nothing left to hide, and an entry of an
            # earlier write must not bring the object back.
            self._drop(namespace, name)
            return
        known = [o.version for o in watched if o.name == name]
        earlier = self._overlay.get(namespace, {}).get(name)
        if earlier is not None:
            known.append(earlier.version)
        if early is not None:
            known.append(early[0])
        self._overlay.setdefault(namespace, {})[name] = _Entry(
            None, max(known, default=0) + 1, self._clock()
        )

    def applied(self) -> dict[tuple[str, str], str]:
        """(namespace, name) -> hash of what we last applied there."""
        return self._applied

    def forget_namespace(self, namespace: str) -> None:
        self._overlay.pop(namespace, None)
        for key in [k for k in self._applied if k[0] == namespace]:
            del self._applied[key]

    # ----- the watch catching up ------------------------------------------------------------
    def seen(self, obj: ManagedObject, deleted: bool) -> bool:
        """A watch event for ``obj``: retire our overlay once the watch has caught up with it.

        Returns True when the event is just the echo of our own last write, which needs no
        reconcile, or when a write of the object is on its way (then its answer decides). Any
        other change arrives with a newer version.
        """
        key = (obj.namespace, obj.name)
        if key in self._inflight:
            early = self._inflight[key]
            if early is None or obj.version >= early[0]:
                self._inflight[key] = (obj.version, deleted)
            return True
        entries = self._overlay.get(obj.namespace)
        entry = entries.get(obj.name) if entries else None
        if entry is None or entries is None:
            return False
        if entry.obj is None:
            if deleted:
                self._drop(obj.namespace, obj.name)
                return True
            if obj.version >= entry.version:  # re-created by someone after our delete
                self._drop(obj.namespace, obj.name)
            return False
        if obj.version >= entry.version:
            self._drop(obj.namespace, obj.name)
            return obj.version == entry.version and not deleted
        return False

    def _drop(self, namespace: str, name: str) -> None:
        entries = self._overlay.get(namespace)
        if entries is not None:
            entries.pop(name, None)
            if not entries:
                del self._overlay[namespace]

    def known(self, namespace: str, name: str, version: int) -> ManagedObject | None:
        """Our own write of exactly this version, if it is one: its echo needs no parsing."""
        entries = self._overlay.get(namespace)
        entry = entries.get(name) if entries else None
        if entry is not None and entry.obj is not None and entry.version == version:
            return entry.obj
        return None

    def correct(self, namespace: str, watched: list[ManagedObject]) -> list[ManagedObject]:
        """The watched objects of ``namespace``, corrected by writes the watch has not shown."""
        entries = self._overlay.get(namespace)
        if not entries:
            return watched
        by_name = {o.name: o for o in watched}
        now = self._clock()
        for name, entry in list(entries.items()):
            if now - entry.since > OVERLAY_TTL:
                self._drop(namespace, name)
                continue
            current = by_name.get(name)
            if current is not None and current.version >= entry.version:
                continue
            if entry.obj is None:
                by_name.pop(name, None)
            else:
                by_name[name] = entry.obj
        return list(by_name.values())

    def pending(self) -> int:
        """Writes the watch has not confirmed yet."""
        return sum(len(v) for v in self._overlay.values())


__all__ = ["OVERLAY_TTL", "WriteCache"]
