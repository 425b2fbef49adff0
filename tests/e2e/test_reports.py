"""Compliance reports on a real control plane, with the real CRDs from their projects' Go modules.

The PolicyReport CRD (``wgpolicyk8s.io/v1alpha2``) and the OpenReports ``Report`` CRD come from
Go's module cache (``hack/reportcrds.py``: pinned modules, nothing retyped or committed). They are
installed here and removed at the end of the module, so the rest of the suite runs the operator
without them — as before.

What is pinned: a report appears when its CRD does (installed after the operator started); a
conflict and a broken template show as ``fail``, an exception as ``skip`` with its reason and
expiry, and ``pass`` comes back after repair; opting out deletes the report; nothing is written
while nothing changes, nor by a restart on a converged cluster (``apiserver_request_total``);
``--reports openreports`` writes Reports instead. (tests/e2e/test_least_privilege.py runs the
operator with the ServiceAccount's ClusterRole while these CRDs exist, reports included.)
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hack.reportcrds import SOURCES, crd_path
from tests.support.kube import Cluster, OperatorProcess, baseline_policy, wait_for
from tests.support.reports import install_report_crd, remove_report_crds

pytestmark = pytest.mark.e2e

LABEL = "nsbaseline-test/reports"
POLICY = "rp"
SWITCH = "switch"
#: Renders a valid NetworkPolicy until the policy sets ``values.bad``; then fails to render.
SWITCH_TEMPLATE = """\
{%- if values.bad %}{{ values.no_such_value.port }}{% endif %}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress:
  - ports:
    - port: 8080
"""
POLICY_REPORTS = "policyreports.wgpolicyk8s.io"
OPEN_REPORTS = "reports.openreports.io"
REASON = "INC-7: DNS through a sidecar during the migration"
EXPIRES = "2099-01-01T00:00:00Z"


def _name(piece: str, policy: str = POLICY) -> str:
    return f"nsbaseline-{policy}-{piece}"


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> Iterator[None]:
    """Removes the report CRDs (and so every report) after the module, whatever happened."""
    yield
    remove_report_crds(cluster)


def report(cluster: Cluster, ns: str, resource: str = POLICY_REPORTS) -> dict[str, Any] | None:
    found: dict[str, Any] | None = cluster.get(resource, "nsbaseline", "-n", ns)
    return found


def results(body: dict[str, Any] | None) -> dict[tuple[str, str], dict[str, Any]]:
    """(policy, rule) -> result of a report (empty when there is no report)."""
    return {(r["policy"], r["rule"]): r for r in (body or {}).get("results") or []}


def outcome(cluster: Cluster, ns: str, resource: str = POLICY_REPORTS) -> dict[str, str]:
    """rule -> pass/fail/skip/warn of policy ``rp`` in ``ns``."""
    return {rule: r["result"] for (_, rule), r in results(report(cluster, ns, resource)).items()}


def policy(bad: bool, exception_ns: str) -> dict[str, Any]:
    return baseline_policy(
        POLICY,
        namespaceSelector={"matchLabels": {LABEL: "yes"}},
        templates=[{"name": SWITCH, "values": {"bad": bad}}],
        exceptions=[
            {
                "namespace": exception_ns,
                "pieces": ["allow-dns"],
                "reason": REASON,
                "expiresAt": EXPIRES,
            }
        ],
    )


def template_fails(cluster: Cluster, ns: str) -> bool:
    return outcome(cluster, ns).get(SWITCH) == "fail"


def metric(op: OperatorProcess, prefix: str) -> float:
    return sum(v for k, v in op.metrics().items() if k.startswith(prefix))


def wait_compared(cluster: Cluster, op: OperatorProcess, stored: int) -> None:
    """Until every namespace was reconciled and every report compared (and written if needed)."""
    live = [n for n in cluster.items("namespaces") if not n["metadata"].get("deletionTimestamp")]

    def done() -> bool:
        return (
            metric(op, "nsbaseline_reconciles_total") >= len(live)
            and metric(op, "nsbaseline_queue_depth") == 0
            and metric(op, "nsbaseline_reports_pending") == 0
            and metric(op, "nsbaseline_reports_stored") == stored
        )

    wait_for(done, 120, interval=0.5, what="every namespace reconciled and its report compared")


def test_reports_follow_the_baseline_from_crd_install_to_opt_out(
    cluster: Cluster, logdir: Path, clean_policies: None, crds: None, tmp_path: Path
) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / f"{SWITCH}.yaml.j2").write_text(SWITCH_TEMPLATE)
    # Sweeps every 5 s: the quiet window below covers two of them.
    op = OperatorProcess(
        cluster, logdir, "--templates-dir", str(templates), "--sweep-interval", "5"
    ).start()
    try:
        ns_a = cluster.namespace("rp", {LABEL: "yes"})
        ns_b = cluster.namespace("rp", {LABEL: "yes"})
        held = _name("allow-dns")
        cluster.apply(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": held, "namespace": ns_b, "labels": {"team": "payments"}},
                "spec": {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]},
            }
        )
        cluster.apply(policy(False, ns_a))
        wait_for(
            lambda: {_name("default-deny"), _name(SWITCH)} <= set(cluster.netpols(ns_b)),
            90,
            what="the baseline around the conflict",
        )

        # The CRD comes after the operator: reports appear without a restart.
        install_report_crd(cluster, "wgpolicyk8s")
        expected_a = {"allow-dns": "skip", "default-deny": "pass", SWITCH: "pass"}
        expected_b = {"allow-dns": "fail", "default-deny": "pass", SWITCH: "pass"}
        wait_for(lambda: outcome(cluster, ns_a) == expected_a, 90, what=f"report of {ns_a}")
        wait_for(lambda: outcome(cluster, ns_b) == expected_b, 60, what=f"report of {ns_b}")
        body_a, body_b = report(cluster, ns_a), report(cluster, ns_b)
        assert body_a is not None and body_b is not None
        assert body_a["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "nsbaseline"
        assert body_b["summary"] == {"pass": 2, "fail": 1, "warn": 0, "error": 0, "skip": 0}
        skip = results(body_a)[(POLICY, "allow-dns")]
        assert skip["properties"] == {"state": "exception", "reason": REASON, "expiresAt": EXPIRES}
        conflict = results(body_b)[(POLICY, "allow-dns")]
        assert "not managed by nsbaseline" in conflict["message"], conflict
        assert conflict["resources"] == [
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "name": held,
                "namespace": ns_b,
            }
        ]
        assert conflict["source"] == "nsbaseline" and conflict["timestamp"]["seconds"] > 0

        # The conflict goes and, at the same time, the template breaks: fail for the template
        # everywhere; then it is fixed and every piece passes (allow-dns in ns_b created).
        cluster.kubectl("delete", "networkpolicy", held, "-n", ns_b)
        cluster.apply(policy(True, ns_a))
        for ns in (ns_a, ns_b):
            wait_for(
                functools.partial(template_fails, cluster, ns),
                60,
                what=f"the broken template reported as fail in {ns}",
            )
        broken = results(report(cluster, ns_a))[(POLICY, SWITCH)]
        assert f"template '{SWITCH}'" in broken["message"], broken
        assert broken["properties"]["state"] == "template-error"
        cluster.apply(policy(False, ns_a))
        all_pass = {"allow-dns": "pass", "default-deny": "pass", SWITCH: "pass"}
        wait_for(lambda: outcome(cluster, ns_a) == expected_a, 60, what=f"{ns_a} repaired")
        wait_for(lambda: outcome(cluster, ns_b) == all_pass, 120, what=f"{ns_b} all pass")

        # Nothing changes: no report write across two sweeps, the reports stay as they are.
        time.sleep(2)
        quiet = cluster.request_counts()
        before = {ns: report(cluster, ns) for ns in (ns_a, ns_b)}
        time.sleep(12)
        assert cluster.writes("policyreports", since=quiet) == 0
        assert {ns: report(cluster, ns) for ns in (ns_a, ns_b)} == before

        # A restart on a converged cluster writes nothing either (reports listed and compared).
        restart = cluster.request_counts()
        op.restart()
        wait_compared(cluster, op, stored=2)
        time.sleep(3)
        assert cluster.writes("policyreports", since=restart) == 0
        assert {ns: report(cluster, ns) for ns in (ns_a, ns_b)} == before

        # Opt-out: the namespace leaves every selection, its report goes; the other stays.
        cluster.kubectl("label", "namespace", ns_a, f"{LABEL}-")
        wait_for(lambda: report(cluster, ns_a) is None, 60, what=f"report of {ns_a} deleted")
        assert outcome(cluster, ns_b) == all_pass
        assert op.proc is not None and op.proc.poll() is None, op.tail()
    finally:
        op.stop()


def test_openreports_flag_writes_reports_and_no_policyreports(
    cluster: Cluster, logdir: Path, clean_policies: None, crds: None
) -> None:
    install_report_crd(cluster, "wgpolicyk8s")
    install_report_crd(cluster, "openreports")
    with_ns = cluster.namespace("orp", {LABEL: "yes"})
    op = OperatorProcess(cluster, logdir, "--reports", "openreports").start()
    try:
        cluster.apply(baseline_policy("orp", namespaceSelector={"matchLabels": {LABEL: "yes"}}))

        def passing() -> dict[str, Any] | None:
            body = report(cluster, with_ns, OPEN_REPORTS)
            found = {rule: r["result"] for (_, rule), r in results(body).items()}
            return body if found == {"allow-dns": "pass", "default-deny": "pass"} else None

        body = wait_for(passing, 90, what="an OpenReports Report with every piece passing")
        assert (body["apiVersion"], body["kind"], body["source"]) == (
            "openreports.io/v1alpha1",
            "Report",
            "nsbaseline",
        )
        assert report(cluster, with_ns) is None, "--reports openreports writes no PolicyReport"
        cluster.kubectl("delete", "baselinepolicy", "orp", "--wait=true")
        wait_for(
            lambda: report(cluster, with_ns, OPEN_REPORTS) is None,
            60,
            what="the Report deleted once no policy selects the namespace",
        )
    finally:
        op.stop()


def test_the_crds_come_from_the_pinned_go_modules() -> None:
    """Nothing retyped: each CRD file is read from Go's module cache at the pinned version."""
    for flag, source in SOURCES.items():
        path = crd_path(flag)
        assert str(path).endswith(f"{source.module}@{source.version}/{source.path}"), path
