"""Tamper-proof baselines: the shipped ValidatingAdmissionPolicy refuses a namespace admin's
edits and deletes of generated NetworkPolicies, names the BaselinePolicy to change instead,
leaves the admin's own NetworkPolicies alone, and lets the operator (and the control plane's
collectors) through.

The policy under test is exactly the one ``kubectl kustomize deploy/`` produces. Only its
binding is narrowed, to namespaces carrying a per-run label, so that the rest of the suite (which
runs the operator and tampers with objects as the admin) is unaffected while this module runs.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.deploy import (
    DEPLOY,
    VAP_NAME,
    as_user,
    forbidden_lines,
    install_base,
    kustomize,
    operator_as_service_account,
    token_kubeconfig,
)
from tests.support.kube import E2E_DIR, Cluster, OperatorProcess, baseline_policy, wait_for

pytestmark = pytest.mark.e2e

POLICY = "tamper-proof"
SCOPE_LABEL = "nsbaseline-test/vap-scope"


def _shipped(cluster: Cluster, kind: str) -> dict[str, Any]:
    docs = [
        d
        for d in kustomize(cluster, DEPLOY)
        if d["kind"] == kind and d["metadata"]["name"] == VAP_NAME
    ]
    assert len(docs) == 1, f"deploy/ should ship exactly one {kind} {VAP_NAME}"
    return docs[0]


@pytest.fixture(scope="module")
def scope() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def admission(cluster: Cluster, scope: str) -> Iterator[str]:
    """The shipped VAP, bound only to namespaces labelled with this run's scope."""
    install_base(cluster)
    vap = _shipped(cluster, "ValidatingAdmissionPolicy")
    binding = copy.deepcopy(_shipped(cluster, "ValidatingAdmissionPolicyBinding"))
    assert binding["spec"]["policyName"] == vap["metadata"]["name"] == VAP_NAME
    assert "matchResources" not in binding["spec"], "the shipped binding covers the cluster"
    binding["metadata"]["name"] = f"{VAP_NAME}-test-{scope}"
    binding["spec"]["matchResources"] = {"namespaceSelector": {"matchLabels": {SCOPE_LABEL: scope}}}
    cluster.apply(vap, binding)
    yield binding["metadata"]["name"]
    # Unbind first: deleting a namespace removes its NetworkPolicies, and in this local control
    # plane the namespace controller authenticates as the admin, whom the policy refuses.
    cluster.kubectl("delete", "validatingadmissionpolicybinding", binding["metadata"]["name"])
    cluster.kubectl(
        "delete", "namespace", "-l", f"{SCOPE_LABEL}={scope}", "--wait=false", timeout=120
    )


@pytest.fixture(scope="module")
def module_logdir() -> Path:
    path = E2E_DIR / "logs" / "test_admission_policy"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def operator_sa(cluster: Cluster, admission: str, module_logdir: Path) -> Iterator[OperatorProcess]:
    cluster.kubectl("delete", "baselinepolicies", "--all", "--wait=true")
    cluster.apply(
        baseline_policy(POLICY, namespaceSelector={"matchLabels": {"nsbaseline-test/vap": "on"}})
    )
    with operator_as_service_account(cluster, module_logdir) as op:
        yield op
        denied = forbidden_lines(op)
        assert not denied, "the admission policy refused the operator:\n" + "\n".join(denied)
    cluster.kubectl("delete", "baselinepolicies", "--all", "--wait=true")


@pytest.fixture(scope="module")
def tenant(cluster: Cluster, scope: str, operator_sa: OperatorProcess, module_logdir: Path) -> Any:
    """A protected namespace with its baseline, and its admin (RoleBinding to ``admin``)."""
    ns = cluster.namespace("vap", labels={SCOPE_LABEL: scope, "nsbaseline-test/vap": "on"})
    cluster.kubectl("create", "serviceaccount", "tenant-admin", "-n", ns)
    cluster.kubectl(
        "create",
        "rolebinding",
        "tenant-admin",
        "-n",
        ns,
        "--clusterrole=admin",
        f"--serviceaccount={ns}:tenant-admin",
    )
    kubeconfig = token_kubeconfig(
        cluster, module_logdir / f"{ns}-admin.kubeconfig", "tenant-admin", ns
    )
    wait_for(
        lambda: (
            {f"nsbaseline-{POLICY}-allow-dns", f"nsbaseline-{POLICY}-default-deny"}
            <= set(cluster.netpols(ns))
        ),
        90,
        what="the baseline in the protected namespace",
    )
    return ns, as_user(cluster, kubeconfig)


def _refusal(proc: Any) -> str:
    assert proc.returncode != 0, f"expected a refusal, got: {proc.stdout}"
    return str(proc.stderr)


def test_namespace_admin_cannot_delete_a_managed_network_policy(
    cluster: Cluster, tenant: Any
) -> None:
    ns, admin = tenant
    name = f"nsbaseline-{POLICY}-default-deny"
    # RBAC alone would allow it: the refusal below comes from admission, not authorization.
    assert (
        admin.kubectl("auth", "can-i", "delete", "networkpolicies", "-n", ns).stdout.strip()
        == "yes"
    )
    uid = cluster.netpols(ns)[name]["metadata"]["uid"]
    message = _refusal(admin.kubectl("delete", "networkpolicy", name, "-n", ns, check=False))
    assert VAP_NAME in message
    assert f"BaselinePolicy {POLICY}" in message and "cannot be deleted" in message
    assert f"kubectl edit baselinepolicy {POLICY}" in message
    assert cluster.netpols(ns)[name]["metadata"]["uid"] == uid, "the object must be untouched"


def test_namespace_admin_cannot_edit_relabel_or_replace_a_managed_network_policy(
    cluster: Cluster, tenant: Any
) -> None:
    ns, admin = tenant
    name = f"nsbaseline-{POLICY}-allow-dns"
    before = cluster.netpols(ns)[name]
    attempts = [
        (
            "patch",
            "networkpolicy",
            name,
            "-n",
            ns,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"egress": []}}),
        ),
        ("label", "networkpolicy", name, "-n", ns, "app.kubernetes.io/managed-by-"),
        ("annotate", "networkpolicy", name, "-n", ns, "note=mine"),
    ]
    for args in attempts:
        message = _refusal(admin.kubectl(*args, check=False))
        assert f"BaselinePolicy {POLICY}" in message and "cannot be changed" in message, args
    after = cluster.netpols(ns)[name]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_namespace_admin_keeps_full_control_of_their_own_network_policies(
    cluster: Cluster, tenant: Any
) -> None:
    ns, admin = tenant
    own = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "team-allow-web", "namespace": ns},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]},
    }
    admin.apply(own)
    admin.kubectl("label", "networkpolicy", "team-allow-web", "-n", ns, "tier=web")
    admin.kubectl(
        "patch",
        "networkpolicy",
        "team-allow-web",
        "-n",
        ns,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"ingress": [{"from": [{"podSelector": {}}]}]}}),
    )
    assert cluster.netpols(ns)["team-allow-web"]["spec"]["ingress"]
    admin.kubectl("delete", "networkpolicy", "team-allow-web", "-n", ns)
    assert "team-allow-web" not in cluster.netpols(ns)


def test_even_the_cluster_admin_is_refused_but_control_plane_collectors_are_let_through(
    cluster: Cluster, tenant: Any
) -> None:
    ns, _ = tenant
    name = f"nsbaseline-{POLICY}-default-deny"
    message = _refusal(cluster.kubectl("delete", "networkpolicy", name, "-n", ns, check=False))
    assert f"BaselinePolicy {POLICY}" in message
    # The garbage collector (policy deleted) and the namespace controller (namespace deleted)
    # must be able to remove the objects; server-side dry run still goes through admission.
    for user in (
        "system:serviceaccount:kube-system:generic-garbage-collector",
        "system:serviceaccount:kube-system:namespace-controller",
    ):
        cluster.kubectl(
            "delete", "networkpolicy", name, "-n", ns, f"--as={user}", "--dry-run=server"
        )
    assert name in cluster.netpols(ns)


def test_operator_still_repairs_updates_and_removes_its_objects_through_the_policy(
    cluster: Cluster, tenant: Any, operator_sa: OperatorProcess
) -> None:
    ns, _ = tenant
    # Update and create: turning on a piece changes the set (and may rewrite the others).
    cluster.kubectl(
        "patch",
        "baselinepolicy",
        POLICY,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"monitoring": {"enabled": True}}}),
    )
    monitoring = f"nsbaseline-{POLICY}-allow-monitoring"
    wait_for(lambda: monitoring in cluster.netpols(ns), 90, what="allow-monitoring added")
    # Repair: drift made by an identity the policy lets through (here the garbage collector's)
    # is reverted by the operator, whose own update passes the policy too.
    dns = f"nsbaseline-{POLICY}-allow-dns"
    cluster.kubectl(
        "patch",
        "networkpolicy",
        dns,
        "-n",
        ns,
        "--type=merge",
        "--as=system:serviceaccount:kube-system:generic-garbage-collector",
        "-p",
        json.dumps({"spec": {"podSelector": {"matchLabels": {"drift": "yes"}}}}),
    )
    wait_for(
        lambda: cluster.netpols(ns)[dns]["spec"]["podSelector"] == {},
        90,
        what="the drifted allow-dns repaired by the operator",
    )
    # Delete: turning the piece off again removes it, through the policy.
    cluster.kubectl(
        "patch",
        "baselinepolicy",
        POLICY,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"monitoring": {"enabled": False}}}),
    )
    wait_for(lambda: monitoring not in cluster.netpols(ns), 90, what="allow-monitoring removed")
    assert operator_sa.proc is not None and operator_sa.proc.poll() is None
