"""Errors from talking to a cluster, each with a one-line message a person can act on.

The CLI prints :func:`ClusterError` messages as they are; the operator logs them. Nothing here
does I/O: an :class:`ApiError` is built from the API server's ``Status`` answer, and
:func:`explain` turns it into the sentence that says who was refused what, or which command fixes
the situation.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from nsbaseline import names

#: Where the operator's rights are declared, for messages about missing ones.
RBAC_HINT = "see deploy/base/rbac.yaml"
CRD_INSTALL = "kubectl apply --server-side -f crds/"


class ClusterError(Exception):
    """Anything that stops us from using the cluster; ``str()`` is one actionable line."""


class LoginError(ClusterError):
    """No usable credentials: no kubeconfig, an unknown context, a failing exec plugin..."""


class UnreachableError(ClusterError):
    """The API server could not be reached at all (connection refused, DNS, TLS, proxy)."""


@dataclass(frozen=True)
class Refusal:
    """What the API server's authorizer said no to, parsed from its standard message."""

    user: str
    verb: str
    resource: str
    scope: str


_FORBIDDEN = re.compile(
    r'User "(?P<user>[^"]*)" cannot (?P<verb>\S+) resource "(?P<resource>[^"]+)"'
    r'(?: in API group "(?P<group>[^"]*)")?(?P<scope>.*)$'
)


class ApiError(ClusterError):
    """A non-success answer from the API server, with its status and ``Status`` fields."""

    def __init__(
        self,
        status: int,
        message: str,
        reason: str = "",
        *,
        method: str = "",
        path: str = "",
        details: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {reason}: {message}".strip())
        self.status = status
        self.message = message
        self.reason = reason
        self.method = method
        self.path = path
        self.details = details or {}
        self.retry_after = retry_after

    @classmethod
    def from_response(
        cls, status: int, text: str, *, method: str = "", path: str = "", retry_after: float | None
    ) -> ApiError:
        try:
            payload = json.loads(text)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return cls(status, text[:500], method=method, path=path, retry_after=retry_after)
        return cls(
            status,
            str(payload.get("message", text[:500])),
            str(payload.get("reason", "")),
            method=method,
            path=path,
            details=payload.get("details") if isinstance(payload.get("details"), dict) else None,
            retry_after=retry_after,
        )

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """409: a name already taken (create) or a failed precondition (uid, resourceVersion)."""
        return self.status == 409

    @property
    def already_exists(self) -> bool:
        return self.status == 409 and self.reason == "AlreadyExists"

    @property
    def retriable(self) -> bool:
        """Overload and transient server trouble: worth another try after a pause."""
        return self.status == 429 or self.status in (500, 502, 503, 504)

    def refusal(self) -> Refusal | None:
        """Who was refused what, when this is an authorization failure (403)."""
        if self.status != 403:
            return None
        found = _FORBIDDEN.search(self.message)
        if found is None:
            return None
        group = found.group("group")
        resource = found.group("resource")
        full = f"{resource}.{group}" if group else resource
        scope = found.group("scope").strip().rstrip(".") or "at the cluster scope"
        return Refusal(found.group("user"), found.group("verb"), full, scope)


def explain(exc: BaseException, *, server: str = "", user: str = "") -> str:
    """One line saying what went wrong and what to do, for any error from the cluster edge.

    ``server`` and ``user`` come from the credentials in use (the kubeconfig's names), so a 401
    can say whose credentials were rejected where.
    """
    if isinstance(exc, ApiError):
        if exc.status == 401:
            who = f"user {user!r}" if user else "the credentials"
            return (
                f"the API server at {server or '(unknown)'} answered 401 Unauthorized for {who}: "
                "the token or certificate is invalid or expired (log in again or check the "
                "kubeconfig's user)"
            )
        refusal = exc.refusal()
        if refusal is not None:
            return (
                f'forbidden: User "{refusal.user}" cannot {refusal.verb} {refusal.resource} '
                f"{refusal.scope}; nsbaseline needs {refusal.verb} on {refusal.resource} "
                f"({RBAC_HINT})"
            )
        if exc.status == 404 and names.PLURAL in exc.path and names.GROUP in exc.path:
            return (
                f"the BaselinePolicy CRD ({names.PLURAL}.{names.GROUP}) is not installed in the "
                f"cluster at {server or '(unknown)'}: install it with `{CRD_INSTALL}` "
                "(or `kubectl apply -k deploy/`)"
            )
        what = f" to {exc.method} {exc.path}" if exc.method else ""
        return f"the API server refused{what}: {exc}"
    return str(exc) or type(exc).__name__


__all__ = [
    "ApiError",
    "ClusterError",
    "LoginError",
    "Refusal",
    "UnreachableError",
    "explain",
]
