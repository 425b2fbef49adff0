"""Fixtures for the dataplane tests: a control plane of their own, one dataplane node, and the
cluster's shared pods (DNS, Prometheus, the ingress controller, an outsider, a forger).

The package gets its own local control plane because its controller-manager must run every
controller under its own ServiceAccount (``--use-service-account-credentials``), as real
clusters do: the admission policies tell the garbage collector from the admin by that identity.
The dataplane lives for the whole package (building it once costs seconds, kube-router's
start included); its teardown checks that the host's network namespace is exactly as before.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hack.dataplane.dataplane import Dataplane, cleanup_stale
from tests.support.dataplane import (
    FIGURES,
    FORGED_ANSWER,
    FORGED_NAMESPACE_LABELS,
    REQUIRED_ENV,
    Shared,
    ensure_namespace,
    host_changes,
    host_snapshot,
    leftover_netns,
    set_figures_file,
    unavailable_reason,
)
from tests.support.kube import E2E_DIR, REPO, Cluster

DATAPLANE_ROOT = E2E_DIR / "dataplane"
#: Who wrote which NetworkPolicy when (a test explaining a DNS failure reads it back).
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {
            "level": "Metadata",
            "resources": [{"group": "networking.k8s.io", "resources": ["networkpolicies"]}],
            "verbs": ["create", "update", "patch", "delete", "deletecollection"],
        },
        {"level": "None"},
    ],
}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("dataplane figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="package")
def dataplane_available() -> None:
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get(REQUIRED_ENV):
        pytest.fail(f"{REQUIRED_ENV} is set but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="package")
def local_control_plane(dataplane_available: None) -> Iterator[Any]:
    from hack.localcluster import LocalCluster

    workdir = E2E_DIR / "dataplane-cluster"
    old = LocalCluster.load(workdir)
    if old is not None:
        old.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    audit_policy = workdir / "audit-policy.json"
    audit_policy.write_text(json.dumps(AUDIT_POLICY))
    cluster = LocalCluster(
        workdir,
        controller_manager_args=["--use-service-account-credentials=true"],
        apiserver_args=[
            f"--audit-policy-file={audit_policy}",
            f"--audit-log-path={workdir / 'audit.log'}",
            "--audit-log-maxbackup=1",
        ],
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="package")
def cluster(local_control_plane: Any) -> Cluster:
    c = Cluster(local_control_plane.kubeconfig, str(local_control_plane.bindir / "kubectl"))
    c.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    c.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/baselinepolicies.nsbaseline.io",
        "crd/clusterkopfpeerings.kopf.dev",
        "--timeout=60s",
    )
    set_figures_file(E2E_DIR / "dataplane-figures.txt")
    return c


@pytest.fixture(scope="package")
def dataplane(cluster: Cluster) -> Iterator[Dataplane]:
    """The node, for the whole package; the host must be unchanged once it is gone."""
    cleanup_stale(DATAPLANE_ROOT)
    before = host_snapshot()
    run = secrets.token_hex(3)
    dp = Dataplane(cluster.kubeconfig, DATAPLANE_ROOT / run, run).start()
    try:
        yield dp
    finally:
        dp.stop()
        changes = host_changes(before, host_snapshot())
        left = leftover_netns(dp)
        shutil.rmtree(DATAPLANE_ROOT / run, ignore_errors=True)
        assert not left, f"network namespaces left behind: {left}"
        assert not changes, "the dataplane changed the host's network namespace:\n" + "\n".join(
            changes
        )


@pytest.fixture(scope="package")
def shared(cluster: Cluster, dataplane: Dataplane) -> Shared:
    dp = dataplane
    for ns in ("monitoring", "ingress-nginx", "dp-outsider"):
        ensure_namespace(cluster, ns)
    ensure_namespace(cluster, "dp-forger", FORGED_NAMESPACE_LABELS)
    dns = dp.create_pod("kube-system", "kube-dns", {"k8s-app": "kube-dns"})
    dp.dns_server(dns)
    forged_dns = dp.create_pod("dp-forger", "dns", {"k8s-app": "kube-dns"})
    dp.dns_server(forged_dns, answer=FORGED_ANSWER)
    s = Shared(
        dns=dns,
        node_local_dns=dp.node_local_dns(),
        prometheus=dp.create_pod(
            "monitoring", "prometheus", {"app.kubernetes.io/name": "prometheus"}
        ),
        monitoring_other=dp.create_pod("monitoring", "grafana", {"app": "grafana"}),
        ingress=dp.create_pod(
            "ingress-nginx", "controller", {"app.kubernetes.io/name": "ingress-nginx"}
        ),
        outsider=dp.create_pod("dp-outsider", "client", {"app": "client"}),
        forged_prometheus=dp.create_pod(
            "dp-forger", "prometheus", {"app.kubernetes.io/name": "prometheus"}
        ),
        forged_ingress=dp.create_pod(
            "dp-forger", "ingress", {"app.kubernetes.io/name": "ingress-nginx"}
        ),
        forged_dns=forged_dns,
    )
    dp.wait_protected(list(dp.pods.values()))
    return s


@pytest.fixture
def dp_logdir(request: pytest.FixtureRequest) -> Path:
    name: str = request.node.name
    path: Path = E2E_DIR / "logs" / ("dataplane-" + name.replace("/", "_")[:100])
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    return path
