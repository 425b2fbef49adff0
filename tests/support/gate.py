"""Helpers for the pod gate tests: install the component, submit pods like a ReplicaSet does.

The ReplicaSet controller retries a pod the API server refused with its work queue's per-item
exponential backoff (``workqueue.DefaultTypedControllerRateLimiter``: 5 ms, doubling, capped at
1000 s). :func:`submit_like_a_replicaset` does the same, so a test sees what a Deployment would:
how many refusals, and how soon after its namespace the pod is admitted.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.kube import REPO, TEST_LABEL, Cluster
from tests.support.rest import Rest

POD_GATE = REPO / "deploy" / "components" / "pod-gate" / "validatingadmissionpolicies.yaml"
BACKOFF_BASE = 0.005
BACKOFF_CAP = 1000.0
NOT_FOUND = "no params found for policy binding with `Deny` parameterNotFoundAction"


def component_objects(path: Path = POD_GATE) -> list[dict[str, Any]]:
    """The objects exactly as a component ships them."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def ensure_pod_gate(cluster: Cluster) -> list[dict[str, Any]]:
    """Install the pod-gate component (its policies and anchor binding) for the rest of the
    session; idempotent.

    Never removed: kube-apiserver 1.36 stops its NetworkPolicy parameter cache once no binding
    uses it and never restarts it (kubernetes#133827), so a second install in the same API
    server would gate against a frozen cache. The anchor binding matches nothing, and without a
    per-policy binding the policies refuse nothing.
    """
    objects = component_objects()
    cluster.apply(*objects)
    return objects


def namespace_body(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {TEST_LABEL: "true", **labels}},
    }


def pod_body(name: str = "app") -> dict[str, Any]:
    """A pod that needs nothing but admission (no node runs it on this control plane)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            # Not the default ServiceAccount's token: its creation is a race of its own, with the
            # serviceaccount controller, that has nothing to do with the gate.
            "automountServiceAccountToken": False,
            "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
        },
    }


@dataclass
class Submission:
    """What happened to one pod submitted into a fresh namespace."""

    namespace: str
    created_at: float  # time.monotonic() when the namespace was created
    admitted_at: float = 0.0
    resource_version: int = 0
    refusals: Counter[str] = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)

    @property
    def latency(self) -> float:
        return self.admitted_at - self.created_at


def classify(message: str) -> str:
    if "nsbaseline-pod-gate" in message:
        return "gate"
    return "other"


def submit_like_a_replicaset(
    api: Rest, namespace: str, created_at: float, timeout: float = 180, name: str = "app"
) -> Submission:
    """POST the pod until admitted, backing off as the ReplicaSet controller does."""
    result = Submission(namespace, created_at)
    delay = BACKOFF_BASE
    deadline = time.monotonic() + timeout
    while True:
        status, body = api.create(f"/api/v1/namespaces/{namespace}/pods", pod_body(name))
        if status == 201:
            result.admitted_at = time.monotonic()
            result.resource_version = int(body["metadata"]["resourceVersion"])
            return result
        message = str(body.get("message", body))
        result.refusals[classify(message)] += 1
        if len(result.messages) < 3:
            result.messages.append(message)
        if time.monotonic() > deadline:
            raise AssertionError(f"pod in {namespace} still refused after {timeout}s: {message}")
        time.sleep(delay)
        delay = min(delay * 2, BACKOFF_CAP)


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p99 and max, in milliseconds (rounded)."""
    if not values:
        return {}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(p99 * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }
