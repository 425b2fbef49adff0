"""The admission protections with real packets: the pod gate (issue 14) and the guardrail
(issue 17), on the kube-router dataplane.

Pod gate: N labelled namespaces, each created with a pod submitted at once and retried with the
ReplicaSet controller's backoff; a pod's network comes up only once its Pod object is admitted,
as a kubelet would bring it up. Once kube-router has programmed the pod, no flow its baseline
forbids gets through. kube-router's own programming lag (admitted -> filtered) is the CNI's, not
the gate's: it is measured and reported apart, with what the pod answered during it.

Guardrail: a namespace admin's policies that widen the baseline are refused and never take
effect (the same policy, created by the cluster admin in a control namespace, does open the
traffic: the probes would see it); a same-namespace allow is admitted and works, while the
baseline's denials still hold.
"""

from __future__ import annotations

import copy
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from hack.dataplane.dataplane import Dataplane, Pod
from hack.dataplane.kubeapi import ApiError
from hack.dataplane.probes import ALLOWED, DENIED, Flow, Result
from nsbaseline import protections
from tests.support.dataplane import EXTERNAL_DENIED, Shared, ensure_namespace, report
from tests.support.deploy import as_user, token_kubeconfig
from tests.support.gate import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    component_objects,
    ensure_pod_gate,
    percentiles,
)
from tests.support.kube import (
    E2E_DIR,
    REPO,
    Cluster,
    OperatorProcess,
    baseline_policy,
    manifest,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.dataplane]

#: 30 in CI (about 90 s); the report's figures come from NSBASELINE_GATE_PACKET_ITERATIONS=100.
ITERATIONS = int(os.environ.get("NSBASELINE_GATE_PACKET_ITERATIONS", "30"))
GATED = "dp-gate.nsbaseline.io/on"
#: The pieces of the dp-gate policy (the operator writes allow-dns first, default-deny last).
BASELINE = ("nsbaseline-dp-gate-allow-dns", "nsbaseline-dp-gate-default-deny")
GUARDED = "dp-guardrail.nsbaseline.io/on"
GUARDRAIL = REPO / "deploy" / "components" / "guardrail" / "validatingadmissionpolicies.yaml"


# ----- the pod gate ---------------------------------------------------------------------------
@dataclass
class Started:
    """One pod of the gate loop, from its namespace's creation to its first filtered packet."""

    namespace: str
    created: float
    refusals: int = 0
    admitted: float = 0.0
    programmed: float = 0.0
    pod: Pod | None = None
    answered_before_programmed: list[str] = field(default_factory=list)


@pytest.fixture
def gate_in_force(cluster: Cluster) -> Iterator[None]:
    """The pod-gate component, proven in force with a binding whose default-deny never comes."""
    ensure_pod_gate(cluster)
    never = protections.gate_binding(
        baseline_policy("dp-gate-never", namespaceSelector={"matchLabels": {GATED: "probe"}})
    )
    assert never is not None
    cluster.apply(never)
    ensure_namespace(cluster, "dp-gate-probe", {GATED: "probe"})
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe", "namespace": "dp-gate-probe"},
        "spec": {"containers": [{"name": "c", "image": "dataplane.invalid/pod:none"}]},
    }

    def refused() -> bool:
        proc = cluster.kubectl(
            "create", "--dry-run=server", "-f", "-", input=manifest([pod]), check=False
        )
        assert proc.returncode != 0, "the gate is not in force"
        return True

    wait_for(refused, 60, what="the pod gate to refuse pods")
    cluster.kubectl("delete", "validatingadmissionpolicybinding", never["metadata"]["name"])
    yield
    cluster.kubectl("delete", "namespace", "dp-gate-probe", "--wait=false")


def _start(dp: Dataplane, namespace: str, created: float, timeout: float = 180) -> Started:
    """Submit the pod like a ReplicaSet until admitted; the dataplane brings its network up."""
    s = Started(namespace, created)
    delay = BACKOFF_BASE
    deadline = time.monotonic() + timeout
    while True:
        try:
            s.pod = dp.create_pod(namespace, "app", {"app": "app"})
            s.admitted = time.monotonic()
            return s
        except ApiError as exc:
            assert "nsbaseline-pod-gate" in exc.message, exc.message
            s.refusals += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"{namespace}: still refused after {timeout}s") from exc
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF_CAP)


def _programmed_with(dp: Dataplane, pod: Pod, *netpols: str) -> bool:
    """kube-router filters ``pod`` through every NetworkPolicy in ``netpols`` of its namespace.

    A chain for the pod is not enough: kube-router watches pods and NetworkPolicies separately,
    and may build the pod's chain from a view that lacks a policy created a moment before the
    pod (allow-dns, say, but not yet default-deny, or the other way round). The pod is programmed
    with its baseline once its chains run through each of its policies and end in the REJECT rule.
    """
    mark = f"POD name:{pod.name} namespace: {pod.namespace} "
    rules = dp.iptables_save().splitlines()
    chains = {line.rsplit("-j ", 1)[-1].strip() for line in rules if mark in line}
    mine = [line for line in rules for chain in chains if line.startswith(f"-A {chain} ")]
    return any("-j REJECT" in line for line in mine) and all(
        any(f'"run through nw policy {netpol}"' in line for line in mine) for netpol in netpols
    )


def _forbidden(dp: Dataplane, shared: Shared, pod: Pod) -> list[Flow]:
    """Flows the baseline (default-deny both ways, DNS allowed) forbids for ``pod``."""
    return [
        dp.flow(shared.outsider, pod, 8080, name=f"outsider -> {pod.ref}:8080"),
        dp.flow(shared.prometheus, pod, 9090, name=f"prometheus -> {pod.ref}:9090"),
        dp.flow(pod, EXTERNAL_DENIED, 443, name=f"{pod.ref} -> {EXTERNAL_DENIED}:443"),
        dp.flow(pod, shared.outsider, 8080, name=f"{pod.ref} -> outsider:8080"),
    ]


def test_gated_pods_never_answer_what_their_baseline_forbids_once_programmed(
    cluster: Cluster,
    dataplane: Dataplane,
    shared: Shared,
    operator: OperatorProcess,
    gate_in_force: None,
) -> None:
    dp = dataplane
    bp = baseline_policy("dp-gate", namespaceSelector={"matchLabels": {GATED: "yes"}})
    binding = protections.gate_binding(bp)
    assert binding is not None
    cluster.apply(bp, binding)
    run = uuid.uuid4().hex[:4]
    started: list[Started] = []
    leaks: list[str] = []
    try:
        for i in range(ITERATIONS):
            ns = f"dp-gate-{run}-{i:03d}"
            created = time.monotonic()
            cluster.apply(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": ns, "labels": {GATED: "yes"}},
                }
            )
            s = _start(dp, ns, created)
            assert s.pod is not None
            forbidden = _forbidden(dp, shared, s.pod)
            # The CNI's own lag: until kube-router has programmed the pod with its namespace's
            # baseline, the pod is not (fully) filtered, however early the policies existed.
            while not _programmed_with(dp, s.pod, *BASELINE):
                s.answered_before_programmed += [
                    r.flow.name
                    for r in dp.probe(forbidden[:1], timeout=0.5)
                    if r.verdict == ALLOWED
                ]
                if time.monotonic() - s.admitted > 60:
                    raise AssertionError(f"{ns}: kube-router never programmed {s.pod.ref}")
            s.programmed = time.monotonic()
            results = dp.probe([*forbidden, dp.dns_flow(s.pod, shared.dns)])
            leaks += [f"{r.flow.name}: {r.verdict}" for r in results[:-1] if r.verdict != DENIED]
            assert results[-1].verdict == ALLOWED, f"{ns}: DNS broken: {results[-1]}"
            started.append(s)
            dp.delete_pod(s.pod)  # keep the node small: kube-router's sync time grows with pods
    finally:
        cluster.kubectl(
            "delete",
            "validatingadmissionpolicybinding",
            binding["metadata"]["name"],
            "--ignore-not-found",
        )
        for pod in list(dp.pods.values()):
            if pod.namespace.startswith(f"dp-gate-{run}-"):
                dp.delete_pod(pod)
        cluster.kubectl("delete", "namespaces", "-l", f"{GATED}=yes", "--wait=false", timeout=120)
    assert not leaks, (
        "flows the baseline forbids got through after kube-router programmed the pod:\n"
        + "\n".join(leaks)
    )
    figures = {
        "iterations": len(started),
        "pods_refused_at_first": sum(1 for s in started if s.refusals),
        "gate_refusals": sum(s.refusals for s in started),
        "namespace_to_pod_admitted_and_up": percentiles([s.admitted - s.created for s in started]),
        "cni_lag_admitted_to_programmed_with_baseline": percentiles(
            [s.programmed - s.admitted for s in started]
        ),
        "pods_answering_forbidden_flow_before_programmed": sum(
            1 for s in started if s.answered_before_programmed
        ),
        "forbidden_flows_through_after_programmed": len(leaks),
    }
    (E2E_DIR / "dataplane-gate-loop.json").write_text(json.dumps(figures, indent=2))
    report(f"[dataplane] pod gate loop: {json.dumps(figures)}")


# ----- the guardrail ----------------------------------------------------------------------------
def _verdicts(dp: Dataplane, flows: dict[str, Flow]) -> dict[str, str]:
    results: list[Result] = dp.probe(list(flows.values()))
    return {name: r.verdict for name, r in zip(flows, results, strict=True)}


def _policy(name: str, ns: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


ALLOW_ALL_INGRESS: dict[str, Any] = {"podSelector": {}, "ingress": [{}]}
ALLOW_ALL_EGRESS: dict[str, Any] = {
    "podSelector": {},
    "policyTypes": ["Egress"],
    "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}],
}
SAME_NAMESPACE: dict[str, Any] = {
    "podSelector": {},
    "policyTypes": ["Ingress", "Egress"],
    "ingress": [{"from": [{"podSelector": {}}]}],
    "egress": [{"to": [{"podSelector": {}}]}],
}


def test_refused_policies_never_take_effect_and_an_admitted_same_namespace_allow_works(
    cluster: Cluster, dataplane: Dataplane, shared: Shared, operator: OperatorProcess
) -> None:
    dp = dataplane
    run = uuid.uuid4().hex[:4]
    team, control = f"dp-guard-{run}", f"dp-guard-{run}-control"
    vap, binding = component_objects(GUARDRAIL)
    binding = copy.deepcopy(binding)
    binding["spec"]["matchResources"] = {"namespaceSelector": {"matchLabels": {GUARDED: run}}}
    bp = baseline_policy("dp-guardrail", namespaceSelector={"matchLabels": {GUARDED: run}})
    cluster.apply(vap, binding, bp)
    pods: list[Pod] = []
    try:
        for ns in (team, control):
            ensure_namespace(cluster, ns, {GUARDED: run})
        cluster.kubectl("create", "serviceaccount", "dev", "-n", team)
        cluster.kubectl(
            "create",
            "rolebinding",
            "dev-admin",
            "-n",
            team,
            "--clusterrole=admin",
            f"--serviceaccount={team}:dev",
        )
        tenant = as_user(
            cluster,
            token_kubeconfig(
                cluster, E2E_DIR / "logs" / "dp-guardrail-dev.kubeconfig", "dev", team
            ),
        )
        a, b = dp.create_pod(team, "a", {"app": "a"}), dp.create_pod(team, "b", {"app": "b"})
        c = dp.create_pod(control, "c", {"app": "c"})
        pods += [a, b, c]
        dp.wait_protected(pods)
        floor = {
            "outsider -> a": dp.flow(shared.outsider, a, 8080),
            "outsider -> b": dp.flow(shared.outsider, b, 8080),
            "a -> external": dp.flow(a, EXTERNAL_DENIED, 443),
            "b -> external": dp.flow(b, EXTERNAL_DENIED, 443),
            "outsider -> control": dp.flow(shared.outsider, c, 8080),
            "control -> external": dp.flow(c, EXTERNAL_DENIED, 443),
        }
        inside = {"a -> b": dp.flow(a, b, 8080), "b -> a": dp.flow(b, a, 8080)}
        dns = {"a -> dns": dp.dns_flow(a, shared.dns)}
        everything = {**floor, **inside, **dns}
        baseline = {**dict.fromkeys([*floor, *inside], DENIED), **dict.fromkeys(dns, ALLOWED)}
        wait_for(
            lambda: _verdicts(dp, everything) == baseline, 90, what="the baseline, with packets"
        )

        # The tenant's widening policies are refused...
        for name, spec in (
            ("allow-all-ingress", ALLOW_ALL_INGRESS),
            ("allow-all-egress", ALLOW_ALL_EGRESS),
        ):
            proc = tenant.apply(_policy(name, team, spec), check=False)
            assert proc.returncode != 0 and "nsbaseline-guardrail" in proc.stderr, proc.stderr
        # ...while the same policies from the cluster admin (exempt) in the control namespace do
        # open its traffic: the probes would see a refused policy that took effect.
        cluster.apply(
            _policy("allow-all-ingress", control, ALLOW_ALL_INGRESS),
            _policy("allow-all-egress", control, ALLOW_ALL_EGRESS),
        )
        opened = {**baseline, "outsider -> control": ALLOWED, "control -> external": ALLOWED}
        wait_for(
            lambda: _verdicts(dp, everything) == opened,
            60,
            what="the admin's policies to open the control namespace",
        )
        time.sleep(2)  # kube-router applies a change within a second: give a refused one time
        assert _verdicts(dp, everything) == opened, "a refused policy took effect"
        assert set(cluster.netpols(team)) == {
            f"nsbaseline-dp-guardrail-{p}" for p in ("allow-dns", "default-deny")
        }

        # The tenant's same-namespace allow is admitted and works; the floor still holds.
        proc = tenant.apply(_policy("same-namespace", team, SAME_NAMESPACE), check=False)
        assert proc.returncode == 0, proc.stderr
        together = {**opened, "a -> b": ALLOWED, "b -> a": ALLOWED}
        wait_for(
            lambda: _verdicts(dp, everything) == together,
            60,
            what="the same-namespace allow, with packets",
        )
        report(
            f"[dataplane] guardrail: {len(everything)} flows as expected after refused and "
            "admitted tenant policies"
        )
    finally:
        for pod in pods:
            dp.delete_pod(pod)
        cluster.kubectl(
            "delete",
            "validatingadmissionpolicybinding",
            binding["metadata"]["name"],
            "--ignore-not-found",
        )
        cluster.kubectl(
            "delete", "validatingadmissionpolicy", vap["metadata"]["name"], "--ignore-not-found"
        )
        cluster.kubectl("delete", "namespaces", team, control, "--wait=false", "--ignore-not-found")
