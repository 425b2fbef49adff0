"""The shipped memory limit holds a few thousand namespaces, through a restart.

A memory limit that only holds steady state is a crash loop waiting to happen: the pod restarts,
the start-up re-sync lists every namespace again, and if that needs more than the limit the
kernel kills it before it repairs anything. This test runs the operator in a real memory cgroup
(see ``tests/support/memcg.py``) with the limit ``deploy/base`` ships, lets it converge on
thousands of namespaces, restarts it, and checks that the re-sync finishes, nothing was
OOM-killed, the restarted operator still serves a new namespace, and the re-sync peak stays
within twice the converged footprint. It also pins the RSS metric the sizing guide tells
people to alert on (``process_resident_memory_bytes``).

The namespaces live in a control plane of the test's own, stopped afterwards: deleting thousands
of namespaces from the shared session cluster would keep its controller-manager busy for minutes.
Figures (RSS, cgroup peak, durations) are printed and written to the test's log folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import memcg
from tests.support.kube import (
    E2E_DIR,
    REPO,
    Cluster,
    OperatorProcess,
    baseline_policy,
    manifest,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

#: Namespaces the policy selects (two NetworkPolicies each), and namespaces it does not.
OPTED_IN = 2500
UNSELECTED = 500
LABEL = "memtest.nsbaseline.io/opt-in"
POLICY = "memtest"
PIECES_PER_NAMESPACE = 2  # a policy with only a selector: default-deny and allow-dns
SHIPPED_DEPLOYMENT = REPO / "deploy" / "base" / "deployment.yaml"
_UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "K": 10**3, "M": 10**6, "G": 10**9}


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (``512Mi``, ``1G``, ``1048576``) in bytes."""
    for suffix in ("Ki", "Mi", "Gi", "K", "M", "G"):
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * _UNITS[suffix])
    return int(quantity)


def shipped_memory_limit() -> int:
    """The operator container's memory limit in ``deploy/base`` (the chart ships the same)."""
    for doc in yaml.safe_load_all(SHIPPED_DEPLOYMENT.read_text()):
        if doc and doc.get("kind") == "Deployment":
            container = doc["spec"]["template"]["spec"]["containers"][0]
            return quantity_bytes(str(container["resources"]["limits"]["memory"]))
    raise AssertionError(f"no Deployment in {SHIPPED_DEPLOYMENT}")


def proc_kb(pid: int, field: str) -> int:
    """A figure from /proc/PID/status in kB (VmRSS: now, VmHWM: the peak of this process)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


@pytest.fixture(scope="module")
def big_cluster() -> Iterator[Cluster]:
    """A local control plane of this module's own, with the CRDs installed."""
    reason = memcg.unavailable_reason()
    if reason is not None:
        pytest.skip(f"memory-limit test: {reason}")
    if os.environ.get("NSBASELINE_TEST_KUBECONFIG"):
        pytest.skip("memory-limit test: creates thousands of namespaces, so only on its own local")
    from hack.localcluster import LocalCluster

    workdir = E2E_DIR / "memory-limit-cluster"
    old = LocalCluster.load(workdir)
    if old is not None:
        old.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    local = LocalCluster(workdir)
    local.start()
    try:
        assert local.bindir is not None
        cluster = Cluster(local.kubeconfig, str(local.bindir / "kubectl"))
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        cluster.kubectl(
            "wait",
            "--for=condition=Established",
            "crd/baselinepolicies.nsbaseline.io",
            "crd/clusterkopfpeerings.kopf.dev",
            "--timeout=120s",
        )
        yield cluster
    finally:
        local.stop()


def create_namespaces(cluster: Cluster, names: list[str], labels: dict[str, str]) -> None:
    """Create namespaces with a few kubectl processes side by side (one is ~3x slower)."""
    chunks = [c for c in (names[i::4] for i in range(4)) if c]
    procs = [
        subprocess.Popen(
            [cluster.kubectl_bin, "create", "-f", "-", "-o", "name"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=cluster.env,
        )
        for _ in chunks
    ]
    for proc, chunk in zip(procs, chunks, strict=True):
        docs = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n, "labels": labels}}
            for n in chunk
        ]
        assert proc.stdin is not None
        proc.stdin.write(manifest(docs))
        proc.stdin.close()
    for proc in procs:
        proc.wait(timeout=900)
        assert proc.stderr is not None
        assert proc.returncode == 0, proc.stderr.read()


def start_in(op: OperatorProcess, cgroup: memcg.MemoryCgroup) -> int:
    """Start the operator and move it into the cgroup before it has allocated much."""
    op.start(wait=False)
    assert op.proc is not None
    cgroup.add(op.proc.pid)
    op.wait_healthy(300)
    return op.proc.pid


def reconciled(op: OperatorProcess) -> tuple[float, float]:
    """(namespace reconciles so far, queue depth) from the operator's own metrics."""
    metrics = op.metrics()
    done = sum(v for k, v in metrics.items() if k.startswith("nsbaseline_reconciles_total"))
    return done, metrics.get("nsbaseline_queue_depth", 0.0)


@pytest.mark.timeout(1800)  # ~2.5 min on a loaded 2-core machine; generous for a busier one
def test_operator_converges_and_survives_a_restart_under_the_shipped_memory_limit(
    big_cluster: Cluster, logdir: Path
) -> None:
    cluster = big_cluster
    limit = shipped_memory_limit()
    figures: dict[str, Any] = {"limit_mib": limit >> 20, "opted_in": OPTED_IN}
    t0 = time.monotonic()
    create_namespaces(cluster, [f"mem-in-{i:05d}" for i in range(OPTED_IN)], {LABEL: "yes"})
    create_namespaces(cluster, [f"mem-out-{i:05d}" for i in range(UNSELECTED)], {})
    figures["create_namespaces_s"] = round(time.monotonic() - t0, 1)
    total = len(cluster.kubectl("get", "namespaces", "-o", "name", timeout=300).stdout.split())
    figures["namespaces_in_cluster"] = total
    cluster.apply(baseline_policy(POLICY, namespaceSelector={"matchLabels": {LABEL: "yes"}}))

    cgroup = memcg.MemoryCgroup(limit, prefix="nsbaseline-e2e-memlimit")
    op = OperatorProcess(cluster, logdir)
    try:
        t0 = time.monotonic()
        pid = start_in(op, cgroup)

        def compliant() -> bool:
            assert op.proc is not None and op.proc.poll() is None, op.tail()
            status = (cluster.get("baselinepolicy", POLICY) or {}).get("status", {})
            return (status.get("matchedNamespaces"), status.get("compliantNamespaces")) == (
                OPTED_IN,
                OPTED_IN,
            )

        wait_for(compliant, 900, interval=2, what=f"{OPTED_IN} compliant namespaces")
        figures["converge_s"] = round(time.monotonic() - t0, 1)
        converged_kb = proc_kb(pid, "VmRSS")
        figures["converged_rss_mib"] = converged_kb >> 10
        figures["first_run_peak_rss_mib"] = proc_kb(pid, "VmHWM") >> 10
        figures["first_run_cgroup_peak_mib"] = cgroup.peak_bytes() >> 20

        # The RSS metric the sizing guide points at, on the operator's metrics endpoint.
        reported = op.metrics().get("process_resident_memory_bytes")
        assert reported is not None, "process_resident_memory_bytes missing from /metrics"
        assert 0.5 * converged_kb * 1024 <= reported <= 2 * converged_kb * 1024, reported

        # The restart: a fresh process lists everything again, under the same limit.
        cgroup.reset_peak()
        op.stop()
        t0 = time.monotonic()
        pid = start_in(op, cgroup)

        def resynced() -> bool:
            assert op.proc is not None and op.proc.poll() is None, op.tail()
            done, depth = reconciled(op)
            return done >= total and depth == 0

        wait_for(resynced, 600, interval=1, what=f"re-sync of {total} namespaces")
        figures["resync_s"] = round(time.monotonic() - t0, 1)

        # Still working, not merely alive: a new namespace gets its baseline.
        fresh = "mem-in-fresh"
        create_namespaces(cluster, [fresh], {LABEL: "yes"})
        wait_for(
            lambda: len(cluster.netpols(fresh)) == PIECES_PER_NAMESPACE,
            300,
            what="the baseline in a namespace created after the restart",
        )
        restart_peak_kb = proc_kb(pid, "VmHWM")
        figures["restart_peak_rss_mib"] = restart_peak_kb >> 10
        figures["restart_cgroup_peak_mib"] = cgroup.peak_bytes() >> 20
        figures["limit_hits"] = cgroup.limit_hits()
        figures["oom_kills"] = cgroup.oom_kills()
        (logdir / "figures.yaml").write_text(yaml.safe_dump(figures, sort_keys=False))
        print(f"\nmemory-limit figures: {figures}")

        assert op.proc is not None and op.proc.poll() is None, op.tail()
        assert cgroup.oom_kills() == 0, figures
        assert pid in cgroup.procs(), "the operator left its cgroup"
        # The start-up re-sync must not need much more than the converged operator does.
        assert restart_peak_kb <= 2 * converged_kb, figures
    finally:
        op.stop()
        cgroup.remove()
