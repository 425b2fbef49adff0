"""The dataplane is hermetic: it changes nothing in the host's network namespace, leaves nothing
behind (even after a crash, once the next run cleans up), and two of them side by side do not
see each other.

(The package's own dataplane is checked the same way when it stops; see conftest.py.)
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hack.dataplane.dataplane import PREFIX, Dataplane, cleanup_stale
from tests.support.dataplane import host_changes, host_snapshot, leftover_netns
from tests.support.kube import REPO, Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.dataplane]


def test_two_dataplanes_side_by_side_leave_the_host_exactly_as_it_was(
    cluster: Cluster, dataplane_available: None
) -> None:
    from tests.support.kube import E2E_DIR

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


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


CRASHING_RUN = """
import sys, time
from pathlib import Path
from hack.dataplane.dataplane import Dataplane
dp = Dataplane(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], pod_cidr="10.248.0.0/16")
dp.start()
dp.create_pod(sys.argv[4], "victim")
print("up", flush=True)
time.sleep(600)
"""


def test_a_run_that_crashed_is_cleaned_up_by_the_next_one(
    cluster: Cluster, dataplane_available: None
) -> None:
    """A test session killed outright leaves its dataplane behind (the processes run in their
    own sessions); the next session removes exactly that: its processes, namespaces and Node."""
    from tests.support.kube import E2E_DIR

    root = E2E_DIR / "dataplane-crash"
    run = secrets.token_hex(3)
    namespace = f"crash-{run}"
    cluster.kubectl("create", "namespace", namespace)
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CRASHING_RUN,
            str(cluster.kubeconfig),
            str(root / run),
            run,
            namespace,
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "up"
        dp = Dataplane.load(root / run)
        pids = list(dp.state.pids.values())
        assert pids and all(_alive(p) for p in pids)
        owner.kill()  # no teardown at all
        owner.wait()
        assert all(_alive(p) for p in pids), "the dataplane outlives its owner"
        assert leftover_netns(dp)

        assert cleanup_stale(root) == [run]
        assert not [p for p in pids if _alive(p)], "processes of the crashed run still running"
        assert not leftover_netns(dp)
        assert dp.node_gone()
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        cleanup_stale(root)
        shutil.rmtree(root, ignore_errors=True)
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")
