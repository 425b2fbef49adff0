"""Time-boxed exceptions on a real control plane: effective at once, shown in status, restored by
the operator itself at the deadline, and validated by the CRD schema."""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.kube import Cluster, baseline_policy, running_operator, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

OPT_IN = {"nsbaseline.io/enabled": "true"}
MONITORING = "nsbaseline-baseline-allow-monitoring"


def _rfc3339(when: datetime.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _server_time(value: str) -> datetime.datetime:
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


def _status_exceptions(cluster: Cluster) -> list[dict[str, Any]]:
    bp = cluster.get("baselinepolicy", "baseline") or {}
    return list(bp.get("status", {}).get("exceptions") or [])


def test_exception_removes_a_piece_at_once_and_the_operator_restores_it_at_expiry(
    cluster: Cluster, logdir: Path, clean_policies: None
) -> None:
    # A sweep interval far beyond the test: only the expiry timer can bring the piece back.
    with running_operator(cluster, logdir, "--sweep-interval", "3600"):
        ns = cluster.namespace("exc", OPT_IN)
        spec: dict[str, Any] = {"monitoring": {"enabled": True}}
        cluster.apply(baseline_policy("baseline", **spec))
        wait_for(lambda: MONITORING in cluster.netpols(ns), 90, what="allow-monitoring applied")

        expires = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        expires += datetime.timedelta(seconds=20)
        exception = {
            "namespace": ns,
            "pieces": ["allow-monitoring"],
            "reason": "INC-1234: scrape storm, monitoring off for a bit",
            "expiresAt": _rfc3339(expires),
        }
        cluster.apply(baseline_policy("baseline", **spec, exceptions=[exception]))

        wait_for(lambda: MONITORING not in cluster.netpols(ns), 60, what="piece removed")
        remaining = set(cluster.netpols(ns))
        assert remaining == {
            "nsbaseline-baseline-allow-dns",
            "nsbaseline-baseline-default-deny",
        }, "only the excepted piece goes; the rest of the baseline stays"
        active = wait_for(
            lambda: [e for e in _status_exceptions(cluster) if e.get("state") == "Active"],
            60,
            what="status.exceptions lists the active exception",
        )
        assert active == [{**exception, "state": "Active"}]
        status = subprocess.run(
            [sys.executable, "-m", "nsbaseline.cli", "status"],
            env=cluster.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        row = next(line for line in status.stdout.splitlines() if ns in line)
        assert " exception " in row and "exception: allow-monitoring held back until" in row, row

        restored = wait_for(
            lambda: cluster.netpols(ns).get(MONITORING), 120, what="piece restored at expiry"
        )
        created = _server_time(restored["metadata"]["creationTimestamp"])
        assert created >= expires, "restored no earlier than the deadline"
        expired = wait_for(
            lambda: [e for e in _status_exceptions(cluster) if e.get("state") == "Expired"],
            60,
            what="status shows the exception as Expired",
        )
        assert expired[0]["namespace"] == ns


def test_exception_with_a_past_expiry_has_no_effect_and_shows_as_expired(
    cluster: Cluster, logdir: Path, clean_policies: None
) -> None:
    with running_operator(cluster, logdir):
        ns = cluster.namespace("exc-past", OPT_IN)
        past = {
            "namespace": ns,
            "pieces": ["default-deny"],
            "reason": "forgotten",
            "expiresAt": "2020-01-01T00:00:00Z",
        }
        # CRD validation rules have no clock (now() is undeclared), so this is admitted...
        cluster.apply(baseline_policy("baseline", exceptions=[past]))
        # ...but changes nothing, and status says why.
        wait_for(
            lambda: "nsbaseline-baseline-default-deny" in cluster.netpols(ns),
            90,
            what="default-deny applied despite the expired exception",
        )
        wait_for(
            lambda: _status_exceptions(cluster) == [{**past, "state": "Expired"}],
            60,
            what="status lists the exception as Expired",
        )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"namespace": "a", "pieces": ["default-deny"], "expiresAt": "2099-01-01T00:00:00Z"},
            "reason",
        ),
        (
            {
                "namespace": "a",
                "pieces": ["default-deny"],
                "reason": "  ",
                "expiresAt": "2099-01-01T00:00:00Z",
            },
            "reason must not be blank",
        ),
        (
            {"namespace": "a", "pieces": ["default-deny"], "reason": "x", "expiresAt": "tomorrow"},
            "date-time",
        ),
        (
            {"namespace": "a", "pieces": [], "reason": "x", "expiresAt": "2099-01-01T00:00:00Z"},
            "pieces",
        ),
    ],
    ids=["no-reason", "blank-reason", "bad-date", "no-pieces"],
)
def test_schema_refuses_malformed_exceptions(
    cluster: Cluster, clean_policies: None, entry: dict[str, Any], message: str
) -> None:
    proc = cluster.apply(baseline_policy("baseline", exceptions=[entry]), check=False)
    assert proc.returncode != 0, proc.stdout
    assert message in proc.stderr, proc.stderr
