"""Time-boxed exemptions: pieces a BaselinePolicy leaves out of one namespace until a deadline.

The API calls them exceptions (``spec.exceptions``, :class:`~nsbaseline.spec.Exemption`); in
Python that word means errors, hence this module's name.
``spec.exceptions: [{namespace, pieces, reason, expiresAt}]``. While ``now < expiresAt`` the named
pieces are not rendered for that namespace (so the operator removes them at once); from
``expiresAt`` on they are rendered again. Pure: the caller passes the time, so the reconciler, the
CLI and the tests agree on what "active" means and the reconciler can schedule the exact moment
an exception ends.

CRD validation rules have no clock (``now()`` is not declared in Kubernetes' CEL environment), so
the schema cannot refuse an expiry that is already past; such an exception simply has no effect
and is reported as ``Expired`` in the policy's status.
"""

from __future__ import annotations

import datetime
from typing import Any

from nsbaseline.spec import BaselinePolicySpec, Exemption


def valid(spec: BaselinePolicySpec) -> list[Exemption]:
    """The exceptions of a policy spec that can take effect: an expiry Python cannot read (the
    API server's date-time format is a little wider) is skipped, as is an empty namespace."""
    return [e for e in spec.exceptions or () if e.deadline is not None and e.namespace]


def held_back(spec: BaselinePolicySpec, namespace: str, at: datetime.datetime) -> frozenset[str]:
    """Pieces of this policy that must not exist in ``namespace`` at time ``at``."""
    return frozenset(
        piece
        for e in valid(spec)
        if e.namespace == namespace and e.active(at)
        for piece in e.pieces
    )


def next_expiry(
    spec: BaselinePolicySpec, namespace: str, at: datetime.datetime
) -> datetime.datetime | None:
    """When the earliest still-active exception for ``namespace`` ends (to schedule a reconcile)."""
    ends = [e.deadline for e in valid(spec) if e.namespace == namespace and e.active(at)]
    return min((end for end in ends if end is not None), default=None)


def status_entries(spec: BaselinePolicySpec, at: datetime.datetime) -> list[dict[str, Any]]:
    """``status.exceptions``: every exception with its state, active ones first."""
    entries = [
        {
            "namespace": e.namespace,
            "pieces": list(e.pieces),
            "reason": e.reason,
            "expiresAt": e.expires_at,
            "state": "Active" if e.active(at) else "Expired",
        }
        for e in valid(spec)
    ]
    return sorted(entries, key=lambda x: (x["state"] != "Active", x["namespace"], x["expiresAt"]))
