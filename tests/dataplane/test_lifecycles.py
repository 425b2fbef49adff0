"""Lifecycles under continuous probes: DNS never fails, forbidden flows never pass once isolated.

Every scenario runs with real packets flowing throughout: from every pod of the scenario, a DNS
query every ~100 ms (UDP and TCP in turn) to kube-dns, and a forbidden flow every ~100 ms
(egress to an external host over TCP and UDP, ingress from a namespace no policy selects, in
turn). Each scenario reports two figures and asserts both are zero:

- **DNS queries that failed** (any query without its answer, from start to end);
- **forbidden connections that succeeded after the namespace was first isolated** (and before
  the test itself lifted the isolation on purpose: opt-out, policy deletion, an exception);

plus the latency from opting a namespace in to its first denied probe (p50/p99).

The scenarios: a 50-namespace rollout; the operator SIGKILLed 10 times mid-rollout; a template
upgrade that renames pieces and back; a piece disabled; namespaces opting out; an exception
starting and expiring; HA failover. (The BaselinePolicy deletion is in
test_deletion_window.py.)
"""

from __future__ import annotations

import datetime
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hack.dataplane.dataplane import Dataplane
from hack.dataplane.probes import ALLOWED, DENIED, Figures
from nsbaseline import names
from tests.support.dataplane import Shared, report
from tests.support.kube import Cluster, OperatorProcess, baseline_policy, wait_for
from tests.support.lifecycle import OPT_IN, Fleet, running, version2, wait_lanes

pytestmark = [pytest.mark.e2e, pytest.mark.dataplane, pytest.mark.slow]

POLICY = "life"
FLEET = 50
SETTLE = 3.0  # seconds of probing after the last change, to catch late violations


def _policy(**spec: object) -> dict[str, object]:
    """The lifecycle policy: opt-in label, monitoring on 9090; ``spec`` overrides."""
    base: dict[str, object] = {
        "namespaceSelector": {"matchLabels": {OPT_IN: "true"}},
        "monitoring": {"enabled": True, "ports": [{"port": 9090}]},
    }
    return baseline_policy(POLICY, **{**base, **spec})


def _check(scenario: str, fig: Figures) -> None:
    report(fig.line(scenario))
    assert not fig.never_isolated, f"{scenario}: never isolated: {fig.never_isolated[:5]}"
    assert not fig.dns_failures, f"{scenario}: DNS failed: {fig.dns_failures[:10]}"
    assert not fig.forbidden_successes, (
        f"{scenario}: forbidden flows passed after isolation: {fig.forbidden_successes[:10]}"
    )


@pytest.fixture(scope="module")
def module_dir() -> Path:
    from tests.support.kube import E2E_DIR

    path: Path = E2E_DIR / "logs" / "dataplane-lifecycles"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def fleet(cluster: Cluster, dataplane: Dataplane, shared: Shared) -> Iterator[Fleet]:
    """50 namespaces with a pod each, and the policy that selects them once they opt in."""
    cluster.kubectl("delete", "baselinepolicies", "--all", "--wait=true")
    cluster.apply(_policy())
    f = Fleet(cluster, dataplane, shared, "life", FLEET)
    yield f
    cluster.kubectl("delete", "baselinepolicy", POLICY, "--ignore-not-found", "--wait=true")
    f.delete()


def _isolated_fleet(fleet: Fleet, op_dir: Path) -> None:
    """Make sure every fleet namespace is opted in and isolated (tests may run alone)."""
    missing = [ns for ns in fleet.names if ns not in fleet.opted_in_at]
    if not missing:
        return
    with running(fleet.cluster, op_dir):
        for ns in missing:
            fleet.opt_in(ns)
        with fleet.dp.continuous(fleet.lanes(missing)) as prober:
            wait_lanes(prober, missing, DENIED)
            prober.stop()


def test_a_rollout_to_50_namespaces_isolates_each_without_breaking_dns(
    fleet: Fleet, module_dir: Path
) -> None:
    op = OperatorProcess(fleet.cluster, module_dir / "rollout").start()
    try:
        with fleet.dp.continuous(fleet.lanes()) as prober:
            time.sleep(1)  # a moment of everything allowed: no policy yet
            for ns in fleet.names:
                fleet.opt_in(ns)
                time.sleep(0.1)
            wait_lanes(prober, fleet.names, DENIED)
            time.sleep(SETTLE)
            records = prober.stop()
    finally:
        op.stop()
    _check(f"rollout of {FLEET} namespaces", fleet.figures(records))


def test_operator_sigkilled_10_times_mid_rollout_never_breaks_dns_or_isolation(
    cluster: Cluster, dataplane: Dataplane, shared: Shared, fleet: Fleet, module_dir: Path
) -> None:
    kills = Fleet(cluster, dataplane, shared, "kill", 20)
    op = OperatorProcess(cluster, module_dir / "kills").start()
    try:
        with dataplane.continuous(kills.lanes()) as prober:
            done = threading.Event()

            def rollout() -> None:
                for ns in kills.names:
                    kills.opt_in(ns)
                    time.sleep(1.0)
                done.set()

            roller = threading.Thread(target=rollout)
            roller.start()
            pause = random.Random(13)
            for _ in range(10):
                time.sleep(pause.uniform(1.0, 4.0))  # some work done between kills, or none
                op.kill()  # SIGKILL: no goodbye, writes cut off wherever they are
                op.start()
            roller.join()
            wait_lanes(prober, kills.names, DENIED)
            time.sleep(SETTLE)
            records = prober.stop()
    finally:
        op.stop()
    assert op.starts == 11
    try:
        _check("operator SIGKILLed 10 times mid-rollout (20 namespaces)", kills.figures(records))
    finally:
        kills.delete()


def test_a_template_upgrade_that_renames_pieces_and_back_keeps_dns_and_isolation(
    fleet: Fleet, module_dir: Path, tmp_path: Path
) -> None:
    _isolated_fleet(fleet, module_dir / "upgrade-prep")
    templates, env = version2(tmp_path)
    v1 = {names.object_name(POLICY, p) for p in ("allow-dns", "default-deny", "allow-monitoring")}
    v2 = {names.object_name(POLICY, p) for p in ("dns", "deny-all")}

    def converged(expected: set[str]) -> bool:
        found: dict[str, set[str]] = {}
        for obj in fleet.cluster.items(
            "networkpolicies", "-A", "-l", f"nsbaseline.io/policy={POLICY}"
        ):
            found.setdefault(obj["metadata"]["namespace"], set()).add(obj["metadata"]["name"])
        return all(found.get(ns) == expected for ns in fleet.names)

    with fleet.dp.continuous(fleet.lanes()) as prober:
        time.sleep(1)
        with running(fleet.cluster, module_dir / "v2", "--templates-dir", str(templates), env=env):
            wait_for(lambda: converged(v2), 180, interval=1, what="version 2 names everywhere")
        with running(fleet.cluster, module_dir / "v1-again"):
            wait_for(lambda: converged(v1), 180, interval=1, what="version 1 names again")
        time.sleep(SETTLE)
        records = prober.stop()
    _check("template upgrade renaming pieces and back (50 namespaces)", fleet.figures(records))


def test_disabling_a_piece_removes_only_what_it_allowed(fleet: Fleet, module_dir: Path) -> None:
    _isolated_fleet(fleet, module_dir / "disable-prep")
    dp, s = fleet.dp, fleet.shared
    scrape = [dp.flow(s.prometheus, fleet.pods[ns], 9090) for ns in fleet.names[:5]]
    assert all(r.allowed for r in dp.probe(scrape)), "monitoring must be allowed before"
    with running(fleet.cluster, module_dir / "disable"), dp.continuous(fleet.lanes()) as prober:
        time.sleep(1)
        fleet.cluster.apply(_policy(monitoring={"enabled": False}))
        monitoring = names.object_name(POLICY, "allow-monitoring")
        wait_for(
            lambda: (
                not fleet.cluster.items(
                    "networkpolicies", "-A", "--field-selector", f"metadata.name={monitoring}"
                )
            ),
            120,
            what="allow-monitoring removed everywhere",
        )
        time.sleep(SETTLE)
        records = prober.stop()
        after = dp.probe(scrape)
        fleet.cluster.apply(_policy())  # back to the fleet's policy for the next scenarios
        wait_for(lambda: all(r.allowed for r in dp.probe(scrape)), 120, what="monitoring restored")
    assert all(r.denied for r in after), "monitoring must be denied once its piece is disabled"
    _check("piece disabled (allow-monitoring, 50 namespaces)", fleet.figures(records))


def test_namespaces_opting_out_lose_isolation_after_dns_never_before(
    fleet: Fleet, module_dir: Path
) -> None:
    _isolated_fleet(fleet, module_dir / "optout-prep")
    leaving = fleet.names[:10]
    with running(fleet.cluster, module_dir / "optout"):
        with fleet.dp.continuous(fleet.lanes()) as prober:
            time.sleep(1)
            for ns in leaving:
                fleet.opt_out(ns)
            wait_lanes(prober, leaving, ALLOWED)  # the baseline is really gone
            time.sleep(SETTLE)
            records = prober.stop()
        figures = fleet.figures(records)
        for ns in leaving:  # opt back in, isolated again, for whatever runs next
            fleet.opt_in(ns)
        with fleet.dp.continuous(fleet.lanes(leaving)) as prober:
            wait_lanes(prober, leaving, DENIED)
            prober.stop()
    _check("10 of 50 namespaces opting out", figures)


def test_an_exception_starting_and_expiring_keeps_dns(
    cluster: Cluster, dataplane: Dataplane, shared: Shared, fleet: Fleet, module_dir: Path
) -> None:
    """``exc-00`` holds back the whole baseline (isolation lifted on purpose; DNS must survive
    both the removal and the restoration order); ``exc-01`` holds back allow-monitoring (stays
    isolated); ``exc-02`` has no exception."""
    group = Fleet(cluster, dataplane, shared, "exc", 3)
    lifetime = 25
    try:
        with (
            running(cluster, module_dir / "exception"),
            dataplane.continuous(group.lanes()) as prober,
        ):
            for ns in group.names:
                group.opt_in(ns)
            wait_lanes(prober, group.names, DENIED)
            start = time.time()
            expires = datetime.datetime.fromtimestamp(start + lifetime, datetime.UTC)
            stamp = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
            exceptions = [
                {
                    "namespace": "exc-00",
                    "pieces": ["default-deny", "allow-dns", "allow-monitoring"],
                    "reason": "dataplane test: isolation lifted for a while",
                    "expiresAt": stamp,
                },
                {
                    "namespace": "exc-01",
                    "pieces": ["allow-monitoring"],
                    "reason": "dataplane test: no scraping for a while",
                    "expiresAt": stamp,
                },
            ]
            group.release_all(start, expires.timestamp(), ["exc-00"])
            cluster.apply(_policy(exceptions=exceptions))
            wait_lanes(prober, ["exc-00"], ALLOWED, timeout=lifetime)
            scrape = dataplane.flow(shared.prometheus, group.pods["exc-01"], 9090)
            held_back = dataplane.probe([scrape])[0]
            wait_lanes(prober, ["exc-00"], DENIED, timeout=lifetime + 120)
            wait_for(lambda: dataplane.probe([scrape])[0].allowed, 120, what="monitoring back")
            time.sleep(SETTLE)
            records = prober.stop()
    finally:
        cluster.apply(_policy())
        group.delete()
    assert held_back.denied, "allow-monitoring must be held back while the exception lasts"
    _check("exception starting and expiring (3 namespaces)", group.figures(records))


def test_ha_failover_mid_rollout_keeps_dns_and_isolation(
    cluster: Cluster, dataplane: Dataplane, shared: Shared, fleet: Fleet, module_dir: Path
) -> None:
    group = Fleet(cluster, dataplane, shared, "ha", 10)
    peering = "dataplane-ha"
    cluster.kubectl("delete", "clusterkopfpeering", peering, "--ignore-not-found")

    def replica(name: str, priority: int) -> OperatorProcess:
        return OperatorProcess(
            cluster,
            module_dir / name,
            "--peering",
            "--peering-name",
            peering,
            "--peering-lifetime",
            "10",
            "--priority",
            str(priority),
        )

    primary, standby = replica("primary", 100), replica("standby", 50)
    try:
        primary.start()
        wait_for(lambda: "Resuming operations" in primary.tail(200), 60, what="the primary active")
        standby.start()
        time.sleep(3)
        with dataplane.continuous(group.lanes()) as prober:
            for ns in group.names[:5]:
                group.opt_in(ns)
            wait_lanes(prober, group.names[:5], DENIED)
            primary.kill()  # SIGKILL: its peering record stays until its lifetime runs out
            for ns in group.names[5:]:
                group.opt_in(ns)
                time.sleep(0.5)
            wait_lanes(prober, group.names, DENIED)
            time.sleep(SETTLE)
            records = prober.stop()
    finally:
        primary.stop()
        standby.stop()
        cluster.kubectl("delete", "clusterkopfpeering", peering, "--ignore-not-found")
        group.delete()
    _check(
        "HA failover mid-rollout (10 namespaces, 5 opted in during failover)",
        group.figures(records),
    )
