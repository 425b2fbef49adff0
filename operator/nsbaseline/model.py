"""Plain, immutable views of the Kubernetes objects the core works with.

The handlers convert raw watch bodies into these once, so the pure core never touches Kopf's
body wrappers and the in-memory indexes stay small (only the fields we use are kept).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nsbaseline import canonical, names
from nsbaseline.spec import BaselinePolicySpec


def _interned(values: Mapping[str, Any] | None) -> dict[str, str]:
    return {sys.intern(str(k)): str(v) for k, v in (values or {}).items()}


@dataclass(frozen=True, slots=True)
class Namespace:
    """A namespace as selectors, templates and the NetworkPolicy evaluator see it."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    terminating: bool = False

    @property
    def effective_labels(self) -> dict[str, str]:
        """The labels plus the immutable name label the API server sets on every namespace."""
        return {**self.labels, names.NAMESPACE_NAME_LABEL: self.name}

    def with_name_label(self) -> Namespace:
        """This namespace as the API server stores it (for namespaces described offline)."""
        return dataclasses.replace(self, labels=self.effective_labels)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Namespace:
        """Read a Namespace manifest or watch body (``metadata.name`` required).

        Label and annotation keys are interned: the operator keeps one of these per namespace in
        the cluster, and the same few keys repeat in all of them.
        """
        meta = body.get("metadata") or {}
        status = body.get("status") or {}
        return cls(
            name=meta["name"],
            labels=_interned(meta.get("labels")),
            annotations=_interned(meta.get("annotations")),
            terminating=bool(meta.get("deletionTimestamp")) or status.get("phase") == "Terminating",
        )


@dataclass(frozen=True)
class BaselinePolicy:
    """A BaselinePolicy with its defaults applied (the same defaults the CRD schema declares)."""

    name: str
    uid: str
    generation: int
    spec: BaselinePolicySpec = field(default_factory=BaselinePolicySpec)
    status: Mapping[str, Any] = field(default_factory=dict)

    @property
    def audit(self) -> bool:
        return self.spec.mode == "Audit"

    @functools.cached_property
    def spec_json(self) -> Mapping[str, Any]:
        """The spec as the API server stores it: what templates see as ``policy.spec``."""
        return self.spec.to_json()

    @functools.cached_property
    def spec_fingerprint(self) -> str:
        """A stable text form of the spec (part of the render cache key)."""
        return canonical.fingerprint(self.spec_json)

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
    def from_body(cls, body: Mapping[str, Any]) -> BaselinePolicy:
        """Read a BaselinePolicy; :class:`~nsbaseline.schema.SpecError` when its spec has a
        value of the wrong type (never for one the API server stored)."""
        meta = body.get("metadata", {})
        return cls(
            name=meta["name"],
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation") or 0),
            spec=BaselinePolicySpec.from_json(body.get("spec") or {}),
            status=dict(body.get("status") or {}),
        )


# Observed NetworkPolicies live in their own module (kept small for memory); re-exported here.
from nsbaseline.observed import ManagedObject, is_candidate  # noqa: E402

__all__ = ["BaselinePolicy", "ManagedObject", "Namespace", "is_candidate"]
