"""Proof that the test control plane is a real Kubernetes: CRDs, namespace deletion, garbage
collection and RBAC all behave as in a production cluster."""

from __future__ import annotations

import json

import pytest

from tests.support.kube import Cluster, wait_for

pytestmark = pytest.mark.e2e


def test_crd_from_crds_folder_is_established(cluster: Cluster) -> None:
    crd = cluster.get("crd", "baselinepolicies.nsbaseline.io")
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions["Established"] == "True"
    assert "bp" in cluster.kubectl("api-resources", "--api-group=nsbaseline.io").stdout


def test_server_reports_the_pinned_kubernetes_version(cluster: Cluster) -> None:
    info = json.loads(cluster.raw("/version"))
    assert info["major"] == "1" and info["minor"].startswith("36"), info
    assert info["gitVersion"].startswith("v1.36.")


def test_deleted_namespace_really_goes_away(cluster: Cluster) -> None:
    ns = cluster.namespace("gone")
    cluster.kubectl("create", "configmap", "c", "-n", ns)
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
    wait_for(lambda: cluster.get("namespace", ns) is None, 120, what=f"namespace {ns} deleted")


def test_dependent_is_garbage_collected_with_its_owner(cluster: Cluster) -> None:
    ns = cluster.namespace("gc")
    cluster.kubectl("create", "configmap", "owner", "-n", ns)
    owner = cluster.get("configmap", "owner", "-n", ns)
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "dependent",
                "namespace": ns,
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "owner",
                        "uid": owner["metadata"]["uid"],
                    }
                ],
            },
        }
    )
    cluster.kubectl("delete", "configmap", "owner", "-n", ns)
    wait_for(
        lambda: cluster.get("configmap", "dependent", "-n", ns) is None,
        120,
        what="garbage collection of the dependent ConfigMap",
    )
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_token_without_rbac_binding_is_refused(
    cluster: Cluster, local_control_plane: object
) -> None:
    if local_control_plane is None:
        pytest.skip("needs the local control plane's unprivileged token")
    status, body = local_control_plane.request(  # type: ignore[attr-defined]
        "/api/v1/namespaces/default/secrets",
        token=local_control_plane.tokens["unprivileged"],  # type: ignore[attr-defined]
    )
    assert status == 403, body
    assert "forbidden" in body.lower()
