"""Narrow in-memory stand-ins for the reconciler's Protocols, for unit tests of its parts.

They keep objects the way the API server would (uids, resourceVersions, 409s on taken names)
but only as far as the reconciler's own logic needs; the e2e suite proves the real thing.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

from nsbaseline import names
from nsbaseline.kube.errors import ApiError
from nsbaseline.model import BaselinePolicy, Namespace
from nsbaseline.observed import ManagedObject


class FakeApi:
    """Writer, StatusWriter, EventSink and ReportWriter over dicts of stored bodies."""

    def __init__(self) -> None:
        self.stored: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.statuses: dict[str, Mapping[str, Any]] = {}
        self.events: list[tuple[str, str]] = []
        #: (plural, namespace) -> the one report of ours there.
        self.reports: dict[tuple[str, str], dict[str, Any]] = {}
        self.fail: dict[tuple[str, str], ApiError] = {}
        self._versions = itertools.count(100)
        self._uids = itertools.count(1)

    def _key(self, body: Mapping[str, Any]) -> tuple[str, str]:
        return (body["metadata"]["namespace"], body["metadata"]["name"])

    def _store(self, body: Mapping[str, Any], uid: str | None = None) -> dict[str, Any]:
        meta = dict(body["metadata"])
        meta["resourceVersion"] = str(next(self._versions))
        meta["uid"] = uid or meta.get("uid") or f"uid-{next(self._uids)}"
        stored = {**body, "metadata": meta}
        self.stored[self._key(body)] = stored
        return stored

    def put_foreign(self, namespace: str, name: str) -> dict[str, Any]:
        """A NetworkPolicy somebody else made, holding ``name``."""
        body = {"metadata": {"namespace": namespace, "name": name}, "spec": {"podSelector": {}}}
        return self._store(body)

    def _check(self, verb: str, key: tuple[str, str]) -> None:
        self.calls.append((verb, key[1]))
        if key in self.fail:
            raise self.fail[key]

    async def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        key = self._key(body)
        self._check("create", key)
        if key in self.stored:
            raise ApiError(409, f"{key[1]} already exists", "AlreadyExists")
        return self._store(body)

    async def apply(self, body: Mapping[str, Any]) -> dict[str, Any]:
        key = self._key(body)
        self._check("apply", key)
        uid = self.stored[key]["metadata"]["uid"] if key in self.stored else None
        return self._store(body, uid)

    async def replace_spec(
        self, namespace: str, name: str, spec: Mapping[str, Any], resource_version: str
    ) -> dict[str, Any]:
        self._check("replace", (namespace, name))
        return self._store({**self.stored[(namespace, name)], "spec": dict(spec)})

    async def delete(self, namespace: str, name: str, uid: str | None) -> bool:
        self._check("delete", (namespace, name))
        current = self.stored.get((namespace, name))
        if current is None:
            return False
        if uid and current["metadata"]["uid"] != uid:
            raise ApiError(409, "uid precondition failed", "Conflict")
        del self.stored[(namespace, name)]
        return True

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get", name))
        return self.stored.get((namespace, name))

    async def patch_policy_status(self, name: str, status: Mapping[str, Any]) -> None:
        self.calls.append(("status", name))
        self.statuses[name] = status

    async def post_event(
        self, involved: Mapping[str, Any], *, reason: str, message: str, type_: str = "Normal"
    ) -> None:
        self.events.append((reason, message))

    # ----- compliance reports ----------------------------------------------------------------
    async def list_reports(
        self, group: str, version: str, plural: str, label_selector: str
    ) -> list[dict[str, Any]]:
        self.calls.append(("list-reports", plural))
        return [dict(b) for (p, _), b in sorted(self.reports.items()) if p == plural]

    async def apply_report(
        self, group: str, version: str, plural: str, body: Mapping[str, Any]
    ) -> None:
        key = (plural, body["metadata"]["namespace"])
        self._check("apply-report", key)
        self.reports[key] = dict(body)

    async def delete_report(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> None:
        self._check("delete-report", (plural, namespace))
        self.reports.pop((plural, namespace), None)

    def writes(self) -> list[tuple[str, str]]:
        return [c for c in self.calls if c[0] not in ("get", "status", "list-reports")]

    def observed(self, namespace: str) -> list[ManagedObject]:
        """What a label-selected watch would show of ``namespace``."""
        return [
            ManagedObject.from_body(b)
            for (ns, _), b in sorted(self.stored.items())
            if ns == namespace
            and (b["metadata"].get("labels") or {}).get(names.MANAGED_BY_LABEL)
            == names.MANAGED_BY_VALUE
        ]


class FakeCluster:
    """Namespaces and BaselinePolicies, as Kopf's indexes would hold them."""

    def __init__(self, namespaces: Iterable[Namespace], policies: Iterable[BaselinePolicy]) -> None:
        self.namespaces = {n.name: n for n in namespaces}
        self.policy_map = {p.name: p for p in policies}

    def namespace(self, name: str) -> Namespace | None:
        return self.namespaces.get(name)

    def namespace_names(self) -> Iterable[str]:
        return list(self.namespaces)

    def policies(self) -> dict[str, BaselinePolicy]:
        return dict(self.policy_map)


__all__ = ["FakeApi", "FakeCluster"]
