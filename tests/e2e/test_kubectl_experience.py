"""What a platform engineer sees from kubectl and `nsbaseline status`, on the real API server."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from nsbaseline import crd
from tests.support.kube import Cluster, OperatorProcess, baseline_policy, wait_for

pytestmark = pytest.mark.e2e

OPT_IN = {"nsbaseline.io/enabled": "true"}


def _field_paths(schema: dict[str, Any], prefix: str) -> Iterator[str]:
    for name, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}.{name}"
        yield path
        target = sub.get("items", sub)
        yield from _field_paths(target, path)


def test_kubectl_explain_documents_every_spec_field(cluster: Cluster) -> None:
    paths = list(_field_paths(crd.spec_schema(), "baselinepolicy.spec"))
    assert len(paths) > 40
    # The API server publishes a new CRD's OpenAPI a moment after it is established.
    wait_for(
        lambda: cluster.kubectl("explain", "baselinepolicy.spec", check=False).returncode == 0,
        60,
        what="OpenAPI for BaselinePolicy published",
    )
    for path in ["baselinepolicy.spec", *paths]:
        out = cluster.kubectl("explain", path).stdout
        assert "DESCRIPTION:" in out, path
        description = out.split("DESCRIPTION:", 1)[1].split("FIELDS:", 1)[0].strip()
        assert description and "<empty>" not in description, f"{path} has no description"


def test_kubectl_get_shows_useful_columns_and_the_category_lists_policies(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    cluster.apply(baseline_policy("baseline"))
    cluster.namespace("cols", OPT_IN)
    wait_for(
        lambda: "True" in cluster.kubectl("get", "bp", "baseline").stdout,
        60,
        what="Ready column True",
    )
    header = cluster.kubectl("get", "bp").stdout.splitlines()[0].split()
    assert header == ["NAME", "MODE", "MATCHED", "COMPLIANT", "READY", "AGE"]
    wide = cluster.kubectl("get", "bp", "-o", "wide").stdout.splitlines()[0].split()
    assert "REASON" in wide
    # The `nsbaseline` category resolves to our kinds (one kind today, so no type prefix).
    listed = cluster.kubectl("get", "nsbaseline").stdout.splitlines()
    assert listed[0].split() == header
    assert [line.split()[0] for line in listed[1:]] == ["baseline"]


def _status(cluster: Cluster) -> dict[tuple[str, str], str]:
    out = subprocess.run(
        [sys.executable, "-m", "nsbaseline.cli", "status"],
        env=cluster.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    table = out.split("\n\n", 1)[0]  # the protections follow after a blank line
    rows = [line.split(None, 3) for line in table.splitlines()[1:] if line.strip()]
    return {(r[0], r[1]): r[2] for r in rows}


def test_nsbaseline_status_tells_compliant_drifted_conflict_and_excluded(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    compliant = cluster.namespace("ok", OPT_IN)
    drifted = cluster.namespace("drift", OPT_IN)
    conflict = cluster.namespace("clash", OPT_IN)
    excluded = cluster.namespace("excl", OPT_IN)
    cluster.apply(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "nsbaseline-baseline-default-deny", "namespace": conflict},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        }
    )
    cluster.apply(baseline_policy("baseline", excludedNamespaces=[excluded]))
    wait_for(
        lambda: len(cluster.netpols(drifted)) == 2 and len(cluster.netpols(compliant)) == 2,
        60,
        what="baseline applied",
    )
    operator.stop()  # nobody repairs now: the drift stays for status to see
    cluster.kubectl("delete", "networkpolicy", "nsbaseline-baseline-allow-dns", "-n", drifted)

    states = _status(cluster)
    assert states[("baseline", compliant)] == "compliant"
    assert states[("baseline", drifted)] == "drifted"
    assert states[("baseline", conflict)] == "conflict"
    assert states[("baseline", excluded)] == "excluded"
