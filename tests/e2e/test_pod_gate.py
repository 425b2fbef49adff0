"""The pod gate: no pod is admitted into an opted-in namespace before its default-deny exists.

The ValidatingAdmissionPolicies are exactly those of ``deploy/components/pod-gate``; the bindings
are what :func:`nsbaseline.protections.gate_binding` builds for each BaselinePolicy (the example
binding in ``deploy/examples`` is one of them). The operator runs with its ServiceAccount token,
as in the cluster, so the test also shows that the gate needs no right the operator lacks.

"Before" is decided by the API server's own order of writes: a watch on NetworkPolicies records
the resourceVersion at which each namespace's default-deny (selecting every pod, denying both
directions) appeared, and the admitted pod's resourceVersion must be later. Both are revisions of
the one etcd behind this control plane.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nsbaseline import protections
from tests.support.deploy import forbidden_lines, install_base, operator_as_service_account
from tests.support.gate import (
    NOT_FOUND,
    Submission,
    ensure_pod_gate,
    namespace_body,
    percentiles,
    pod_body,
    submit_like_a_replicaset,
)
from tests.support.kube import E2E_DIR, Cluster, OperatorProcess, baseline_policy, wait_for
from tests.support.rest import Rest
from tests.support.watcher import PolicyWatcher

pytestmark = pytest.mark.e2e

ITERATIONS = int(os.environ.get("NSBASELINE_GATE_ITERATIONS", "100"))
GATED = "nsbaseline-test/gate"
AUDIT = "nsbaseline-test/gate-audit"
OPEN = "nsbaseline-test/gate-open"


@dataclass
class Gate:
    scope: str
    policy: str
    binding: str
    operator: OperatorProcess
    logdir: Path

    def name(self, what: str) -> str:
        return f"gate-{self.scope}-{what}"


@pytest.fixture(scope="module")
def module_logdir() -> Path:
    path = E2E_DIR / "logs" / "test_pod_gate"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def gate(cluster: Cluster, module_logdir: Path) -> Iterator[Gate]:
    scope = uuid.uuid4().hex[:6]
    install_base(cluster)
    cluster.kubectl("delete", "baselinepolicies", "--all", "--wait=true")
    ensure_pod_gate(cluster)
    policy = baseline_policy(
        "gate",
        namespaceSelector={"matchLabels": {GATED: scope}},
        excludedNamespaces=[f"gate-{scope}-excluded"],
    )
    others = [
        baseline_policy(
            "gate-audit", mode="Audit", namespaceSelector={"matchLabels": {AUDIT: scope}}
        ),
        baseline_policy(
            "gate-open",
            defaultDeny={"ingress": False, "egress": False},
            namespaceSelector={"matchLabels": {OPEN: scope}},
        ),
    ]
    bindings = [b for b in map(protections.gate_binding, [policy, *others]) if b]
    assert len(bindings) == 1, "Audit mode and no default-deny need no binding"
    cluster.apply(policy, *others, *bindings)
    binding = bindings[0]["metadata"]["name"]
    with contextlib.ExitStack() as stack:
        stack.callback(_cleanup, cluster, bindings, scope)
        # The API server picks up new policies and bindings asynchronously: wait until a pod in a
        # gated namespace (no operator yet, so no default-deny) is refused.
        probe = f"gate-{scope}-probe"
        cluster.apply(namespace_body(probe, {GATED: scope}))
        with Rest(cluster.kubeconfig) as api:

            def refused() -> bool:
                status, _ = api.create(f"/api/v1/namespaces/{probe}/pods", pod_body("probe"))
                assert status != 201, "the probe pod was admitted: is the gate not bound?"
                return True

            wait_for(refused, 60, what="the pod gate to refuse pods")
        op = stack.enter_context(operator_as_service_account(cluster, module_logdir))
        yield Gate(scope, "gate", binding, op, module_logdir)
        denied = forbidden_lines(op)
        assert not denied, "the operator was refused something:\n" + "\n".join(denied)


def _cleanup(cluster: Cluster, bindings: list[dict[str, Any]], scope: str) -> None:
    """Everything but the component itself (see ensure_pod_gate)."""
    for b in bindings:
        cluster.kubectl(
            "delete",
            "validatingadmissionpolicybinding",
            b["metadata"]["name"],
            "--ignore-not-found",
        )
    for label in (GATED, AUDIT, OPEN):
        cluster.kubectl(
            "delete", "namespaces", "-l", f"{label}={scope}", "--wait=false", timeout=120
        )
    cluster.kubectl(
        "delete", "namespace", f"gate-{scope}-excluded", "--ignore-not-found", "--wait=false"
    )
    cluster.kubectl(
        "delete", "baselinepolicies", "gate", "gate-audit", "gate-open", "--ignore-not-found"
    )


def _denies_both(watcher: PolicyWatcher, namespace: str) -> tuple[int, float] | None:
    """(resourceVersion, seen at) of the first write after which the namespace held a default-deny
    for both directions."""
    for moment in watcher.history(namespace):
        if moment.deny_ingress and moment.deny_egress:
            return int(moment.resource_version), moment.at
    return None


def test_no_pod_is_admitted_before_its_default_deny_and_every_pod_is_admitted_after(
    cluster: Cluster, gate: Gate
) -> None:
    """The issue's loop: a labelled namespace is created and a pod submitted at once, N times."""
    submissions: list[Submission] = []
    prefix = gate.name("loop")
    with (
        PolicyWatcher(cluster.kubeconfig, lambda ns: ns.startswith(prefix)) as watcher,
        Rest(cluster.kubeconfig) as api,
    ):
        for i in range(ITERATIONS):
            namespace = f"{prefix}-{i:03d}"
            created_at = time.monotonic()
            status, body = api.create(
                "/api/v1/namespaces", namespace_body(namespace, {GATED: gate.scope})
            )
            assert status == 201, body
            submissions.append(submit_like_a_replicaset(api, namespace, created_at))
        wait_for(
            lambda: all(_denies_both(watcher, s.namespace) for s in submissions),
            60,
            what="the watch to have seen every default-deny",
        )
        baselines = {s.namespace: _denies_both(watcher, s.namespace) for s in submissions}

    early = []
    for s in submissions:
        baseline = baselines[s.namespace]
        assert baseline is not None
        if s.resource_version <= baseline[0]:
            early.append(
                f"{s.namespace}: pod rv {s.resource_version} <= default-deny rv {baseline[0]}"
            )
        assert set(s.refusals) <= {"gate"}, (
            f"{s.namespace}: refused for another reason: {s.messages}"
        )
    assert not early, "pods admitted before their namespace's default-deny:\n" + "\n".join(early)

    refused_first = [s for s in submissions if s.refusals]
    messages = {m for s in refused_first for m in s.messages}
    assert all(NOT_FOUND in m and gate.binding in m for m in messages), messages
    figures = {
        "iterations": len(submissions),
        "pods_refused_at_first": len(refused_first),
        "refusals_total": sum(sum(s.refusals.values()) for s in submissions),
        "pods_admitted_before_default_deny": len(early),
        "namespace_to_admitted_pod": percentiles([s.latency for s in submissions]),
        "namespace_to_default_deny_seen": percentiles(
            [baselines[s.namespace][1] - s.created_at for s in submissions]  # type: ignore[index]
        ),
    }
    (gate.logdir / "gate-loop.json").write_text(json.dumps(figures, indent=2))
    print(f"\npod gate loop: {json.dumps(figures)}")


def test_a_real_replicaset_gets_its_pod_once_the_default_deny_exists(
    cluster: Cluster, gate: Gate
) -> None:
    """The controller-manager's ReplicaSet controller, retrying on its own backoff."""
    namespaces = [gate.name(f"rs-{i}") for i in range(5)]
    with PolicyWatcher(cluster.kubeconfig, lambda ns: ns in namespaces) as watcher:
        for ns in namespaces:
            cluster.apply(namespace_body(ns, {GATED: gate.scope}), _replicaset(ns))

        def pods() -> dict[str, dict[str, Any]]:
            found = {}
            for ns in namespaces:
                items = cluster.items("pods", "-n", ns)
                if items:
                    found[ns] = items[0]
            return found if len(found) == len(namespaces) else {}

        created = wait_for(pods, 120, what="the ReplicaSets' pods")
        for ns, pod in created.items():
            baseline = _denies_both(watcher, ns)
            assert baseline is not None, ns
            assert int(pod["metadata"]["resourceVersion"]) > baseline[0], ns


def _replicaset(namespace: str) -> dict[str, Any]:
    template = pod_body("web")
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": template["metadata"], "spec": template["spec"]},
        },
    }


def test_audit_unselected_excluded_and_open_namespaces_admit_pods_at_once(
    cluster: Cluster, gate: Gate
) -> None:
    cases = {
        gate.name("audit"): {AUDIT: gate.scope},
        gate.name("open"): {OPEN: gate.scope},
        gate.name("unselected"): {},
        gate.name("excluded"): {GATED: gate.scope},  # in the policy's excludedNamespaces
    }
    with Rest(cluster.kubeconfig) as api:
        for ns, labels in cases.items():
            status, body = api.create("/api/v1/namespaces", namespace_body(ns, labels))
            assert status == 201, body
            created_at = time.monotonic()
            result = submit_like_a_replicaset(api, ns, created_at)
            assert not result.refusals, f"{ns}: {result.messages}"


def test_with_the_operator_down_new_opted_in_namespaces_refuse_pods_and_existing_ones_do_not(
    cluster: Cluster, gate: Gate
) -> None:
    existing = gate.name("existing")
    default_deny = f"nsbaseline-{gate.policy}-default-deny"
    with Rest(cluster.kubeconfig) as api:
        api.create("/api/v1/namespaces", namespace_body(existing, {GATED: gate.scope}))
        submit_like_a_replicaset(api, existing, time.monotonic())
        gate.operator.stop()
        try:
            # An existing namespace keeps its baseline: pods start at once.
            status, body = api.create(f"/api/v1/namespaces/{existing}/pods", pod_body("second"))
            assert status == 201, body
            # A new one cannot start pods while nobody writes its default-deny: the documented
            # message, for as long as the operator is away.
            fresh = gate.name("while-down")
            api.create("/api/v1/namespaces", namespace_body(fresh, {GATED: gate.scope}))
            refusals = []
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                status, body = api.create(f"/api/v1/namespaces/{fresh}/pods", pod_body())
                assert status != 201, "a pod started in a namespace without its default-deny"
                refusals.append(str(body.get("message")))
                time.sleep(0.5)
            expected = (
                f"ValidatingAdmissionPolicy 'nsbaseline-pod-gate' with binding '{gate.binding}' "
                f"denied request: failed to configure binding: {NOT_FOUND}"
            )
            assert all(expected in m for m in refusals), refusals[0]
            # A default-deny that is not what the policy asks for does not open the gate either:
            # one that denies ingress only, and one that nsbaseline did not write.
            fakes = {
                gate.name("ingress-only"): (
                    {
                        "app.kubernetes.io/managed-by": "nsbaseline",
                        "nsbaseline.io/policy": gate.policy,
                        "nsbaseline.io/piece": "default-deny",
                    },
                    ["Ingress"],
                ),
                gate.name("foreign"): ({}, ["Ingress", "Egress"]),
            }
            for ns, (labels, types) in fakes.items():
                api.create("/api/v1/namespaces", namespace_body(ns, {GATED: gate.scope}))
                cluster.apply(
                    {
                        "apiVersion": "networking.k8s.io/v1",
                        "kind": "NetworkPolicy",
                        "metadata": {"name": default_deny, "namespace": ns, "labels": labels},
                        "spec": {"podSelector": {}, "policyTypes": types},
                    }
                )

                def custom_refusal(ns: str = ns) -> str:
                    status, body = api.create(f"/api/v1/namespaces/{ns}/pods", pod_body())
                    assert status != 201, f"{ns}: a pod started behind the wrong default-deny"
                    message = str(body.get("message"))
                    return message if "must carry the labels nsbaseline sets" in message else ""

                message = wait_for(custom_refusal, 30, what=f"{ns}: the gate's own message")
                assert f"NetworkPolicy {default_deny} must carry" in message
                assert "deny all ingress and egress" in message, message
        finally:
            gate.operator.start()
        # Back up: the operator writes the missing baseline and repairs its own object, and the
        # retried pods get in. The foreign object is a conflict it leaves alone: once its owner
        # deletes it, the operator writes its own.
        submit_like_a_replicaset(api, fresh, time.monotonic(), timeout=120)
        submit_like_a_replicaset(api, gate.name("ingress-only"), time.monotonic(), timeout=120)
        cluster.kubectl("delete", "networkpolicy", default_deny, "-n", gate.name("foreign"))
        submit_like_a_replicaset(api, gate.name("foreign"), time.monotonic(), timeout=120)
