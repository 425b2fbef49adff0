"""Beyond 500 namespaces: every LIST the operator and the CLI make is paginated, its
continuations are followed, and nothing is missed.

The evidence comes from the API server itself: the local control plane's audit log records each
LIST with its request URI (``limit=``, ``continue=``) and its user. The operator and the CLI run
as a ServiceAccount of their own, so their requests are told apart from everyone else's. A
watch is not a LIST; the initial listing before a watch (Kopf's or ours) is.
"""

from __future__ import annotations

import datetime
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.support import audit
from tests.support.cli import CLUSTER_COMMANDS, assert_works, describe, nsbaseline
from tests.support.credentials import (
    Context,
    admin_server,
    cluster_entry,
    kubeconfig,
    kubectl_whoami,
    login_objects,
    mint_bound_token,
    service_account,
    write_kubeconfig,
)
from tests.support.kube import (
    TEST_LABEL,
    Cluster,
    OperatorProcess,
    baseline_policy,
    manifest,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

#: More than one page of kubectl's (and a typical client's) 500.
NAMESPACES = 520
NAMESPACES_PATH = "/api/v1/namespaces"
NETPOLS_PATH = "/apis/networking.k8s.io/v1/networkpolicies"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def test_every_list_is_paginated_and_nothing_is_missed_beyond_500_namespaces(
    cluster: Cluster,
    local_control_plane: object | None,
    tmp_path: Path,
    logdir: Path,
    clean_policies: None,
) -> None:
    audit_log: Path | None = getattr(local_control_plane, "audit_log", None)
    if audit_log is None or not getattr(local_control_plane, "audit", False):
        pytest.skip("needs the local control plane's API audit log (not an external cluster)")
    label = f"e2e.nsbaseline.io/pager-{uuid.uuid4().hex[:6]}"
    policy = "pager"
    names = [f"pg-{label[-6:]}-{i:03d}" for i in range(NAMESPACES)]
    with login_objects(cluster):
        sa = service_account(cluster, "pager")
        token = mint_bound_token(cluster, sa)
        path = write_kubeconfig(
            tmp_path / "config",
            kubeconfig(
                {
                    "p": Context(
                        cluster_entry(admin_server(cluster)), "pager", {"token": token.token}
                    )
                }
            ),
        )
        assert kubectl_whoami(cluster, path) == sa.username
        try:
            docs = [
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": n, "labels": {TEST_LABEL: "true", label: "yes"}},
                }
                for n in names
            ]
            cluster.kubectl("create", "-f", "-", input=manifest(docs), timeout=600)
            cluster.apply(
                baseline_policy(policy, namespaceSelector={"matchLabels": {label: "yes"}})
            )

            started = _now()
            op = OperatorProcess(cluster, logdir, env={"KUBECONFIG": str(path)})
            try:
                op.start(wait=False)
                op.wait_healthy(180)

                def managed() -> int:
                    out = cluster.kubectl(
                        "get",
                        "networkpolicies",
                        "-A",
                        "-l",
                        f"nsbaseline.io/policy={policy}",
                        "-o",
                        "name",
                        timeout=120,
                    ).stdout
                    return len(out.split())

                wait_for(
                    lambda: managed() == 2 * NAMESPACES,
                    900,
                    interval=5,
                    what=f"{2 * NAMESPACES} NetworkPolicies for {NAMESPACES} namespaces",
                )

                def compliant() -> bool:
                    status = (cluster.get("baselinepolicy", policy) or {}).get("status", {})
                    counts = (status.get("matchedNamespaces"), status.get("compliantNamespaces"))
                    return counts == (NAMESPACES, NAMESPACES)

                wait_for(compliant, 300, interval=2, what="policy status counts every namespace")
                assert op.proc is not None and op.proc.poll() is None, op.tail()
            finally:
                op.stop()
            operator_done = _now()

            # The CLI, as the same user: status must see every namespace, compliant.
            proc = nsbaseline("status", "-o", "yaml", "--kubeconfig", str(path), timeout=600)
            assert proc.returncode == 0, describe(proc)
            rows = yaml.safe_load(proc.stdout) or []
            states = {r["namespace"]: r["state"] for r in rows if r["policy"] == policy}
            missing = sorted(set(names) - set(states))
            assert not missing, f"{len(missing)} namespaces missing from status: {missing[:5]}"
            assert set(states.values()) == {"compliant"}, states
            for command in ("explain", "lint"):
                args = CLUSTER_COMMANDS[command]
                assert_works(command, nsbaseline(*args, "--kubeconfig", str(path), timeout=600))
            cli_done = _now()
            time.sleep(2)  # the audit event of the last request is written as it completes

            op_lists = audit.calls(audit_log, sa.username, started, operator_done)
            cli_lists = audit.calls(audit_log, sa.username, operator_done, cli_done)
            assert op_lists, "no LIST by the operator in the audit log"
            assert cli_lists, "no LIST by the CLI in the audit log"
            problems = [
                f"unpaginated LIST: {c.uri} ({c.user_agent})"
                for c in op_lists + cli_lists
                if c.limit is None
            ]
            # The namespaces were all there before the operator started: every listing of
            # them, by either, must have read page after page.
            problems += audit.pagination_problems(op_lists, NAMESPACES_PATH, NAMESPACES)
            problems += audit.pagination_problems(cli_lists, NAMESPACES_PATH, NAMESPACES)
            # The CLI ran after convergence: 2 objects per namespace existed by then.
            problems += audit.pagination_problems(cli_lists, NETPOLS_PATH, 2 * NAMESPACES)
            assert not problems, "\n".join(problems)
        finally:
            cluster.kubectl("delete", "namespaces", "-l", f"{label}=yes", "--wait=false")
            cluster.settle(900)
