"""Least privilege: the operator does its whole job with the ServiceAccount token and the
ClusterRole shipped in deploy/, and that ClusterRole grants nothing beyond it.

The operator runs here exactly as in the cluster (``nsbaseline run --peering``), authenticated
by a TokenRequest token of ``nsbaseline-system/nsbaseline``, not by the admin token the rest of
the suite uses.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.deploy import (
    OPERATOR_USER,
    forbidden_lines,
    install_base,
    operator_as_service_account,
)
from tests.support.kube import Cluster, baseline_policy, wait_for
from tests.support.reports import report_crds

pytestmark = pytest.mark.e2e

TEST_LABEL = "nsbaseline-test/least-privilege"


@pytest.fixture(scope="module", autouse=True)
def installed(cluster: Cluster) -> Iterator[None]:
    """deploy/base, and the report CRDs: the operator run below writes reports too, and
    ``kubectl auth can-i`` knows a resource's group only while its CRD exists."""
    install_base(cluster)
    with report_crds(cluster, "wgpolicyk8s", "openreports"):
        yield


def _pieces(cluster: Cluster, ns: str, policy: str) -> set[str]:
    return {
        o["metadata"]["labels"]["nsbaseline.io/piece"]
        for o in cluster.netpols(ns).values()
        if o["metadata"].get("labels", {}).get("nsbaseline.io/policy") == policy
    }


def test_operator_with_only_its_service_account_converges_repairs_reports_and_cleans_up(
    cluster: Cluster, logdir: Path, clean_policies: None
) -> None:
    ns = cluster.namespace("lp", labels={TEST_LABEL: "yes"})
    policy = "least-privilege"
    cluster.apply(baseline_policy(policy, namespaceSelector={"matchLabels": {TEST_LABEL: "yes"}}))
    with operator_as_service_account(cluster, logdir) as op:
        # Converge: create with server-side apply.
        wait_for(
            lambda: _pieces(cluster, ns, policy) == {"allow-dns", "default-deny"},
            90,
            what="baseline created by the ServiceAccount-run operator",
        )
        shown = cluster.kubectl(
            "get",
            "networkpolicy",
            f"nsbaseline-{policy}-default-deny",
            "-n",
            ns,
            "-o",
            "json",
            "--show-managed-fields",
        ).stdout
        managers = {f["manager"] for f in json.loads(shown)["metadata"]["managedFields"]}
        assert managers == {"nsbaseline"}, managers

        # Status: written through baselinepolicies/status only.
        def ready() -> bool:
            bp = cluster.get("baselinepolicy", policy) or {}
            conds = {c["type"]: c["status"] for c in bp.get("status", {}).get("conditions", [])}
            return conds.get("Ready") == "True"

        wait_for(ready, 60, what="Ready=True in the policy status")

        # Events: posted in the namespace.
        wait_for(lambda: cluster.events(ns, "Applied"), 60, what="an Applied event")

        # Compliance report: listed, then server-side applied (docs/reports.md).
        wait_for(
            lambda: cluster.get("policyreports.wgpolicyk8s.io", "nsbaseline", "-n", ns),
            60,
            what="a PolicyReport in the namespace",
        )

        # Drift repair: a deleted object comes back, an edited one is put back.
        dns = f"nsbaseline-{policy}-allow-dns"
        deny = f"nsbaseline-{policy}-default-deny"
        old_uid = cluster.netpols(ns)[dns]["metadata"]["uid"]
        cluster.kubectl("delete", "networkpolicy", dns, "-n", ns)
        wait_for(
            lambda: (
                cluster.netpols(ns).get(dns, {}).get("metadata", {}).get("uid")
                not in (None, old_uid)
            ),
            60,
            what="the deleted allow-dns recreated",
        )
        original = cluster.netpols(ns)[deny]["spec"]
        cluster.kubectl(
            "patch",
            "networkpolicy",
            deny,
            "-n",
            ns,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"podSelector": {"matchLabels": {"tampered": "yes"}}}}),
        )
        wait_for(
            lambda: cluster.netpols(ns)[deny]["spec"] == original,
            60,
            what="the edited default-deny reverted",
        )
        wait_for(lambda: cluster.events(ns, "Repaired"), 60, what="a Repaired event")

        # Cleanup by the operator itself (delete verb), not by garbage collection: opting out.
        cluster.kubectl("label", "namespace", ns, f"{TEST_LABEL}-")
        wait_for(
            lambda: _pieces(cluster, ns, policy) == set(),
            90,
            what="the baseline removed after opt-out",
        )
        wait_for(
            lambda: cluster.get("policyreports.wgpolicyk8s.io", "nsbaseline", "-n", ns) is None,
            60,
            what="the PolicyReport deleted after opt-out",
        )

        assert op.proc is not None and op.proc.poll() is None, op.tail()
        denied = forbidden_lines(op)
        assert not denied, "the operator needed more than its ClusterRole:\n" + "\n".join(denied)
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


# (verb, resource, namespace or "" for cluster scope, allowed?)
MATRIX: list[tuple[str, str, str, bool]] = [
    # What it needs.
    ("list", "namespaces", "", True),
    ("watch", "namespaces", "", True),
    ("get", "namespaces", "", True),
    ("list", "networkpolicies.networking.k8s.io", "", True),
    ("watch", "networkpolicies.networking.k8s.io", "", True),
    ("create", "networkpolicies.networking.k8s.io", "default", True),
    ("patch", "networkpolicies.networking.k8s.io", "default", True),
    ("delete", "networkpolicies.networking.k8s.io", "default", True),
    ("list", "baselinepolicies.nsbaseline.io", "", True),
    ("watch", "baselinepolicies.nsbaseline.io", "", True),
    ("patch", "baselinepolicies.nsbaseline.io/status", "", True),
    ("create", "events", "default", True),
    ("patch", "clusterkopfpeerings.kopf.dev", "", True),
    ("create", "clusterkopfpeerings.kopf.dev", "", True),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io", "", True),
    ("list", "policyreports.wgpolicyk8s.io", "", True),
    ("create", "policyreports.wgpolicyk8s.io", "default", True),
    ("patch", "policyreports.wgpolicyk8s.io", "default", True),
    ("delete", "policyreports.wgpolicyk8s.io", "default", True),
    ("list", "reports.openreports.io", "", True),
    ("create", "reports.openreports.io", "default", True),
    ("patch", "reports.openreports.io", "default", True),
    ("delete", "reports.openreports.io", "default", True),
    # What it must never do.
    ("get", "secrets", "default", False),
    ("list", "secrets", "", False),
    ("get", "secrets", "nsbaseline-system", False),
    ("list", "pods", "", False),
    ("create", "pods", "default", False),
    ("create", "pods/exec", "default", False),
    ("get", "configmaps", "default", False),
    ("create", "configmaps", "default", False),
    ("update", "configmaps", "nsbaseline-system", False),
    ("create", "namespaces", "", False),
    ("patch", "namespaces", "", False),
    ("update", "namespaces", "", False),
    ("delete", "namespaces", "", False),
    ("create", "baselinepolicies.nsbaseline.io", "", False),
    ("patch", "baselinepolicies.nsbaseline.io", "", False),
    ("update", "baselinepolicies.nsbaseline.io", "", False),
    ("delete", "baselinepolicies.nsbaseline.io", "", False),
    ("deletecollection", "networkpolicies.networking.k8s.io", "default", False),
    ("update", "networkpolicies.networking.k8s.io", "default", False),
    ("delete", "clusterkopfpeerings.kopf.dev", "", False),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", "", False),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io", "", False),
    ("create", "validatingadmissionpolicybindings.admissionregistration.k8s.io", "", False),
    ("delete", "validatingadmissionpolicybindings.admissionregistration.k8s.io", "", False),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", "", False),
    ("escalate", "clusterroles.rbac.authorization.k8s.io", "", False),
    ("impersonate", "users", "", False),
    ("create", "serviceaccounts/token", "nsbaseline-system", False),
    ("list", "leases.coordination.k8s.io", "", False),
    ("create", "events.events.k8s.io", "default", False),
    ("update", "policyreports.wgpolicyk8s.io", "default", False),
    ("deletecollection", "policyreports.wgpolicyk8s.io", "default", False),
    ("create", "clusterpolicyreports.wgpolicyk8s.io", "", False),
    ("update", "reports.openreports.io", "default", False),
    ("create", "clusterreports.openreports.io", "", False),
]


@pytest.mark.parametrize(
    ("verb", "resource", "namespace", "allowed"),
    MATRIX,
    ids=[
        f"{'can' if a else 'cannot'}-{v}-{r.split('.')[0]}"
        + ("-" + r.split("/")[1] if "/" in r else "")
        + (f"-in-{n}" if n else "")
        for v, r, n, a in MATRIX
    ],
)
def test_service_account_permissions_match_the_matrix(
    cluster: Cluster, verb: str, resource: str, namespace: str, allowed: bool
) -> None:
    resource, _, subresource = resource.partition("/")
    args = ["auth", "can-i", verb, resource, f"--as={OPERATOR_USER}"]
    args += [f"--subresource={subresource}"] if subresource else []
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    proc = cluster.kubectl(*args, check=False)
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), proc.stderr
    assert (answer == "yes") is allowed, f"can-i {verb} {resource} {namespace}: {answer}"


def test_no_other_binding_grants_the_service_account_anything(cluster: Cluster) -> None:
    """The matrix above only means something if our ClusterRoleBinding is the sole grant."""
    grants = []
    for kind in ("clusterrolebindings", "rolebindings"):
        for binding in cluster.items(kind, "--all-namespaces"):
            for subject in binding.get("subjects") or []:
                if (
                    subject.get("kind") == "ServiceAccount"
                    and subject.get("name") == "nsbaseline"
                    and subject.get("namespace") == "nsbaseline-system"
                ):
                    grants.append((kind, binding["metadata"]["name"], binding["roleRef"]["name"]))
    assert grants == [("clusterrolebindings", "nsbaseline", "nsbaseline")]
