"""``explain`` and ``lint`` against a real control plane: the baseline the operator applied, real
pods (pending: there is no kubelet, but labels and ports are what policies see) and policies
written by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.support.kube import Cluster, OperatorProcess, baseline_policy, wait_for

pytestmark = pytest.mark.e2e

OPT_IN = {"nsbaseline.io/enabled": "true"}


def cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nsbaseline.cli", *args],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def pod(namespace: str, name: str, labels: dict[str, str], port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "containers": [
                {"name": "c", "image": "example.invalid/app", "ports": [{"containerPort": port}]}
            ]
        },
    }


def create_pod(cluster: Cluster, body: dict[str, Any]) -> None:
    # Pod admission waits for the namespace's default ServiceAccount (made by the controller).
    wait_for(lambda: cluster.apply(body, check=False).returncode == 0, 60, what="pod created")


def test_explain_shows_what_the_applied_baseline_allows(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    ns = cluster.namespace("explain", OPT_IN)
    cluster.apply(baseline_policy("baseline"))
    wait_for(
        lambda: (
            {"nsbaseline-baseline-allow-dns", "nsbaseline-baseline-default-deny"}
            <= set(cluster.netpols(ns))
        ),
        90,
        what="baseline applied",
    )
    create_pod(cluster, pod(ns, "web", {"app": "web"}, 8080))
    create_pod(cluster, pod(ns, "api", {"app": "api"}, 9090))

    table = cli(cluster, "explain", "-n", ns)
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line.split()[1:] for line in table.stdout.splitlines()[1:]}
    header = table.stdout.splitlines()[0].split()[3:]
    assert header == [f"{ns}/api", f"{ns}/web", "kube-system/kube-dns", "external"]
    assert rows[f"{ns}/web"] == ["none", "none", "53/TCP,53/UDP", "none"]
    assert rows["external"] == ["none", "none", "-", "-"]

    dns = cli(cluster, "explain", "--from", f"{ns}/web", "--to", "dns", "--port", "53/UDP")
    assert dns.returncode == 0, dns.stderr
    assert "ALLOWED" in dns.stdout.splitlines()[0]
    assert f"{ns}/nsbaseline-baseline-allow-dns egress[0]" in dns.stdout

    # Open web:8080 to api by hand: explain picks it up from the cluster at once.
    cluster.apply(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "api-to-web", "namespace": ns},
            "spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"app": "api"}}}],
                        "ports": [{"port": 8080}],
                    }
                ],
            },
        }
    )
    answer = cli(
        cluster,
        "explain",
        "--from",
        f"{ns}/api",
        "--to",
        f"{ns}/web",
        "--port",
        "8080",
        "-o",
        "json",
    )
    verdict = json.loads(answer.stdout)
    # Ingress at web is allowed now, but api's own egress is still denied by the baseline.
    assert verdict["allowed"] is False
    assert verdict["ingress"]["allowedBy"][0]["policy"] == f"{ns}/api-to-web"
    assert f"{ns}/nsbaseline-baseline-default-deny" in verdict["egress"]["isolatedBy"]


def test_lint_reports_cluster_policies_and_exits_non_zero_on_errors(cluster: Cluster) -> None:
    ns = cluster.namespace("lint")
    create_pod(cluster, pod(ns, "web", {"app": "web"}, 8080))
    cluster.apply(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "locked", "namespace": ns},
            "spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {
                        "from": [
                            {"podSelector": {}},
                            {"podSelector": {"matchLabels": {"app": "frontend"}}},
                            {"namespaceSelector": {"matchLabels": {"team": "nobody"}}},
                        ]
                    }
                ],
            },
        }
    )
    result = cli(cluster, "lint", "--cluster", "-o", "json")
    assert result.returncode == 1, result.stderr
    mine = {
        (f["code"], f["path"])
        for f in json.loads(result.stdout)
        if f["file"] == f"NetworkPolicy {ns}/locked"
    }
    assert mine == {
        ("egress-without-dns", "spec.policyTypes[1]"),
        ("dead-peer", "spec.ingress[0].from[1]"),
        ("no-match", "spec.ingress[0].from[1].podSelector"),
        ("no-match", "spec.ingress[0].from[2].namespaceSelector"),
        ("custom-namespace-label", "spec.ingress[0].from[2].namespaceSelector.matchLabels.team"),
    }
