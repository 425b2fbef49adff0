"""The benchmark still runs end to end (scaled down); timing is never asserted.

``make bench`` is not part of the tests, so without this a change to the operator, the CLI or the
local control plane could silently break it. The run uses the session's cluster through
``NSBASELINE_BENCH_KUBECONFIG``, which also covers the bench's external-cluster path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.kube import REPO, Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

#: One fragment per row the table must hold (sections 1-7 of the benchmark).
ROWS = [
    "convergence, 50 ns x 4 pieces (s)",
    "requests per object: APPLY networkpolicies",
    "NetworkPolicy writes per object",
    "operator RSS at 50 ns converged (MB)",
    "policy change fan-out, 50 objects (s)",
    "machine CPU busy in that window (%)",
    "writer (operator / reference client) CPU per object (ms)",
    "reference again, after the operator: fan-out (s)",
    "convergence vs the mean of both reference runs (s)",
    "fan-out vs the mean of both reference runs (s)",
    "fan-out per object, 1 pairs of rounds, turn about (ms, median)",
    "ratio in each pair of adjacent rounds",
    "operator rounds (s)",
    "new-namespace latency p50 (10 ns, ms)",
    "new-namespace latency p99 (10 ns, ms)",
    "share over 50 ms (%)",
    "creates held by NamespaceLifecycle admission",
    "drift repair p50 (20 tampers, ms)",
    "drift repair p99 (20 tampers, ms)",
    "idle writes over 3s (np/ns/bp)",
    "writes across restart + re-sync (np/ns/bp)",
    "startup re-sync time",
    "operator RSS after restart + re-sync (MB)",
]


@pytest.mark.timeout(900)
def test_bench_runs_at_small_scale_and_prints_every_row(
    cluster: Cluster, clean_policies: None, logdir: Path
) -> None:
    env = {
        **os.environ,
        "NSBASELINE_BENCH_KUBECONFIG": str(cluster.kubeconfig),
        "NSBASELINE_BENCH_KUBECTL": cluster.kubectl_bin,
    }
    args = ["--namespaces", "50", "--idle", "3", "--new-namespaces", "10", "--tampers", "20"]
    args += ["--fanout-rounds", "1", "--timeout-scale", "4", "--dir", str(logdir / "bench")]
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
    )
    operator_log = logdir / "bench" / "operator.log"
    tail = operator_log.read_text()[-3000:] if operator_log.exists() else ""
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}\n{tail}"
    table = proc.stdout[proc.stdout.index("nsbaseline bench: N=50") :]
    missing = [row for row in ROWS if row not in table]
    assert not missing, f"rows missing from the table: {missing}\n{table}"
    assert (logdir / "bench" / "results.json").exists()
