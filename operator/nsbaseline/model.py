"""Plain, immutable views of the Kubernetes objects the core works with.

The handlers convert raw watch bodies into these once, so the pure core never touches Kopf's
body wrappers and the in-memory indexes stay small (only the fields we use are kept).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nsbaseline import names


@dataclass(frozen=True)
class NamespaceInfo:
    """What templates and selectors may know about a namespace."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    terminating: bool = False

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> NamespaceInfo:
        meta = body.get("metadata", {})
        status = body.get("status") or {}
        return cls(
            name=meta["name"],
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
            terminating=bool(meta.get("deletionTimestamp")) or status.get("phase") == "Terminating",
        )


@dataclass(frozen=True)
class PolicyInfo:
    """A BaselinePolicy with its defaults applied (the same defaults the CRD schema declares)."""

    name: str
    uid: str
    generation: int
    spec: Mapping[str, Any]
    status: Mapping[str, Any] = field(default_factory=dict)

    @property
    def namespace_selector(self) -> Mapping[str, Any] | None:
        selector: Mapping[str, Any] | None = self.spec.get("namespaceSelector")
        return selector

    @property
    def excluded_namespaces(self) -> frozenset[str]:
        return frozenset(self.spec.get("excludedNamespaces") or ())

    @property
    def audit(self) -> bool:
        return self.spec.get("mode") == "Audit"

    def owner_reference(self) -> dict[str, Any]:
        return {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": False,
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> PolicyInfo:
        from nsbaseline.schema import apply_defaults

        meta = body.get("metadata", {})
        return cls(
            name=meta["name"],
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation") or 0),
            spec=apply_defaults(dict(body.get("spec") or {})),
            status=dict(body.get("status") or {}),
        )


# Observed NetworkPolicies live in their own module (kept small for memory); re-exported here.
from nsbaseline.observed import ManagedObject, is_candidate  # noqa: E402

__all__ = ["ManagedObject", "NamespaceInfo", "PolicyInfo", "is_candidate"]
