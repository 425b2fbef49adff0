"""The NetworkPolicies of ours that the watch shows, per namespace (a :class:`kube.watch.Mirror`).

Only objects carrying our managed-by label are watched (a server-side label selector), so the
operator's memory and start-up grow with what it manages, not with every NetworkPolicy in the
cluster. Foreign objects that hold one of our names are found when we write (see
:mod:`nsbaseline.reconcile.executor`).

A relist (start-up, 410 Gone, a lost connection) is compared with what was known: objects that
vanished meanwhile are reported as deleted — a watch alone never reports them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from nsbaseline.observed import ManagedObject

#: Told of every change: (the object as last seen, deleted?, found by a relist rather than an event)
Change = Callable[[ManagedObject, bool, bool], None]
#: Our own write of (namespace, name, version), when an event is its echo (saves reducing it).
Known = Callable[[str, str, int], ManagedObject | None]


def _version(meta: dict[str, Any]) -> int:
    try:
        return int(meta.get("resourceVersion") or -1)
    except ValueError:
        return -1


class ObservedObjects:
    def __init__(self, on_change: Change, known: Known | None = None) -> None:
        self._by_namespace: dict[str, dict[str, ManagedObject]] = {}
        self._relisting: dict[str, dict[str, ManagedObject]] | None = None
        self._on_change = on_change
        self._known = known or (lambda *_: None)
        #: Set once the first listing is complete: before that, absence means nothing.
        self.ready = asyncio.Event()

    def in_namespace(self, namespace: str) -> list[ManagedObject]:
        return list(self._by_namespace.get(namespace, {}).values())

    def namespaces(self) -> list[str]:
        return list(self._by_namespace)

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_namespace.values())

    # ----- Mirror protocol ------------------------------------------------------------------
    def relist_begin(self) -> None:
        self._relisting = {}

    def relist_page(self, items: list[dict[str, Any]]) -> None:
        assert self._relisting is not None
        for body in items:
            obj = ManagedObject.from_body(body)
            self._relisting.setdefault(obj.namespace, {})[obj.name] = obj

    def relist_end(self, resource_version: str) -> None:
        fresh, self._relisting = self._relisting or {}, None
        old, self._by_namespace = self._by_namespace, fresh
        first = not self.ready.is_set()
        self.ready.set()
        if first:
            return  # the start-up sweep looks at everything anyway
        for namespace in set(old) | set(fresh):
            before, after = old.get(namespace, {}), fresh.get(namespace, {})
            for name in set(before) | set(after):
                was, now = before.get(name), after.get(name)
                if now is None and was is not None:
                    self._on_change(was, True, True)
                elif now is not None and (
                    was is None or was.resource_version != now.resource_version
                ):
                    self._on_change(now, False, True)

    def event(self, kind: str, body: dict[str, Any]) -> None:
        meta = body.get("metadata") or {}
        mine = self._known(meta.get("namespace", ""), meta.get("name", ""), _version(meta))
        obj = mine if mine is not None and kind != "DELETED" else ManagedObject.from_body(body)
        objects = self._by_namespace.setdefault(obj.namespace, {})
        if kind == "DELETED":
            objects.pop(obj.name, None)
            if not objects:
                del self._by_namespace[obj.namespace]
            self._on_change(obj, True, False)
            return
        objects[obj.name] = obj
        self._on_change(obj, False, False)


__all__ = ["Change", "ObservedObjects"]
