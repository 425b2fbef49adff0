"""High availability with Kopf peering: two replicas, exactly one active, the other takes over.

Kopf's peering is not a Lease: every replica writes a keep-alive record (priority, lifetime,
last seen) into the status of one ClusterKopfPeering object; a replica that sees a live peer of
higher priority pauses its watches. A replica killed without a goodbye keeps its record until the
record's lifetime runs out, so the failover time is bounded by ``--peering-lifetime``.

Kopf does not create the peering object, and with ``--peering`` a replica stays paused until it
exists; nsbaseline creates it at start-up. The tests start without it to pin that.
"""

from __future__ import annotations

import functools
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nsbaseline import names
from tests.support.kube import Cluster, OperatorProcess, baseline_policy, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PEERING = "nsbaseline"
LIFETIME = 10  # seconds; the default of 60 would make failover take about a minute
TEST_LABEL = "faults.nsbaseline.io/ha"


@pytest.fixture
def peering(cluster: Cluster) -> Iterator[str]:
    """No peering object at the start (the replicas must create it), none left afterwards."""
    cluster.kubectl("delete", "clusterkopfpeering", PEERING, "--ignore-not-found")
    yield PEERING
    cluster.kubectl("delete", "clusterkopfpeering", PEERING, "--ignore-not-found")


@pytest.fixture
def run_label(cluster: Cluster) -> Iterator[dict[str, str]]:
    run = uuid.uuid4().hex[:6]
    yield {TEST_LABEL: run}
    cluster.kubectl("delete", "ns", "-l", f"{TEST_LABEL}={run}", "--wait=false", timeout=120)


def _writes(op: OperatorProcess) -> float:
    """NetworkPolicy writes the replica itself counted (its own /metrics)."""
    return sum(
        v
        for k, v in op.metrics().items()
        if k.startswith("nsbaseline_writes_total{") and "kind=NetworkPolicy" in k
    )


def _log(op: OperatorProcess) -> str:
    return op.log_path.read_text(errors="replace") if op.log_path.exists() else ""


def _is_active(op: OperatorProcess) -> bool:
    """Whether Kopf last resumed this replica (it starts paused until peering says otherwise)."""
    text = _log(op)
    return text.rfind("Resuming operations") > text.rfind("Pausing operations")


def _peers(cluster: Cluster) -> dict[str, Any]:
    body = cluster.get("clusterkopfpeering", PEERING) or {}
    return {k: v for k, v in (body.get("status") or {}).items() if isinstance(v, dict)}


def _replica(cluster: Cluster, logdir: Path, *args: str) -> OperatorProcess:
    return OperatorProcess(cluster, logdir, "--peering", "--peering-lifetime", str(LIFETIME), *args)


def test_one_replica_is_active_and_the_standby_takes_over_when_it_is_killed(
    cluster: Cluster,
    logdir: Path,
    clean_policies: None,
    peering: str,
    run_label: dict[str, str],
) -> None:
    primary = _replica(cluster, logdir / "primary", "--priority", "100")
    standby = _replica(cluster, logdir / "standby", "--priority", "50")
    try:
        primary.start()
        # Start the standby only once the primary is active and on record: it then stays in
        # the paused state every peering replica starts in.
        wait_for(lambda: _is_active(primary), 60, what="the primary to become active")
        wait_for(lambda: len(_peers(cluster)) == 1, 60, what="primary's peering record")
        standby.start()
        wait_for(lambda: len(_peers(cluster)) == 2, 60, what="both peering records")
        time.sleep(2)  # the standby has seen the peering object by now
        assert _is_active(primary) and not _is_active(standby)

        policy = f"ha-{run_label[TEST_LABEL]}"
        cluster.apply(baseline_policy(policy, namespaceSelector={"matchLabels": run_label}))
        nss = [cluster.namespace("ha", run_label) for _ in range(3)]
        dns = names.object_name(policy, "allow-dns")
        deny = names.object_name(policy, "default-deny")
        for ns in nss:
            wait_for(functools.partial(_holds, cluster, ns, {dns, deny}), 60, what=f"{ns}")
        cluster.kubectl("delete", "networkpolicy", dns, "-n", nss[0])
        wait_for(lambda: dns in cluster.netpols(nss[0]), 60, what="repair by the active replica")
        assert _writes(primary) > 0
        assert _writes(standby) == 0, "the standby wrote while paused"

        # SIGKILL: no goodbye, the primary's record stays until its lifetime runs out.
        primary.kill()
        killed = time.monotonic()
        cluster.kubectl("delete", "networkpolicy", dns, "-n", nss[1])
        wait_for(
            lambda: dns in cluster.netpols(nss[1]), 180, interval=0.2, what="repair by the standby"
        )
        failover = time.monotonic() - killed
        assert _is_active(standby)
        assert _writes(standby) > 0

        # The survivor handles every kind of change: a new namespace and a policy edit.
        fresh = cluster.namespace("ha", run_label)
        cluster.apply(
            baseline_policy(
                policy, namespaceSelector={"matchLabels": run_label}, monitoring={"enabled": True}
            )
        )
        monitoring = names.object_name(policy, "allow-monitoring")
        for ns in [*nss, fresh]:
            wait_for(
                functools.partial(_holds_exactly, cluster, ns, {dns, deny, monitoring}),
                120,
                what=f"{ns} converged by the survivor",
            )
        print(
            f"\nfailover (SIGKILL of the active replica -> first repair by the standby): "
            f"{failover:.1f}s with --peering-lifetime {LIFETIME}"
        )
    finally:
        primary.stop()
        standby.stop()
        for op in (primary, standby):
            print(f"----- {op.log_path} -----\n{op.tail(15)}")


def test_replicas_with_identical_arguments_elect_exactly_one_active(
    cluster: Cluster, logdir: Path, clean_policies: None, peering: str
) -> None:
    """Replicas of one Deployment share their arguments; Kopf would pause all of them on equal
    priorities, so each picks a random one and exactly one stays active."""
    replicas = [_replica(cluster, logdir / f"r{i}") for i in range(2)]
    try:
        for op in replicas:
            op.start()
        wait_for(lambda: len(_peers(cluster)) == 2, 60, what="both peering records")
        wait_for(lambda: sum(map(_is_active, replicas)) == 1, 60, what="exactly one active replica")
        time.sleep(LIFETIME / 2)  # and it stays that way over keep-alives
        assert sum(map(_is_active, replicas)) == 1
        assert not any("Pausing all operators" in _log(op) for op in replicas)
        priorities = {v.get("priority") for v in _peers(cluster).values()}
        assert len(priorities) == 2, priorities
    finally:
        for op in replicas:
            op.stop()


def test_a_replica_resuming_after_a_pause_repairs_what_changed_while_it_was_paused(
    cluster: Cluster,
    logdir: Path,
    clean_policies: None,
    peering: str,
    run_label: dict[str, str],
) -> None:
    """A replica that was active, paused for a higher-priority one, and resumes when that one
    dies, must not trust what it remembered from before the pause: objects deleted meanwhile are
    absent from its fresh listing but were never reported to it as deleted."""
    low = _replica(cluster, logdir / "low", "--priority", "50")
    high = _replica(cluster, logdir / "high", "--priority", "100")
    try:
        low.start()
        wait_for(lambda: _is_active(low), 60, what="the first replica to become active")
        policy = f"ha-{run_label[TEST_LABEL]}"
        cluster.apply(baseline_policy(policy, namespaceSelector={"matchLabels": run_label}))
        ns = cluster.namespace("ha", run_label)
        dns = names.object_name(policy, "allow-dns")
        wait_for(lambda: dns in cluster.netpols(ns), 60, what="baseline by the first replica")

        high.start()
        wait_for(lambda: not _is_active(low), 60, what="the first replica to pause")
        wait_for(lambda: _is_active(high), 60, what="the second replica to take over")
        # Freeze the active replica so that it cannot repair, tamper, then kill it for good.
        assert high.proc is not None
        os.kill(high.proc.pid, signal.SIGSTOP)
        cluster.kubectl("delete", "networkpolicy", dns, "-n", ns)
        high.kill()
        killed = time.monotonic()
        wait_for(
            lambda: dns in cluster.netpols(ns),
            180,
            interval=0.5,
            what="the resumed replica to restore what was deleted during its pause",
        )
        assert _is_active(low)
        print(
            f"\nresumed replica repaired a deletion it never saw {time.monotonic() - killed:.1f}s "
            "after the active replica was killed"
        )
    finally:
        high.kill()
        low.stop()


def _holds(cluster: Cluster, namespace: str, wanted: set[str]) -> bool:
    return wanted <= set(cluster.netpols(namespace))


def _holds_exactly(cluster: Cluster, namespace: str, wanted: set[str]) -> bool:
    return wanted == set(cluster.netpols(namespace))
