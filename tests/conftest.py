"""Session fixtures: one real control plane per test session, shared by every e2e test.

By default the local control plane (etcd, kube-apiserver, kube-controller-manager built from Go
modules) is started once in ``.cache/e2e/``. Set ``NSBASELINE_TEST_KUBECONFIG`` to run the same
suite against an existing cluster instead (for example a kind cluster); then nothing is started
and ``kubectl`` is taken from ``NSBASELINE_TEST_KUBECTL`` or the PATH.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hack.localcluster import LocalCluster
from tests.support.gate import ensure_pod_gate
from tests.support.kube import E2E_DIR, REPO, Cluster, OperatorProcess


@pytest.fixture(scope="session")
def local_control_plane() -> Iterator[object | None]:
    """The LocalCluster object when we started one, else None (external cluster)."""
    if os.environ.get("NSBASELINE_TEST_KUBECONFIG"):
        yield None
        return
    workdir = E2E_DIR / "cluster"
    old = LocalCluster.load(workdir)
    if old is not None:
        old.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    # The audit log (LISTs and WATCHes only) lets tests check how clients list (pagination).
    cluster = LocalCluster(workdir, audit=True)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def cluster(local_control_plane: object | None) -> Cluster:
    external = os.environ.get("NSBASELINE_TEST_KUBECONFIG")
    if external:
        kubectl = os.environ.get("NSBASELINE_TEST_KUBECTL") or shutil.which("kubectl") or "kubectl"
        c = Cluster(Path(external), kubectl)
    else:
        lc = local_control_plane
        assert isinstance(lc, LocalCluster) and lc.bindir is not None
        c = Cluster(lc.kubeconfig, str(lc.bindir / "kubectl"))
    c.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    c.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/baselinepolicies.nsbaseline.io",
        "crd/clusterkopfpeerings.kopf.dev",
        "--timeout=60s",
    )
    # Before any test binds a policy whose parameters are NetworkPolicies (the default install's
    # deletion-order policy is one) and deletes that binding again: kube-apiserver then stops the
    # NetworkPolicy parameter cache for good (kubernetes#133827) and the pod gate, installed
    # later, would refuse every pod. The gate's anchor binding keeps the cache running; without
    # per-policy bindings the gate refuses nothing.
    ensure_pod_gate(c)
    return c


@pytest.fixture
def logdir(request: pytest.FixtureRequest) -> Path:
    path = E2E_DIR / "logs" / str(request.node.name).replace("/", "_")[:120]
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def clean_policies(cluster: Cluster) -> Iterator[None]:
    """Each test starts with no BaselinePolicy and none of the namespaces earlier tests made,
    and ends with no BaselinePolicy, so tests cannot see each other's."""
    cluster.kubectl("delete", "baselinepolicies", "--all", "--wait=true")
    cluster.settle()
    yield
    cluster.kubectl("delete", "baselinepolicies", "--all", "--wait=true")


@pytest.fixture
def operator(
    cluster: Cluster, logdir: Path, clean_policies: None, request: pytest.FixtureRequest
) -> Iterator[OperatorProcess]:
    """A running operator (``nsbaseline run --standalone``) for one test."""
    op = OperatorProcess(cluster, logdir).start()
    yield op
    op.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"\n----- operator log ({op.log_path}) -----\n{op.tail(200)}")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, "rep_" + rep.when, rep)
