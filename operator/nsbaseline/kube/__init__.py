"""The cluster edge: logging in and talking to the API server. Nothing else does either.

``login`` finds credentials the way kubectl does; ``client`` makes every request; ``errors``
turns what went wrong into one line a person can act on.
"""

from __future__ import annotations

from nsbaseline.kube.client import KubeClient
from nsbaseline.kube.errors import ApiError, ClusterError, LoginError, UnreachableError, explain
from nsbaseline.kube.login import Credentials, load
from nsbaseline.kube.tokens import TokenSource


def connect(kubeconfig: str | None = None, context: str | None = None) -> KubeClient:
    """A client for the cluster kubectl would use with these flags; few retries (a person waits)."""
    return KubeClient(load(kubeconfig, context), attempts=3)


__all__ = [
    "ApiError",
    "ClusterError",
    "Credentials",
    "KubeClient",
    "LoginError",
    "TokenSource",
    "UnreachableError",
    "connect",
    "explain",
    "load",
]
