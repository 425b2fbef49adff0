"""The dataplane is hermetic: it changes nothing in the host's network namespace, leaves nothing
behind, and two of them side by side do not see each other.

(The package's own dataplane is checked the same way when it stops; see conftest.py.)
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from hack.dataplane.dataplane import PREFIX, Dataplane
from tests.support.dataplane import host_changes, host_snapshot, leftover_netns
from tests.support.kube import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.dataplane]


def test_two_dataplanes_side_by_side_leave_the_host_exactly_as_it_was(
    cluster: Cluster, dataplane_available: None
) -> None:
    from tests.conftest import E2E_DIR

    before = host_snapshot()
    planes: list[Dataplane] = []
    try:
        for cidr in ("10.246.0.0/16", "10.247.0.0/16"):
            run = secrets.token_hex(3)
            planes.append(
                Dataplane(cluster.kubeconfig, E2E_DIR / "dataplane" / run, run, pod_cidr=cidr)
            )
            planes[-1].start()
        a, b = planes
        for dp in planes:
            cluster.kubectl("create", "namespace", f"herm-{dp.run_id}")
        pa = [a.create_pod(f"herm-{a.run_id}", f"p{i}") for i in range(2)]
        pb = b.create_pod(f"herm-{b.run_id}", "p0")
        a.wait_protected(pa)
        b.wait_protected([pb])
        inside = a.probe([a.flow(pa[0], pa[1], 8080), a.flow(pa[0], "203.0.113.10", 443)])
        assert all(r.allowed for r in inside), inside
        # b's pod is not reachable from a's: separate nodes with no route between them.
        (across,) = a.probe([a.flow(pa[0], pb, 8080)], timeout=1.0)
        assert not across.allowed, across
        # Nothing of either dataplane is in the host's namespace, even while they run.
        running = host_snapshot()
        assert not host_changes(before, running), host_changes(before, running)
        host_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert "vp0" not in host_links and "br0" not in host_links
        # Stopping one leaves the other working.
        pids = list(a.state.pids.values()) + list(b.state.pids.values())
        assert len(pids) >= 4  # agent and kube-router of each
        a.stop()
        assert not leftover_netns(a)
        (still,) = b.probe([b.flow(pb, "203.0.113.10", 443)])
        assert still.allowed, still
    finally:
        for dp in planes:
            dp.stop()
            shutil.rmtree(dp.workdir, ignore_errors=True)
            cluster.kubectl(
                "delete", "namespace", f"herm-{dp.run_id}", "--ignore-not-found", "--wait=false"
            )
    for dp in planes:
        assert not leftover_netns(dp), leftover_netns(dp)
        assert dp.node_gone()
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert not alive, f"processes left running: {alive}"
    assert not host_changes(before, host_snapshot()), host_changes(before, host_snapshot())
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(f"{PREFIX}{dp.run_id}" in listing for dp in planes)
