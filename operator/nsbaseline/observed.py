"""NetworkPolicies as the operator remembers them: small, immutable, and only what diffing needs.

Tens of thousands are kept in memory at once, so a body is reduced on arrival to its identity
(namespace, name, uid, resourceVersion), the labels, annotations and owners we set, and a digest
of its spec in canonical form — never the spec itself. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from nsbaseline import canonical, names

#: Digests by the spec's raw JSON: the same few specs recur in every namespace (one per piece),
#: and the canonical form is built in Python while the raw JSON is one C call. Bounded.
_DIGESTS: dict[bytes, str] = {}
_DIGESTS_MAX = 4096


def spec_digest(spec: Mapping[str, Any]) -> str:
    """A digest of a NetworkPolicy spec in canonical form: equal digests, equal policies."""
    try:
        raw: bytes | None = orjson.dumps(spec, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        raw = None  # not plain JSON: no cache, the canonical form decides
    known = _DIGESTS.get(raw) if raw is not None else None
    if known is not None:
        return known
    try:
        text = canonical.fingerprint(canonical.spec(spec))
    except (KeyError, TypeError, AttributeError, ValueError):
        text = "invalid:" + canonical.fingerprint(spec)  # never equal to a rendered spec
    digest = hashlib.sha256(text.encode()).hexdigest()[:32]
    if raw is not None:
        if len(_DIGESTS) >= _DIGESTS_MAX:
            _DIGESTS.clear()
        _DIGESTS[raw] = digest
    return digest


class OwnerRef(NamedTuple):
    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool


def _intern_map(values: Mapping[str, Any] | None) -> dict[str, str]:
    # Keys and most values repeat across thousands of objects: share one copy of each string.
    return {sys.intern(str(k)): sys.intern(str(v)) for k, v in (values or {}).items()}


@dataclass(frozen=True, slots=True)
class ManagedObject:
    """A NetworkPolicy as seen in the cluster, reduced to what diffing needs."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    owner_references: tuple[OwnerRef, ...]
    spec_digest: str

    @property
    def ours(self) -> bool:
        """Whether nsbaseline created this object.

        Our managed-by label says so; so does a controller ownerReference to a BaselinePolicy,
        which survives a tenant stripping our labels (that edit is drift to repair, not a
        hand-over of the object).
        """
        if self.labels.get(names.MANAGED_BY_LABEL) == names.MANAGED_BY_VALUE:
            return True
        return any(
            ref.api_version.startswith(names.GROUP + "/")
            and ref.kind == names.KIND
            and ref.controller
            for ref in self.owner_references
        )

    @property
    def policy(self) -> str | None:
        return self.labels.get(names.POLICY_LABEL)

    @property
    def piece(self) -> str | None:
        return self.labels.get(names.PIECE_LABEL)

    @property
    def version(self) -> int:
        """The resourceVersion as a number (-1 when it is not one), for ordering versions."""
        try:
            return int(self.resource_version)
        except ValueError:
            return -1

    @classmethod
    def from_body(cls, body: Mapping[str, Any], digest: str | None = None) -> ManagedObject:
        """Reduce a NetworkPolicy body; ``digest`` when the spec's digest is known already."""
        meta = body.get("metadata") or {}
        refs = tuple(
            OwnerRef(
                sys.intern(str(r.get("apiVersion", ""))),
                sys.intern(str(r.get("kind", ""))),
                sys.intern(str(r.get("name", ""))),
                str(r.get("uid", "")),
                bool(r.get("controller")),
            )
            for r in meta.get("ownerReferences") or ()
        )
        annotations = {
            k: v
            for k, v in _intern_map(meta.get("annotations")).items()
            if k != "kubectl.kubernetes.io/last-applied-configuration"  # big, never ours
        }
        return cls(
            namespace=sys.intern(str(meta.get("namespace", ""))),
            name=sys.intern(str(meta["name"])),
            uid=str(meta.get("uid", "")),
            resource_version=str(meta.get("resourceVersion", "")),
            labels=_intern_map(meta.get("labels")),
            annotations=annotations,
            owner_references=refs,
            spec_digest=digest or spec_digest(body.get("spec") or {}),
        )


def is_candidate(body: Mapping[str, Any]) -> bool:
    """Whether a NetworkPolicy concerns us: ours, or holding a name we would use."""
    meta = body.get("metadata") or {}
    if str(meta.get("name", "")).startswith(names.NAME_PREFIX):
        return True
    if (meta.get("labels") or {}).get(names.MANAGED_BY_LABEL) == names.MANAGED_BY_VALUE:
        return True
    return ManagedObject.from_body(body).ours


__all__ = ["ManagedObject", "OwnerRef", "is_candidate", "spec_digest"]
