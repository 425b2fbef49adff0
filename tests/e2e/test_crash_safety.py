"""Crash safety: SIGKILL the operator in the middle of rollouts to 300 namespaces, ten times.

Every round changes what 300 namespaces must hold (a fresh rollout, then alternately adding and
removing the DNS allowance, the egress deny and the monitoring allowance), kills the operator at a
random moment while it works, restarts it and waits for convergence. An independent watch
(:mod:`watcher`) sees every write the API server stores; it must never see a namespace that denies
egress without allowing DNS, not even for one write.
"""

from __future__ import annotations

import functools
import random
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from nsbaseline import names
from tests.support.kube import Cluster, OperatorProcess, baseline_policy, manifest, wait_for
from tests.support.watcher import PolicyWatcher, expected_objects, mismatches

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NAMESPACES = 300
KILLS = 10
TEST_LABEL = "faults.nsbaseline.io/crash"

#: Policy variations cycled through the rounds; each transition makes every namespace change:
#: monitoring on -> egress deny off (DNS removed after the deny is relaxed) -> defaults (DNS
#: added back before the deny isolates egress again) -> monitoring on...
VARIANTS: list[dict[str, Any]] = [
    {"monitoring": {"enabled": True}},
    {"defaultDeny": {"egress": False}},
    {},
]


def listed(cluster: Cluster, policy: str) -> dict[str, dict[str, dict[str, Any]]]:
    """What the API server holds right now (the authoritative check after the watcher's)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for obj in cluster.items("networkpolicies", "-A", "-l", f"{names.POLICY_LABEL}={policy}"):
        out.setdefault(obj["metadata"]["namespace"], {})[obj["metadata"]["name"]] = obj
    return out


def _done_at_least(
    watcher: PolicyWatcher, expected: Mapping[str, Mapping[str, Mapping[str, Any]]], target: int
) -> int | None:
    """How many namespaces are in their final shape, once at least ``target`` are (else None)."""
    done = len(expected) - len(mismatches(watcher.snapshot(), expected))
    return done + 1 if done >= target else None  # +1: wait_for needs a truthy value


@pytest.fixture
def crash_namespaces(cluster: Cluster) -> Iterator[tuple[str, list[str]]]:
    run = uuid.uuid4().hex[:6]
    nss = [f"crash-{run}-{i:03d}" for i in range(NAMESPACES)]
    yield run, nss
    cluster.kubectl("delete", "ns", "-l", f"{TEST_LABEL}={run}", "--wait=false", timeout=300)


def test_sigkill_during_rollouts_never_leaves_a_namespace_half_applied(
    cluster: Cluster, operator: OperatorProcess, crash_namespaces: tuple[str, list[str]]
) -> None:
    run, nss = crash_namespaces
    labels = {TEST_LABEL: run}
    rng = random.Random()
    policy_name = f"crash-{run}"

    def policy(variant: Mapping[str, Any]) -> dict[str, Any]:
        return baseline_policy(
            policy_name, namespaceSelector={"matchLabels": labels}, **dict(variant)
        )

    namespace_docs = manifest(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n, "labels": labels}}
        for n in nss
    )
    prefix = f"crash-{run}-"
    figures: list[str] = []
    with PolicyWatcher(cluster.kubeconfig, lambda ns: ns.startswith(prefix)) as watcher:
        for round_ in range(KILLS):
            variant = VARIANTS[round_ % len(VARIANTS)]
            cluster.apply(policy(variant))
            creating = None
            if round_ == 0:
                # All 300 namespaces in one request stream, running while the operator reacts
                # (and while it is killed and restarted).
                creating = subprocess.Popen(
                    [cluster.kubectl_bin, "apply", "-f", "-"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    env=cluster.env,
                    text=True,
                )
                assert creating.stdin is not None
                creating.stdin.write(namespace_docs)
                creating.stdin.close()
            body = cluster.get("baselinepolicy", policy_name)
            expected = expected_objects(body, nss, labels)
            changed_at = time.monotonic()
            # Kill at a random point of the rollout: once a random share of the namespaces is
            # done (none, for a kill before the first write), so every kill interrupts real work.
            target = rng.randrange(0, NAMESPACES * 9 // 10)
            done_at_kill = wait_for(
                functools.partial(_done_at_least, watcher, expected, target),
                600,
                interval=0.2,
                what=f"round {round_}: rollout progress to {target} namespaces",
            )
            operator.kill()
            killed_at = time.monotonic()
            operator.start(wait=False)
            if creating is not None:
                assert creating.wait(timeout=300) == 0, "creating the namespaces failed"
            wait_for(
                functools.partial(_converged, watcher, expected),
                600,
                interval=0.5,
                what=f"round {round_}: all {NAMESPACES} namespaces converged (watch view)",
            )
            converged = time.monotonic()
            problems = mismatches(listed(cluster, policy_name), expected)
            assert not problems, f"round {round_}: not converged: {problems[:5]}"
            assert not watcher.violations(), (
                f"round {round_}: egress denied without DNS: {watcher.violations()[:5]}"
            )
            figures.append(
                f"round {round_ + 1}: variant {variant or 'defaults'}; killed after "
                f"{killed_at - changed_at:.1f}s with {done_at_kill - 1}/{NAMESPACES} namespaces "
                f"done; converged {converged - killed_at:.1f}s after the restart"
            )
            print(figures[-1], flush=True)
        assert watcher.relists == 1, f"the watch lost events: {watcher.blind_spots}"
        assert operator.starts == KILLS + 1
        moments = len(watcher.moments)
    print(f"watcher: {moments} namespace states seen, 0 with egress denied and DNS missing")


def _converged(watcher: PolicyWatcher, expected: Any) -> bool:
    return not mismatches(watcher.snapshot(), expected)
