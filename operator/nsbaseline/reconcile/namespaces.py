"""Every Namespace of the cluster as selectors and templates see it (a :class:`kube.watch.Mirror`).

The operator needs each namespace's name, labels, annotations and whether it is terminating —
nothing else, and nothing Kopf keeps per object. Kopf's namespace index held a worker with the
whole body for every namespace until the last one was listed, plus per-object memory for ever:
that was most of the operator's memory and start-up time at 10,000 namespaces (bench/README.md).
This mirror is filled page by page from a paginated listing and keeps one small frozen
:class:`~nsbaseline.model.Namespace` per name.

Only changes that matter to a reconcile are passed on: a namespace's status or managed fields
changing wakes nothing. A namespace created while we watch is passed on apart (``on_new``): the
reconciler waits a few milliseconds before writing into it (see
:data:`nsbaseline.reconcile.reconciler.NEW_NAMESPACE_GRACE`). A relist (410 Gone, a lost
connection) is compared with what was known, so a namespace deleted or relabelled while nobody
watched is reconciled too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from nsbaseline.model import Namespace

#: Told the name of every namespace whose view changed (added, changed or gone).
Changed = Callable[[str], None]


class ObservedNamespaces:
    """The namespaces as last listed or watched; ``ready`` once the first listing is whole."""

    def __init__(self, on_change: Changed, on_new: Changed | None = None) -> None:
        self._by_name: dict[str, Namespace] = {}
        self._relisting: dict[str, Namespace] | None = None
        self._on_change = on_change
        self._on_new = on_new or on_change
        #: Before the first listing is complete, a missing namespace means nothing.
        self.ready = asyncio.Event()

    def namespace(self, name: str) -> Namespace | None:
        return self._by_name.get(name)

    def namespace_names(self) -> Iterable[str]:
        return list(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    # ----- Mirror protocol ------------------------------------------------------------------
    def relist_begin(self) -> None:
        self._relisting = {}

    def relist_page(self, items: list[dict[str, Any]]) -> None:
        assert self._relisting is not None
        for body in items:
            namespace = Namespace.from_body(body)
            self._relisting[namespace.name] = namespace

    def relist_end(self, resource_version: str) -> None:
        fresh, self._relisting = self._relisting or {}, None
        old, self._by_name = self._by_name, fresh
        first = not self.ready.is_set()
        self.ready.set()
        if first:
            return  # the start-up sweep reconciles every namespace anyway
        for name in set(old) | set(fresh):
            if old.get(name) != fresh.get(name):
                self._on_change(name)

    def event(self, kind: str, body: dict[str, Any]) -> None:
        namespace = Namespace.from_body(body)
        if kind == "DELETED":
            self._by_name.pop(namespace.name, None)
            self._on_change(namespace.name)
            return
        known = self._by_name.get(namespace.name)
        if known == namespace:
            return  # status or bookkeeping only: nothing a reconcile reads has changed
        self._by_name[namespace.name] = namespace
        if kind == "ADDED" and known is None:
            self._on_new(namespace.name)
        else:
            self._on_change(namespace.name)


__all__ = ["ObservedNamespaces"]
