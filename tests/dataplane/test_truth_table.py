"""What the baseline permits, proven with real packets: one table, run as a whole.

Every built-in piece and parameter gets flows that must pass and flows that must be blocked:
default-deny in each direction, DNS over UDP and TCP to kube-dns and to a node-local DNS
address, monitoring with the policy's ports / an annotation override / a port range / a named
port, the ingress controller, egress CIDRs with ``except``, a time-boxed exception, two policies
on one namespace, Audit mode (enforces nothing) and a policy without DNS. A tenant namespace
forges the custom labels a careless baseline would trust (``name: kube-system``,
``team: monitoring``...) and runs pods labelled like Prometheus, the ingress controller and
kube-dns: none of them gets through.

The flows are sent by :mod:`hack.dataplane.probes` from inside the pods' network namespaces;
kube-router enforces the NetworkPolicies the operator wrote. The table is polled until it
matches (kube-router applies each change within a second) and must then match twice in a row.
Removing a piece from ``templates/`` makes it fail (see docs/dataplane.md).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import pytest

from hack.dataplane.dataplane import NODE_LOCAL_DNS, Dataplane, Pod
from hack.dataplane.probes import ALLOWED, DENIED, Flow, Result
from tests.support.dataplane import FORGED_ANSWER, Shared, ensure_namespace, report, table
from tests.support.kube import Cluster, OperatorProcess, baseline_policy

pytestmark = [pytest.mark.e2e, pytest.mark.dataplane]

CASE = "tt.nsbaseline.io/case"
SECOND = "tt.nsbaseline.io/second"
MONITORING_PORTS = "nsbaseline.io/monitoring-ports"


@dataclass(frozen=True)
class Row:
    """One flow of the table and what the baseline must do with it."""

    piece: str
    flow: Flow
    expect: str
    why: str


def _policies() -> list[dict[str, Any]]:
    exception = {
        "namespace": "tt-exc",
        "pieces": ["allow-monitoring"],
        "reason": "truth table: monitoring held back",
        "expiresAt": "2099-01-01T00:00:00Z",
    }
    return [
        baseline_policy(
            "tt-full",
            namespaceSelector={"matchLabels": {CASE: "full"}},
            dns={"nodeLocalDNS": NODE_LOCAL_DNS},
            monitoring={"enabled": True, "ports": [{"port": 9090}]},
            ingressController={"enabled": True, "ports": [{"port": 80}, {"port": 443}]},
            egressCIDRs=[
                {
                    "cidr": "203.0.113.0/24",
                    "except": ["203.0.113.128/25"],
                    "ports": [{"port": 443}],
                },
                {"cidr": "192.0.2.0/24"},
            ],
            exceptions=[exception],
        ),
        baseline_policy(
            "tt-second",
            namespaceSelector={"matchLabels": {SECOND: "on"}},
            egressCIDRs=[{"cidr": "198.51.100.0/24", "ports": [{"port": 80}]}],
        ),
        baseline_policy(
            "tt-ingress-only",
            namespaceSelector={"matchLabels": {CASE: "ingress-only"}},
            defaultDeny={"ingress": True, "egress": False},
            monitoring={"enabled": True},
        ),
        baseline_policy(
            "tt-egress-only",
            namespaceSelector={"matchLabels": {CASE: "egress-only"}},
            defaultDeny={"ingress": False, "egress": True},
        ),
        baseline_policy(
            "tt-audit", namespaceSelector={"matchLabels": {CASE: "audit"}}, mode="Audit"
        ),
        baseline_policy(
            "tt-no-dns",
            namespaceSelector={"matchLabels": {CASE: "no-dns"}},
            dns={"enabled": False},
        ),
    ]


NAMESPACES = {
    # name: (labels, annotations)
    "tt-full": ({CASE: "full"}, {}),
    "tt-annot": ({CASE: "full"}, {MONITORING_PORTS: "9100"}),
    "tt-range": ({CASE: "full"}, {MONITORING_PORTS: "9100-9102"}),
    "tt-named": ({CASE: "full"}, {MONITORING_PORTS: "metrics"}),
    "tt-exc": ({CASE: "full"}, {}),
    "tt-two": ({CASE: "full", SECOND: "on"}, {}),
    "tt-inonly": ({CASE: "ingress-only"}, {}),
    "tt-egonly": ({CASE: "egress-only"}, {}),
    "tt-audit": ({CASE: "audit"}, {}),
    "tt-nodns": ({CASE: "no-dns"}, {}),
}


def _rows(dp: Dataplane, s: Shared, pods: dict[str, Pod]) -> list[Row]:
    f = dp.flow
    full, peer = pods["tt-full"], pods["tt-full/peer"]
    rows: list[Row] = []

    def add(piece: str, flow: Flow, expect: str, why: str) -> None:
        rows.append(Row(piece, flow, expect, why))

    A, D = ALLOWED, DENIED
    # --- tt-full: every piece on, with parameters -------------------------------------------
    add("allow-dns", dp.dns_flow(full, s.dns, "dns-udp"), A, "DNS over UDP to kube-dns")
    add("allow-dns", dp.dns_flow(full, s.dns, "dns-tcp"), A, "DNS over TCP to kube-dns")
    add("allow-dns", f(full, NODE_LOCAL_DNS, 53, "dns-udp"), A, "node-local DNS (UDP)")
    add("allow-dns", f(full, NODE_LOCAL_DNS, 53, "dns-tcp"), A, "node-local DNS (TCP)")
    add("allow-dns", f(full, s.dns, 8080), D, "kube-dns on a non-DNS port")
    add("allow-dns", dp.dns_flow(full, s.forged_dns), D, "k8s-app=kube-dns outside kube-system")
    add("allow-dns", f(full, "198.51.100.10", 53, "udp"), D, "port 53 to a non-DNS peer")
    add("egress-cidrs", f(full, "203.0.113.10", 443), A, "listed CIDR and port")
    add("egress-cidrs", f(full, "203.0.113.10", 80), D, "listed CIDR, other port")
    add("egress-cidrs", f(full, "203.0.113.10", 443, "udp"), D, "ports default to TCP")
    add("egress-cidrs", f(full, "203.0.113.200", 443), D, "inside except 203.0.113.128/25")
    add("egress-cidrs", f(full, "192.0.2.10", 8080), A, "CIDR without ports: all ports")
    add("egress-cidrs", f(full, "192.0.2.10", 443, "udp"), A, "CIDR without ports: UDP too")
    add("egress-cidrs", f(full, "198.51.100.10", 443), D, "an unlisted external network")
    add("default-deny", f(full, s.outsider, 8080), D, "egress to another namespace")
    add("default-deny", f(full, peer, 8080), D, "pod to pod in the same namespace")
    add("default-deny", f(s.outsider, full, 8080), D, "ingress from another namespace")
    add("default-deny", f(s.outsider, full, 8080, "udp"), D, "ingress over UDP")
    add("default-deny", f(s.dns, full, 8080), D, "kube-dns pods get no ingress")
    add("allow-monitoring", f(s.prometheus, full, 9090), A, "Prometheus on a policy port")
    add("allow-monitoring", f(s.prometheus, full, 9100), D, "Prometheus on another port")
    add("allow-monitoring", f(s.prometheus, full, 9090, "udp"), D, "policy port is TCP")
    add("allow-monitoring", f(s.monitoring_other, full, 9090), D, "monitoring ns, other pod")
    add("allow-monitoring", f(s.forged_prometheus, full, 9090), D, "forged Prometheus")
    add("allow-ingress-controller", f(s.ingress, full, 80), A, "controller on port 80")
    add("allow-ingress-controller", f(s.ingress, full, 443), A, "controller on port 443")
    add("allow-ingress-controller", f(s.ingress, full, 8080), D, "controller, other port")
    add("allow-ingress-controller", f(s.forged_ingress, full, 80), D, "forged controller")
    # --- monitoring ports from the namespace annotation ---------------------------------------
    annot, rng, named = pods["tt-annot"], pods["tt-range"], pods["tt-named"]
    add("monitoring-ports", f(s.prometheus, annot, 9100), A, "annotation 9100 overrides")
    add("monitoring-ports", f(s.prometheus, annot, 9090), D, "policy port no longer applies")
    add("monitoring-ports", f(s.prometheus, rng, 9100), A, "range 9100-9102, first port")
    add("monitoring-ports", f(s.prometheus, rng, 9102), A, "range 9100-9102, last port")
    add("monitoring-ports", f(s.prometheus, rng, 9103), D, "just past the range")
    add("monitoring-ports", f(s.prometheus, named, 9200), A, "named port 'metrics' = 9200")
    add("monitoring-ports", f(s.prometheus, named, 9201), D, "a port with no such name")
    add("monitoring-ports", f(s.forged_prometheus, named, 9200), D, "forged Prometheus")
    # --- an exception holds allow-monitoring back; the rest stays ----------------------------
    exc = pods["tt-exc"]
    add("exception", f(s.prometheus, exc, 9090), D, "allow-monitoring held back")
    add("exception", dp.dns_flow(exc, s.dns), A, "allow-dns still there")
    add("exception", f(s.ingress, exc, 80), A, "ingress controller still there")
    add("exception", f(s.outsider, exc, 8080), D, "default-deny still there")
    # --- two policies on one namespace: the union of what each allows ------------------------
    two = pods["tt-two"]
    add("two-policies", f(two, "198.51.100.10", 80), A, "allowed by tt-second only")
    add("two-policies", f(two, "203.0.113.10", 443), A, "allowed by tt-full only")
    add("two-policies", f(two, "198.51.100.10", 443), D, "allowed by neither")
    add("two-policies", dp.dns_flow(two, s.dns, "dns-tcp"), A, "DNS from both")
    add("two-policies", f(s.prometheus, two, 9090), A, "monitoring from tt-full")
    # --- default-deny in one direction only ---------------------------------------------------
    inonly, egonly = pods["tt-inonly"], pods["tt-egonly"]
    add("ingress-only", f(inonly, "198.51.100.10", 443), A, "egress is not denied")
    add("ingress-only", f(inonly, s.outsider, 8080), A, "egress to another namespace")
    add("ingress-only", f(s.outsider, inonly, 8080), D, "ingress is denied")
    add("ingress-only", f(s.prometheus, inonly, 9100), A, "monitoring, no ports: all ports")
    add("egress-only", f(s.outsider, egonly, 8080), A, "ingress is not denied")
    add("egress-only", f(egonly, "198.51.100.10", 443), D, "egress is denied")
    add("egress-only", f(egonly, s.outsider, 8080), D, "egress to another namespace")
    add("egress-only", dp.dns_flow(egonly, s.dns, "dns-udp"), A, "DNS over UDP")
    add("egress-only", dp.dns_flow(egonly, s.dns, "dns-tcp"), A, "DNS over TCP")
    # --- Audit mode writes nothing: nothing is enforced ---------------------------------------
    audit = pods["tt-audit"]
    add("audit", f(s.outsider, audit, 8080), A, "ingress open")
    add("audit", f(audit, "198.51.100.10", 443), A, "egress open")
    add("audit", f(s.forged_prometheus, audit, 9090), A, "anyone may scrape")
    # --- default-deny alone: no allow piece (which would isolate too) in either direction ----
    nodns = pods["tt-nodns"]
    add("dns-disabled", dp.dns_flow(nodns, s.dns), D, "no allow-dns, egress denied")
    add("dns-disabled", f(nodns, NODE_LOCAL_DNS, 53, "dns-udp"), D, "node-local DNS too")
    add("default-deny", f(nodns, s.outsider, 8080), D, "egress, default-deny alone")
    add("default-deny", f(s.outsider, nodns, 8080), D, "ingress, default-deny alone")
    add("default-deny", f(s.prometheus, nodns, 9090), D, "monitoring is off by default")
    # --- controls: the dataplane passes traffic no policy governs -----------------------------
    add("control", f(s.outsider, s.forged_prometheus, 8080), A, "no policy, no filter")
    add("control", dp.dns_flow(s.outsider, s.dns, "dns-tcp"), A, "DNS from anywhere")
    forged = dataclasses.replace(dp.dns_flow(s.outsider, s.forged_dns), answer=FORGED_ANSWER)
    add("control", forged, A, "the forged DNS does answer")
    return rows


def _mismatches(rows: list[Row], results: list[Result]) -> list[tuple[Row, Result]]:
    return [(r, res) for r, res in zip(rows, results, strict=True) if res.verdict != r.expect]


def test_every_piece_allows_what_it_promises_and_nothing_else_with_real_packets(
    cluster: Cluster, dataplane: Dataplane, shared: Shared, operator: OperatorProcess
) -> None:
    dp = dataplane
    for name, (labels, notes) in NAMESPACES.items():
        ensure_namespace(cluster, name, labels, notes)
    pods: dict[str, Pod] = {}
    for name in NAMESPACES:
        ports = {"metrics": 9200} if name == "tt-named" else None
        pods[name] = dp.create_pod(name, "web", {"app": "web"}, named_ports=ports)
    pods["tt-full/peer"] = dp.create_pod("tt-full", "peer", {"app": "peer"})
    try:
        _check_table(cluster, dp, shared, pods, operator)
    finally:
        cluster.kubectl("delete", "baselinepolicies", *(p["metadata"]["name"] for p in _policies()))
        cluster.kubectl("delete", "namespace", *NAMESPACES, "--wait=false")
        for pod in pods.values():
            dp.delete_pod(pod)


def _check_table(
    cluster: Cluster, dp: Dataplane, shared: Shared, pods: dict[str, Pod], operator: OperatorProcess
) -> None:
    dp.wait_protected(list(pods.values()))
    cluster.apply(*_policies())
    rows = _rows(dp, shared, pods)

    started = time.monotonic()
    matched_in_a_row = 0
    while True:
        results = dp.probe([r.flow for r in rows])
        wrong = _mismatches(rows, results)
        matched_in_a_row = 0 if wrong else matched_in_a_row + 1
        if matched_in_a_row == 2 or time.monotonic() - started > 120:
            break
        time.sleep(0.5)

    shown = [
        (
            r.piece,
            r.flow.name,
            r.expect,
            res.verdict + (f" ({res.detail})" if res.detail else ""),
            "" if res.verdict == r.expect else "<-- WRONG",
            r.why,
        )
        for r, res in zip(rows, results, strict=True)
    ]
    text = table(shown, ["piece", "flow", "expected", "seen", "", "why"])
    report(
        f"[dataplane] truth table: {len(rows) - len(wrong)}/{len(rows)} flows as promised "
        f"(converged in {time.monotonic() - started:.1f}s)"
    )
    assert not wrong, f"{len(wrong)} flows not as promised:\n{text}\n\noperator:\n{operator.tail()}"
    print(text)
