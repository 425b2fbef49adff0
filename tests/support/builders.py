"""Small builders shared by the unit tests: policies, namespaces and objects "in the cluster".

Kept as plain functions (not fixtures) so each test reads as data in, result out.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Mapping
from typing import Any

from nsbaseline.model import BaselinePolicy, ManagedObject, Namespace
from nsbaseline.plan import with_hash
from nsbaseline.render import RenderedObject

#: The time unit tests render at: fixed, so exceptions' expiry is deterministic.
NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
NETPOL_HEAD = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"


def policy(
    name: str = "base", uid: str | None = None, generation: int = 1, **spec: Any
) -> BaselinePolicy:
    """A BaselinePolicy with the CRD's defaults applied, as the operator sees it."""
    body = {
        "apiVersion": "nsbaseline.io/v1alpha1",
        "kind": "BaselinePolicy",
        "metadata": {"name": name, "uid": uid or f"uid-{name}", "generation": generation},
        "spec": spec,
    }
    return BaselinePolicy.from_body(body)


def namespace(
    name: str = "team-a",
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    terminating: bool = False,
) -> Namespace:
    """A namespace with the immutable name label the API server always sets."""
    all_labels = {"kubernetes.io/metadata.name": name, **(labels or {})}
    return Namespace(name, all_labels, dict(annotations or {}), terminating)


def opted_in(name: str = "team-a", **annotations: str) -> Namespace:
    return namespace(name, {"nsbaseline.io/enabled": "true"}, annotations)


def netpol_template(spec: str = "  podSelector: {}\n", metadata: str = "") -> str:
    """Source of a minimal valid NetworkPolicy template; ``spec`` lines indented by two."""
    meta = f"metadata:\n{metadata}" if metadata else ""
    return f"{NETPOL_HEAD}{meta}spec:\n{spec}"


def in_cluster(
    obj: RenderedObject | Mapping[str, Any],
    uid: str = "np-uid",
    applied: bool = True,
    **edits: Any,
) -> ManagedObject:
    """What the cluster would hold after the operator applied ``obj`` (then edited by someone).

    ``applied`` adds the hash annotation as the operator writes it; ``edits`` replace top-level
    metadata fields (labels, annotations, ownerReferences) or ``spec``.
    """
    body = obj.body if isinstance(obj, RenderedObject) else obj
    sent = copy.deepcopy(dict(with_hash(body) if applied else body))
    meta = dict(sent["metadata"])
    meta.update({"uid": uid, "resourceVersion": "1"})
    for key, value in edits.items():
        if key == "spec":
            sent["spec"] = value
        else:
            meta[key] = value
    sent["metadata"] = meta
    return ManagedObject.from_body(sent)


def foreign(namespace_name: str, name: str, **labels: str) -> ManagedObject:
    """A NetworkPolicy someone else created (no managed-by label, no ownerReference to us)."""
    return ManagedObject.from_body(
        {
            "metadata": {
                "namespace": namespace_name,
                "name": name,
                "uid": f"foreign-{name}",
                "labels": labels,
            },
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        }
    )
