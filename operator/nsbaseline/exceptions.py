"""Time-boxed exceptions: pieces a BaselinePolicy leaves out of one namespace until a deadline.

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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PolicyException:
    namespace: str
    pieces: tuple[str, ...]
    reason: str
    expires_at: datetime.datetime
    expires_at_text: str

    def active(self, now: datetime.datetime) -> bool:
        """Active strictly before the deadline; at ``expiresAt`` the pieces are back."""
        return now < self.expires_at


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def parse_time(text: str) -> datetime.datetime | None:
    """An RFC 3339 date-time (as the schema's ``format: date-time`` accepts), in UTC."""
    try:
        value = datetime.datetime.fromisoformat(text.strip().replace("z", "Z"))
    except (ValueError, AttributeError):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return value.astimezone(datetime.UTC)


def parse(spec: Mapping[str, Any]) -> list[PolicyException]:
    """The exceptions of a policy spec; entries the schema would refuse are skipped."""
    out = []
    for entry in spec.get("exceptions") or []:
        if not isinstance(entry, Mapping):
            continue
        expires = parse_time(str(entry.get("expiresAt", "")))
        if expires is None or not entry.get("namespace"):
            continue
        out.append(
            PolicyException(
                namespace=str(entry["namespace"]),
                pieces=tuple(str(p) for p in entry.get("pieces") or ()),
                reason=str(entry.get("reason", "")),
                expires_at=expires,
                expires_at_text=str(entry["expiresAt"]),
            )
        )
    return out


def excepted_pieces(
    spec: Mapping[str, Any], namespace: str, at: datetime.datetime
) -> frozenset[str]:
    """Pieces of this policy that must not exist in ``namespace`` at time ``at``."""
    return frozenset(
        piece
        for e in parse(spec)
        if e.namespace == namespace and e.active(at)
        for piece in e.pieces
    )


def next_expiry(
    spec: Mapping[str, Any], namespace: str, at: datetime.datetime
) -> datetime.datetime | None:
    """When the earliest still-active exception for ``namespace`` ends (to schedule a reconcile)."""
    ends = [e.expires_at for e in parse(spec) if e.namespace == namespace and e.active(at)]
    return min(ends, default=None)


def status_entries(spec: Mapping[str, Any], at: datetime.datetime) -> list[dict[str, Any]]:
    """``status.exceptions``: every exception with its state, active ones first."""
    entries = [
        {
            "namespace": e.namespace,
            "pieces": list(e.pieces),
            "reason": e.reason,
            "expiresAt": e.expires_at_text,
            "state": "Active" if e.active(at) else "Expired",
        }
        for e in parse(spec)
    ]
    return sorted(entries, key=lambda x: (x["state"] != "Active", x["namespace"], x["expiresAt"]))
