"""Hostile writers: tampering with a managed NetworkPolicy is reverted every time, without a hot
loop, and a foreign NetworkPolicy that holds one of our names is never touched.

Write counts come from the API server's own ``apiserver_request_total``, not from the operator.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.kube import Cluster, OperatorProcess, baseline_policy, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TAMPERS = 100
#: Our apply, plus at most one spec replace when a foreign field manager left fields behind.
MAX_OPERATOR_WRITES_PER_TAMPER = 2
QUIET_SECONDS = 10.0


def _condition(policy: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((policy or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return {}


def _ready(cluster: Cluster, name: str) -> bool:
    policy = cluster.get("baselinepolicy", name)
    return (
        policy is not None
        and _condition(policy, "Ready").get("status") == "True"
        and policy["status"].get("observedGeneration") == policy["metadata"]["generation"]
    )


def _ours(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k.startswith(("nsbaseline.io/", "app.kubernetes"))}


def test_tampering_100_times_is_reverted_every_time_without_a_hot_loop(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    ns = cluster.namespace("hw", {"nsbaseline.io/enabled": "true"})
    cluster.apply(baseline_policy("hw"))
    wait_for(lambda: _ready(cluster, "hw"), 120, what="policy hw ready")
    target = "nsbaseline-hw-default-deny"
    original = cluster.get("networkpolicy", target, "-n", ns)
    spec, labels = original["spec"], _ours(original["metadata"]["labels"])
    assert labels["app.kubernetes.io/managed-by"] == "nsbaseline"
    repaired_before = len(
        [e for e in cluster.events(ns, "Repaired") if e["involvedObject"]["name"] == target]
    )

    tampers: list[tuple[str, Callable[[], Any]]] = [
        (
            "spec",
            lambda: cluster.kubectl(
                "patch",
                "networkpolicy",
                target,
                "-n",
                ns,
                "--type=merge",
                "-p",
                json.dumps(
                    {
                        "spec": {
                            "policyTypes": ["Ingress"],
                            "ingress": [{"from": [{"podSelector": {}}]}],
                        }
                    }
                ),
            ),
        ),
        (
            "labels",
            lambda: cluster.kubectl(
                "label",
                "networkpolicy",
                target,
                "-n",
                ns,
                "app.kubernetes.io/managed-by-",
                "nsbaseline.io/piece-",
            ),
        ),
        ("delete", lambda: cluster.kubectl("delete", "networkpolicy", target, "-n", ns)),
    ]
    snapshot = cluster.request_counts()
    kinds: dict[str, int] = {}
    for i in range(TAMPERS):
        kind, tamper = tampers[i % len(tampers)]
        before = cluster.get("networkpolicy", target, "-n", ns)
        tamper()
        kinds[kind] = kinds.get(kind, 0) + 1

        def restored(before: dict[str, Any] = before, kind: str = kind) -> bool:
            now = cluster.get("networkpolicy", target, "-n", ns)
            if now is None or now["spec"] != spec or _ours(now["metadata"]["labels"]) != labels:
                return False
            if kind == "delete":
                return bool(now["metadata"]["uid"] != before["metadata"]["uid"])
            return int(now["metadata"]["resourceVersion"]) > int(
                before["metadata"]["resourceVersion"]
            )

        wait_for(restored, 60, interval=0.1, what=f"tamper #{i + 1} ({kind}) reverted")

    writes = cluster.writes("networkpolicies", since=snapshot)
    operator_writes = writes - TAMPERS  # each tamper above is exactly one write request
    print(f"\n{TAMPERS} tampers {kinds}: {operator_writes} NetworkPolicy writes by the operator")
    assert operator_writes >= TAMPERS, "every tamper needs at least one write to revert"
    assert operator_writes <= MAX_OPERATOR_WRITES_PER_TAMPER * TAMPERS

    def repaired_events() -> int:
        events = [
            e
            for e in cluster.events(ns, "Repaired")
            if e["involvedObject"]["name"] == target and e["type"] == "Warning"
        ]
        return len(events) - repaired_before

    wait_for(lambda: repaired_events() >= TAMPERS, 60, what=f"{TAMPERS} Repaired Events")
    print(f"Repaired events: {repaired_events()}")

    # No hot loop: a quiet period after the last repair sends no NetworkPolicy writes at all.
    quiet = cluster.request_counts()
    time.sleep(QUIET_SECONDS)
    assert cluster.writes("networkpolicies", since=quiet) == 0
    final = cluster.get("networkpolicy", target, "-n", ns)
    assert final["spec"] == spec and _ours(final["metadata"]["labels"]) == labels
    assert operator.proc is not None and operator.proc.poll() is None
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_foreign_policy_holding_our_name_is_never_touched(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    ns = cluster.namespace("hwc", {"nsbaseline.io/enabled": "true"})
    name = "nsbaseline-hwc-default-deny"
    cluster.apply(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns, "labels": {"team": "payments"}},
            "spec": {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]},
        }
    )
    foreign = cluster.get("networkpolicy", name, "-n", ns)

    def unchanged() -> None:
        now = cluster.get("networkpolicy", name, "-n", ns)
        assert now is not None, "the foreign NetworkPolicy was deleted"
        for key in ("uid", "resourceVersion", "labels", "annotations", "ownerReferences"):
            assert now["metadata"].get(key) == foreign["metadata"].get(key), key
        assert now["spec"] == foreign["spec"]

    cluster.apply(baseline_policy("hwc"))

    def conflict_reported() -> dict[str, Any] | None:
        policy: dict[str, Any] | None = cluster.get("baselinepolicy", "hwc")
        status = (policy or {}).get("status") or {}
        degraded = _condition(policy, "Degraded")
        if status.get("conflictingNamespaces") == 1 and degraded.get("status") == "True":
            return policy
        return None

    policy = wait_for(conflict_reported, 120, what="conflict in status")
    degraded = _condition(policy, "Degraded")
    assert degraded["reason"] == "Conflict", degraded
    assert (
        f"NetworkPolicy {ns}/{name} exists and is not managed by nsbaseline" in degraded["message"]
    )
    assert policy["status"]["conflicts"] == [{"namespace": ns, "name": name}]
    assert _condition(policy, "Ready")["status"] == "False"

    def conflict_events() -> bool:
        on_policy = [
            e
            for e in cluster.events("default", "Conflict")
            if e["involvedObject"].get("name") == "hwc" and name in e["message"]
        ]
        on_namespace = [e for e in cluster.events(ns, "Conflict") if name in e["message"]]
        return bool(on_policy) and bool(on_namespace)

    wait_for(conflict_events, 60, what="Conflict Events on the policy and the namespace")
    # The rest of the baseline still converges around the conflict.
    wait_for(
        lambda: "nsbaseline-hwc-allow-dns" in cluster.netpols(ns), 60, what="allow-dns created"
    )
    unchanged()

    # A sweep and a policy change later, the foreign object is still untouched.
    snapshot = cluster.request_counts()
    cluster.kubectl(
        "patch",
        "baselinepolicy",
        "hwc",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"annotations": {"example.com/owner": "netsec"}}}),
    )
    wait_for(
        lambda: (
            cluster.netpols(ns)["nsbaseline-hwc-allow-dns"]["metadata"]
            .get("annotations", {})
            .get("example.com/owner")
            == "netsec"
        ),
        60,
        what="policy change applied to allow-dns",
    )
    unchanged()
    assert cluster.writes("networkpolicies", since=snapshot) >= 1

    # Deleting the policy removes what is ours and leaves the foreign object alone.
    cluster.kubectl("delete", "baselinepolicy", "hwc", "--wait=true")
    wait_for(
        lambda: set(cluster.netpols(ns)) == {name}, 120, what="only the foreign object is left"
    )
    time.sleep(2)  # let any late reconcile of the deleted policy happen before the last look
    unchanged()
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
