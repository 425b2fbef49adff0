"""What ``nsbaseline lint`` knows about the cluster beside the policies it checks. Pure.

Kept apart from :mod:`nsbaseline.lint` (the checks) because the command gathers it from several
places before any check runs: the defaults and ``--pod-cidr``/``--service-cidr`` for the cluster's
ranges, the Namespaces and Pods among the files (:func:`context_from`) or from the cluster, and the
time to judge exceptions at, which is passed in, never read here.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nsbaseline.evaluator import Pod
from nsbaseline.located import Located
from nsbaseline.model import Namespace

DEFAULT_POD_CIDR = "10.244.0.0/16"
DEFAULT_SERVICE_CIDR = "10.96.0.0/12"


@dataclass
class Context:
    """What is known about the cluster: used for no-match and for the DNS check."""

    namespaces: list[Namespace] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)
    pod_cidrs: tuple[str, ...] = (DEFAULT_POD_CIDR,)
    service_cidrs: tuple[str, ...] = (DEFAULT_SERVICE_CIDR,)
    #: The time to judge exceptions' expiry at (None: not judged). Passed in, never read here.
    now: datetime.datetime | None = None


def context_from(docs: Iterable[Located], base: Context) -> Context:
    """Add the Namespaces and Pods found among ``docs`` to ``base``."""
    for doc in docs:
        kind = kind_of(doc.data)
        if kind == "Namespace":
            base.namespaces.append(Namespace.from_body(doc.data))
        elif kind == "Pod":
            base.pods.append(Pod.from_body(doc.data))
    return base


def kind_of(data: Any) -> str:
    """The ``kind`` of a document, or "" when it is not an object."""
    return str(data.get("kind", "")) if isinstance(data, Mapping) else ""


__all__ = ["DEFAULT_POD_CIDR", "DEFAULT_SERVICE_CIDR", "Context", "context_from", "kind_of"]
