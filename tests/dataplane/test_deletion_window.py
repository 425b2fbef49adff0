"""Deleting a BaselinePolicy never leaves a namespace denying egress without DNS.

The NetworkPolicies of a policy are owned by it, so deleting the policy lets the garbage
collector delete them, in no particular order; had allow-dns gone before default-deny, a
namespace would deny egress without allowing DNS for a moment. The operator orders its own
deletes (default-deny first), but it may be stopped, or slower than the garbage collector.

Measured with packets in four variants: without the admission component (``deploy/base``) and
with it (``deploy/``, whose ``nsbaseline-keep-dns-until-default-deny-is-gone`` policy refuses the
delete of an allow piece while the same policy's default-deny is still there, for everyone but
the operator), each with the operator stopped (the garbage collector alone) and running. The
variants without the admission component only report their figure (the residual window of a
``deploy/base`` install, see docs/dataplane.md); with it, not one DNS query may fail.

The variants run in that order: the admission component is installed once, for the last two
(see the ``admission`` fixture for why it is never re-bound).

The package's controller-manager runs its controllers under their own ServiceAccounts
(``--use-service-account-credentials``), so the garbage collector is
``system:serviceaccount:kube-system:generic-garbage-collector``, as in a real cluster.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hack.dataplane.dataplane import Dataplane
from hack.dataplane.probes import ALLOWED, DENIED
from tests.support.dataplane import Shared, audit_writes, report
from tests.support.deploy import (
    DELETION_ORDER_VAP_NAME,
    DEPLOY,
    kustomize,
    operator_as_service_account,
)
from tests.support.kube import E2E_DIR, Cluster, OperatorProcess, baseline_policy, wait_for
from tests.support.lifecycle import Fleet, wait_lanes
from tests.support.watcher import PolicyWatcher

pytestmark = [pytest.mark.e2e, pytest.mark.dataplane, pytest.mark.slow]

NAMESPACES = 20
SETTLE = 3.0
VARIANTS = {
    "base-gc": (False, False),
    "base-operator": (False, True),
    "admission-gc": (True, False),
    "admission-operator": (True, True),
}


CANARY = "del-canary"


#: Who deletes a deleted BaselinePolicy's NetworkPolicies (see the module docstring).
GARBAGE_COLLECTOR = "system:serviceaccount:kube-system:generic-garbage-collector"


def _canary_refused(cluster: Cluster) -> bool:
    """Whether the deletion-order policy refuses the garbage collector's delete of an allow
    piece next to its default-deny (a canary namespace): the policy really enforces, its
    parameters found.

    Asked as the garbage collector (impersonated, a server-side dry run), whom the tamper-proof
    policy lets through: an admin's delete is refused by both policies, and which of the two the
    API server names first varies from one API server process to the next.
    """
    labels = {"app.kubernetes.io/managed-by": "nsbaseline", "nsbaseline.io/policy": "canary"}
    cluster.apply(
        *(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {
                    "name": f"nsbaseline-canary-{piece}",
                    "namespace": CANARY,
                    "labels": {**labels, "nsbaseline.io/piece": piece},
                },
                "spec": {"podSelector": {}, "policyTypes": ["Egress"]},
            }
            for piece in ("default-deny", "allow-dns")
        )
    )
    proc = cluster.kubectl(
        "delete",
        "networkpolicy",
        "nsbaseline-canary-allow-dns",
        "-n",
        CANARY,
        f"--as={GARBAGE_COLLECTOR}",
        "--dry-run=server",
        check=False,
    )
    # Anything else is kept as the reason (wait_for reports the last one when it gives up).
    assert proc.returncode != 0, f"the delete went through: {proc.stdout.strip()}"
    assert DELETION_ORDER_VAP_NAME in proc.stderr, f"refused by another: {proc.stderr.strip()}"
    return True


@pytest.fixture(scope="module")
def admission(cluster: Cluster) -> Iterator[None]:
    """The ValidatingAdmissionPolicies of ``deploy/`` exactly as shipped, installed once.

    Never unbound and bound again while the module runs: Kubernetes 1.36 stops resolving a
    core-type paramKind for good once its binding is deleted (kubernetes/kubernetes#130887;
    only an API server restart recovers), and with ``parameterNotFoundAction: Allow`` the
    policy then lets everything through. The canary check makes that a clear failure.
    """
    docs = [
        d for d in kustomize(cluster, DEPLOY) if d["kind"].startswith("ValidatingAdmissionPolicy")
    ]
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CANARY}})
    cluster.apply(*docs)
    bindings = [d["metadata"]["name"] for d in docs if d["kind"].endswith("Binding")]
    try:
        wait_for(
            lambda: _canary_refused(cluster),
            120,
            interval=1,
            what=f"{DELETION_ORDER_VAP_NAME} to refuse deleting allow-dns before default-deny "
            "(if it never does, see kubernetes/kubernetes#130887)",
        )
        yield
        # Namespace deletion still completes: the canary holds a default-deny and the allow-dns
        # the policy refused to delete; the namespace controller deletes both.
        cluster.kubectl("delete", "namespace", CANARY, "--timeout=120s", timeout=150)
    finally:
        cluster.kubectl("delete", "validatingadmissionpolicybinding", *bindings)
        cluster.kubectl("delete", "namespace", CANARY, "--ignore-not-found", "--wait=false")


@contextlib.contextmanager
def operator_for(cluster: Cluster, logdir: Path, admission: bool) -> Iterator[OperatorProcess]:
    """The operator as the admin (no admission) or as its own ServiceAccount (admission)."""
    if admission:
        with operator_as_service_account(cluster, logdir) as op:
            yield op
    else:
        op = OperatorProcess(cluster, logdir).start()
        try:
            yield op
        finally:
            op.stop()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_deleting_the_baseline_policy_never_leaves_egress_denied_without_dns(
    cluster: Cluster,
    dataplane: Dataplane,
    shared: Shared,
    dp_logdir: Path,
    variant: str,
    request: pytest.FixtureRequest,
) -> None:
    admission, operator_running = VARIANTS[variant]
    if admission:
        request.getfixturevalue("admission")
    policy = f"del-{variant}"
    label = "del.nsbaseline.io/variant"
    cluster.kubectl("delete", "baselinepolicies", "--all", "--wait=true")
    fleet = Fleet(cluster, dataplane, shared, f"del-{variant}", NAMESPACES, (label, variant))
    stack = contextlib.ExitStack()
    try:
        # The objects' side of the story: every state each namespace went through.
        watcher = stack.enter_context(
            PolicyWatcher(cluster.kubeconfig, lambda ns: ns in fleet.pods)
        )
        cluster.apply(baseline_policy(policy, namespaceSelector={"matchLabels": {label: variant}}))
        with dataplane.continuous(fleet.lanes()) as prober:
            with operator_for(cluster, dp_logdir, admission):
                for ns in fleet.names:
                    fleet.opt_in(ns)
                wait_lanes(prober, fleet.names, DENIED)
                if operator_running:
                    deleted = _delete(cluster, fleet, policy)
            if not operator_running:
                deleted = _delete(cluster, fleet, policy)
            wait_lanes(prober, fleet.names, ALLOWED)  # the baseline is gone, really
            time.sleep(SETTLE)
            records = prober.stop()
    finally:
        stack.close()
        fleet.delete()
    fig = fleet.figures(records)
    who = "operator running" if operator_running else "garbage collector alone"
    install = "deploy/ (admission)" if admission else "deploy/base"
    windows = watcher.violations()
    report(
        fig.line(f"BaselinePolicy deleted, {install}, {who}")
        + f"; objects gone in {deleted:.1f}s; states denying egress without DNS: "
        f"{len(windows)} in {len({m.namespace for m in windows})} namespaces"
    )
    audit = E2E_DIR / "dataplane-cluster" / "audit.log"
    failing = {f[0].split()[-1].split("/")[0] for f in fig.dns_failures}
    for ns in sorted(failing | {m.namespace for m in windows})[:3]:
        print(f"{ns}: " + " -> ".join(f"{m.event}{sorted(m.names)}" for m in watcher.history(ns)))
        print("\n".join(f"    {line}" for line in audit_writes(audit, ns)))
    assert not fig.never_isolated and not fig.forbidden_successes, fig.forbidden_successes[:5]
    if admission:
        assert not fig.dns_failures, (
            f"DNS failed while the baseline went away: {fig.dns_failures[:10]}"
        )


def _delete(cluster: Cluster, fleet: Fleet, policy: str) -> float:
    """Delete the policy (released from now on); seconds until its objects are all gone."""
    fleet.release_all(time.time())
    start = time.monotonic()
    cluster.kubectl("delete", "baselinepolicy", policy, "--wait=false")
    wait_for(
        lambda: not cluster.items("networkpolicies", "-A", "-l", f"nsbaseline.io/policy={policy}"),
        180,
        interval=0.5,
        what=f"every NetworkPolicy of {policy} deleted",
    )
    return time.monotonic() - start
