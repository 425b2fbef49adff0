"""Helpers for the install tests: the kustomize bundle, ServiceAccount credentials, Helm.

The operator's production identity is the ``nsbaseline`` ServiceAccount with the ClusterRole from
``deploy/``; these helpers let a test authenticate exactly as that identity (a real token from
the TokenRequest API, not impersonation) and run the operator with it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.kube import REPO, Cluster, OperatorProcess

DEPLOY = REPO / "deploy"
CHART = REPO / "charts" / "nsbaseline"
INSTALL_NAMESPACE = "nsbaseline-system"
SERVICE_ACCOUNT = "nsbaseline"
OPERATOR_USER = f"system:serviceaccount:{INSTALL_NAMESPACE}:{SERVICE_ACCOUNT}"
VAP_NAME = "nsbaseline-protect-managed-networkpolicies"
#: The second policy of deploy/admission: allow pieces go only after their default-deny.
DELETION_ORDER_VAP_NAME = "nsbaseline-keep-dns-until-default-deny-is-gone"


def kustomize(cluster: Cluster, folder: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize folder``: the objects ``kubectl apply -k`` would send."""
    text = cluster.kubectl("kustomize", str(folder)).stdout
    return [d for d in yaml.safe_load_all(text) if d]


def install_base(cluster: Cluster) -> None:
    """Install ``deploy/base`` (everything but the admission policy); idempotent."""
    cluster.kubectl("apply", "-k", str(DEPLOY / "base"), timeout=120)
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/baselinepolicies.nsbaseline.io",
        "--timeout=60s",
    )


def token_kubeconfig(
    cluster: Cluster,
    path: Path,
    service_account: str = SERVICE_ACCOUNT,
    namespace: str = INSTALL_NAMESPACE,
) -> Path:
    """A kubeconfig for a ServiceAccount: same server and CA as the admin's, a fresh token."""
    token = cluster.kubectl(
        "create", "token", service_account, "-n", namespace, "--duration=2h"
    ).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    context_name = admin.get("current-context") or admin["contexts"][0]["name"]
    context = next(c for c in admin["contexts"] if c["name"] == context_name)["context"]
    server = next(c for c in admin["clusters"] if c["name"] == context["cluster"])
    user = f"{namespace}-{service_account}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [server],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": server["name"], "user": user}}],
        "current-context": user,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def as_user(cluster: Cluster, kubeconfig: Path) -> Cluster:
    """The same cluster, driven with another identity's kubeconfig."""
    return Cluster(kubeconfig, cluster.kubectl_bin)


@contextlib.contextmanager
def operator_as_service_account(cluster: Cluster, logdir: Path) -> Iterator[OperatorProcess]:
    """``nsbaseline run --peering`` with only the ServiceAccount's token and ClusterRole.

    A peering object of its own (created by the operator itself, which needs that permission)
    keeps it clear of other tests' replicas.
    """
    install_base(cluster)
    kubeconfig = token_kubeconfig(cluster, logdir / "nsbaseline-sa.kubeconfig")
    peering = f"lp-{uuid.uuid4().hex[:8]}"
    op = OperatorProcess(
        cluster,
        logdir,
        "--peering",
        "--peering-name",
        peering,
        env={"KUBECONFIG": str(kubeconfig)},
    ).start()
    try:
        yield op
    finally:
        op.stop()
        cluster.kubectl("delete", "clusterkopfpeering", peering, "--ignore-not-found")


def forbidden_lines(op: OperatorProcess) -> list[str]:
    """Log lines where the API server refused the operator (RBAC or admission)."""
    if not op.log_path.exists():
        return []
    refused = re.compile(r"forbidden|\b403\b", re.IGNORECASE)
    # "[2026-11-30 12:00:03,403] ..." — the milliseconds of a timestamp are no status code.
    timestamp = re.compile(r"^\[[^\]]*\]")
    return [
        line
        for line in op.log_path.read_text(errors="replace").splitlines()
        # The launch line carries random port numbers, e.g. "--metrics-port 40307".
        if not line.startswith("=====") and refused.search(timestamp.sub("", line))
    ]


def helm_binary() -> str:
    """``helm`` from the PATH, else built from Go modules by hack/helm/build.sh (cached)."""
    found = os.environ.get("NSBASELINE_TEST_HELM") or shutil.which("helm")
    if found:
        return found
    if shutil.which("go") is None:
        pytest.skip("no helm on PATH and no Go toolchain to build it")
    proc = subprocess.run(
        ["bash", str(REPO / "hack" / "helm" / "build.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise AssertionError(f"building helm failed:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


def helm_template(*args: str, namespace: str = INSTALL_NAMESPACE) -> list[dict[str, Any]]:
    """``helm template`` of the chart with ``args``; the rendered objects."""
    proc = subprocess.run(
        [
            helm_binary(),
            "template",
            "nsbaseline",
            str(CHART),
            "--namespace",
            namespace,
            "--kube-version",
            "1.36.0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise AssertionError(f"helm template {' '.join(args)} failed:\n{proc.stderr}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def by_kind_name(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}
