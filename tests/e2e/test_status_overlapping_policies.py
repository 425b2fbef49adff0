"""``nsbaseline status`` when two BaselinePolicies select one namespace: each policy is judged
by its own objects, so a converged namespace is compliant for both, and a tamper with one
policy's object makes only that policy drifted."""

from __future__ import annotations

import json
import uuid

import pytest
import yaml

from tests.support.cli import describe, nsbaseline, status_rows
from tests.support.kube import Cluster, OperatorProcess, baseline_policy, wait_for

pytestmark = pytest.mark.e2e


def _status(cluster: Cluster, *args: str) -> str:
    # Through KUBECONFIG (no flags): the admin's kubeconfig.
    proc = nsbaseline("status", *args, env={"KUBECONFIG": str(cluster.kubeconfig)})
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, describe(proc)
    return proc.stdout


def test_status_judges_each_policy_by_its_own_objects_when_two_select_one_namespace(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    label = f"e2e.nsbaseline.io/overlap-{uuid.uuid4().hex[:6]}"
    ns = cluster.namespace("overlap", {label: "yes"})
    selector = {"matchLabels": {label: "yes"}}
    cluster.apply(
        baseline_policy("alpha", namespaceSelector=selector),
        baseline_policy("beta", namespaceSelector=selector),
    )
    expected = {
        f"nsbaseline-{p}-{piece}"
        for p in ("alpha", "beta")
        for piece in ("allow-dns", "default-deny")
    }
    wait_for(lambda: expected <= set(cluster.netpols(ns)), 120, what="both baselines applied")

    def both_compliant() -> bool:
        rows = status_rows(nsbaseline("status", env={"KUBECONFIG": str(cluster.kubeconfig)}))
        return rows.get(("alpha", ns)) == rows.get(("beta", ns)) == "compliant"

    wait_for(both_compliant, 60, interval=1, what="status: alpha and beta compliant")
    listed = yaml.safe_load(_status(cluster, "-o", "yaml"))
    assert isinstance(listed, list)
    mine = sorted((r["policy"], r["state"]) for r in listed if r["namespace"] == ns)
    assert mine == [("alpha", "compliant"), ("beta", "compliant")], listed
    assert all(set(r) == {"policy", "namespace", "state", "detail"} for r in listed), listed

    operator.stop()  # nobody repairs now: the tamper stays for status to see
    cluster.kubectl(
        "patch",
        "networkpolicy",
        "nsbaseline-alpha-default-deny",
        "-n",
        ns,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"podSelector": {"matchLabels": {"tampered": "yes"}}}}),
    )
    text = _status(cluster)
    header = text.splitlines()[0].split()
    assert header == ["POLICY", "NAMESPACE", "STATE", "DETAIL"], text
    rows = status_rows(nsbaseline("status", env={"KUBECONFIG": str(cluster.kubeconfig)}))
    assert rows[("alpha", ns)] == "drifted", text
    assert rows[("beta", ns)] == "compliant", text
