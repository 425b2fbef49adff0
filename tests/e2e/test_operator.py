"""The operator's promises, end to end on a real control plane, driven with kubectl."""

from __future__ import annotations

import functools
import time
from typing import Any

import pytest

from tests.support.kube import Cluster, OperatorProcess, baseline_policy, wait_for

pytestmark = pytest.mark.e2e

OPT_IN = {"nsbaseline.io/enabled": "true"}
DEFAULT_PIECES = {"allow-dns", "default-deny"}


def pieces(cluster: Cluster, ns: str, policy: str = "baseline") -> set[str]:
    """The pieces of ``policy`` present in ``ns``, from the objects' piece labels."""
    return {
        o["metadata"]["labels"].get("nsbaseline.io/piece", "?")
        for o in cluster.netpols(ns).values()
        if o["metadata"].get("labels", {}).get("nsbaseline.io/policy") == policy
    }


def wait_pieces(cluster: Cluster, ns: str, expected: set[str], policy: str = "baseline") -> None:
    wait_for(
        lambda: pieces(cluster, ns, policy) == expected,
        90,
        what=f"pieces {sorted(expected)} of {policy} in {ns}",
    )


def condition(cluster: Cluster, policy: str, type_: str) -> dict[str, Any]:
    bp = cluster.get("baselinepolicy", policy) or {}
    for c in bp.get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return dict(c)
    return {}


def quiet_writes(cluster: Cluster, seconds: float = 5.0) -> int:
    """NetworkPolicy writes the API server counts over a quiet period."""
    before = cluster.request_counts()
    time.sleep(seconds)
    return cluster.writes("networkpolicies", since=before)


def test_labelled_namespace_gets_its_baseline_and_loses_it_when_unlabelled(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    ns = cluster.namespace("label")
    cluster.apply(baseline_policy("baseline"))
    time.sleep(1)
    assert pieces(cluster, ns) == set(), "a namespace without the opt-in label is left alone"

    cluster.kubectl("label", "namespace", ns, "nsbaseline.io/enabled=true")
    wait_pieces(cluster, ns, DEFAULT_PIECES)
    deny = cluster.netpols(ns)["nsbaseline-baseline-default-deny"]
    assert sorted(deny["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    assert deny["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "nsbaseline"
    assert deny["metadata"]["ownerReferences"][0]["kind"] == "BaselinePolicy"
    dns = cluster.netpols(ns)["nsbaseline-baseline-allow-dns"]
    peer = dns["spec"]["egress"][0]["to"][0]
    assert peer["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "kube-system"
    }
    assert {(p["protocol"], p["port"]) for p in dns["spec"]["egress"][0]["ports"]} == {
        ("UDP", 53),
        ("TCP", 53),
    }
    assert cluster.events(ns, "Applied"), "an Applied event is posted on the namespace"

    cluster.kubectl("label", "namespace", ns, "nsbaseline.io/enabled-")
    wait_pieces(cluster, ns, set())
    assert cluster.events(ns, "Removed")


def test_namespace_created_with_the_label_gets_the_baseline(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    cluster.apply(baseline_policy("baseline", monitoring={"enabled": True}))
    ns = cluster.namespace("born", OPT_IN)
    wait_pieces(cluster, ns, DEFAULT_PIECES | {"allow-monitoring"})
    wait_for(
        lambda: condition(cluster, "baseline", "Ready").get("status") == "True",
        60,
        what="Ready=True",
    )


def test_deleting_the_policy_removes_its_objects_everywhere(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    cluster.apply(baseline_policy("baseline"))
    namespaces = [cluster.namespace("del", OPT_IN) for _ in range(3)]
    for ns in namespaces:
        wait_pieces(cluster, ns, DEFAULT_PIECES)
    cluster.kubectl("delete", "baselinepolicy", "baseline")
    for ns in namespaces:
        wait_pieces(cluster, ns, set())


def test_deleted_and_edited_objects_are_restored_with_an_event(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    cluster.apply(baseline_policy("baseline"))
    ns = cluster.namespace("drift", OPT_IN)
    wait_pieces(cluster, ns, DEFAULT_PIECES)
    original = cluster.netpols(ns)

    cluster.kubectl("delete", "networkpolicy", "nsbaseline-baseline-default-deny", "-n", ns)
    cluster.kubectl(
        "patch",
        "networkpolicy",
        "nsbaseline-baseline-allow-dns",
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"spec":{"egress":[{"to":[{"ipBlock":{"cidr":"0.0.0.0/0"}}]}]}}',
    )

    def restored() -> bool:
        now = cluster.netpols(ns)
        return all(
            name in now and now[name]["spec"] == obj["spec"] for name, obj in original.items()
        )

    wait_for(restored, 60, what="spec drift and deletion repaired")
    cluster.kubectl(
        "label",
        "networkpolicy",
        "nsbaseline-baseline-allow-dns",
        "-n",
        ns,
        "nsbaseline.io/piece-",
        "app.kubernetes.io/managed-by=someone-else",
        "--overwrite",
    )
    wait_for(
        lambda: (
            cluster.netpols(ns)["nsbaseline-baseline-allow-dns"]["metadata"]["labels"]
            == original["nsbaseline-baseline-allow-dns"]["metadata"]["labels"]
        ),
        60,
        what="label drift repaired",
    )
    repaired = {e["involvedObject"]["name"] for e in cluster.events(ns, "Repaired")}
    assert repaired >= {"nsbaseline-baseline-default-deny", "nsbaseline-baseline-allow-dns"}


def test_policy_change_updates_exactly_what_changed_and_noop_change_writes_nothing(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    cluster.apply(
        baseline_policy(
            "baseline",
            monitoring={"enabled": True, "ports": [{"port": 9100}]},
            ingressController={"enabled": True},
        )
    )
    namespaces = [cluster.namespace("chg", OPT_IN) for _ in range(3)]
    full = DEFAULT_PIECES | {"allow-monitoring", "allow-ingress-controller"}
    for ns in namespaces:
        wait_pieces(cluster, ns, full)
    before = {ns: cluster.netpols(ns) for ns in namespaces}

    # Change one port: only allow-monitoring changes, everywhere.
    cluster.kubectl(
        "patch",
        "baselinepolicy",
        "baseline",
        "--type=merge",
        "-p",
        '{"spec":{"monitoring":{"ports":[{"port":9200}]}}}',
    )

    def port_updated(ns: str) -> bool:
        mon = cluster.netpols(ns)["nsbaseline-baseline-allow-monitoring"]
        return bool(mon["spec"]["ingress"][0]["ports"][0]["port"] == 9200)

    for ns in namespaces:
        wait_for(functools.partial(port_updated, ns), 60, what=f"port updated in {ns}")
    for ns in namespaces:
        after = cluster.netpols(ns)
        for name, obj in before[ns].items():
            same = after[name]["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]
            assert same == (not name.endswith("allow-monitoring")), name

    # Disable monitoring: exactly that piece goes.
    cluster.kubectl(
        "patch",
        "baselinepolicy",
        "baseline",
        "--type=merge",
        "-p",
        '{"spec":{"monitoring":{"enabled":false}}}',
    )
    for ns in namespaces:
        wait_pieces(cluster, ns, full - {"allow-monitoring"})

    # A no-op change (a new generation with the same rendered output) sends no NetworkPolicy write.
    wait_for(lambda: quiet_writes(cluster, 3) == 0, 60, what="quiet cluster")
    snapshot = cluster.request_counts()
    cluster.kubectl(
        "patch",
        "baselinepolicy",
        "baseline",
        "--type=merge",
        "-p",
        '{"spec":{"monitoring":{"ports":[{"port":9300}]}}}',
    )
    wait_for(
        lambda: (
            (cluster.get("baselinepolicy", "baseline")["status"].get("observedGeneration"))
            == cluster.get("baselinepolicy", "baseline")["metadata"]["generation"]
        ),
        60,
        what="status observes the new generation",
    )
    time.sleep(3)
    assert cluster.writes("networkpolicies", since=snapshot) == 0


def test_two_policies_coexist_and_excluded_namespaces_are_never_touched(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    cluster.apply(
        baseline_policy("baseline"),
        baseline_policy(
            "egress",
            namespaceSelector={"matchLabels": {"tier": "restricted"}},
            defaultDeny={"ingress": False, "egress": True},
            dns={"enabled": False},
            egressCIDRs=[{"cidr": "203.0.113.0/24", "ports": [{"port": 443}]}],
        ),
    )
    both = cluster.namespace("both", {**OPT_IN, "tier": "restricted"})
    wait_pieces(cluster, both, DEFAULT_PIECES)
    wait_pieces(cluster, both, {"allow-egress-cidrs", "default-deny"}, policy="egress")

    # System namespaces match the selector once labelled, but are excluded by default.
    cluster.kubectl(
        "label", "namespace", "kube-public", "nsbaseline.io/enabled=true", "--overwrite"
    )
    try:
        excluded = cluster.namespace("excl", OPT_IN)
        wait_pieces(cluster, excluded, DEFAULT_PIECES)
        cluster.kubectl(
            "patch",
            "baselinepolicy",
            "baseline",
            "--type=json",
            "-p",
            f'[{{"op":"add","path":"/spec/excludedNamespaces/-","value":"{excluded}"}}]',
        )
        wait_pieces(cluster, excluded, set())
        time.sleep(2)
        assert cluster.netpols("kube-public") == {}
        assert cluster.netpols("kube-system") == {}
        status = cluster.get("baselinepolicy", "baseline")["status"]
        assert status["matchedNamespaces"] >= 1
    finally:
        cluster.kubectl("label", "namespace", "kube-public", "nsbaseline.io/enabled-")


def test_audit_mode_writes_nothing_and_reports_pending_changes(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    ns = cluster.namespace("audit", OPT_IN)
    snapshot = cluster.request_counts()
    cluster.apply(baseline_policy("baseline", mode="Audit"))

    def pending() -> list[dict[str, str]]:
        status = (cluster.get("baselinepolicy", "baseline") or {}).get("status", {})
        return [p for p in status.get("pendingChanges", []) if p["namespace"] == ns]

    found = wait_for(pending, 60, what="pending changes reported in status")
    assert {(p["name"], p["action"]) for p in found} == {
        ("nsbaseline-baseline-allow-dns", "Create"),
        ("nsbaseline-baseline-default-deny", "Create"),
    }
    assert condition(cluster, "baseline", "Ready")["reason"] == "ChangesPending"
    assert cluster.netpols(ns) == {}
    assert cluster.writes("networkpolicies", since=snapshot) == 0

    # Switching to Enforce applies exactly what was reported.
    cluster.kubectl(
        "patch", "baselinepolicy", "baseline", "--type=merge", "-p", '{"spec":{"mode":"Enforce"}}'
    )
    wait_pieces(cluster, ns, DEFAULT_PIECES)


def test_restarting_the_operator_on_a_converged_cluster_writes_nothing(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    cluster.apply(baseline_policy("baseline", monitoring={"enabled": True}))
    namespaces = [cluster.namespace("rst", OPT_IN) for _ in range(5)]
    for ns in namespaces:
        wait_pieces(cluster, ns, DEFAULT_PIECES | {"allow-monitoring"})
    wait_for(
        lambda: condition(cluster, "baseline", "Ready").get("status") == "True",
        60,
        what="Ready=True",
    )
    wait_for(lambda: quiet_writes(cluster, 3) == 0, 60, what="quiet cluster")
    snapshot = cluster.request_counts()
    operator.restart()
    # Give the restarted operator time to list, index and reconcile every namespace.
    wait_for(
        lambda: (
            operator.metrics().get("nsbaseline_reconciles_total{result=unchanged}", 0)
            >= len(namespaces)
        ),
        60,
        what="restarted operator re-checked the namespaces",
    )
    time.sleep(3)
    for resource in ("networkpolicies", "namespaces", "baselinepolicies"):
        assert cluster.writes(resource, since=snapshot) == 0, resource
