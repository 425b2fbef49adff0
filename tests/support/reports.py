"""The report CRDs (PolicyReport, OpenReports Report) for e2e tests, from their Go modules.

Installed by the tests that need them and removed afterwards, so the rest of the suite runs the
operator without them (its behaviour before reports existed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from hack.reportcrds import crd_path
from tests.support.kube import Cluster

#: --reports value -> the CRD's name.
CRDS = {"wgpolicyk8s": "policyreports.wgpolicyk8s.io", "openreports": "reports.openreports.io"}


def install_report_crd(cluster: Cluster, flag: str) -> None:
    """Apply the CRD straight from Go's module cache and wait until it is Established."""
    cluster.kubectl("apply", "--server-side", "-f", str(crd_path(flag)))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRDS[flag]}", "--timeout=60s")


def remove_report_crds(cluster: Cluster) -> None:
    """Delete both CRDs (and with them every report)."""
    cluster.kubectl("delete", "crd", *CRDS.values(), "--ignore-not-found", "--wait=true")


@contextlib.contextmanager
def report_crds(cluster: Cluster, *flags: str) -> Iterator[None]:
    """The CRDs for ``flags`` installed for the duration, removed afterwards whatever happened."""
    try:
        for flag in flags:
            install_report_crd(cluster, flag)
        yield
    finally:
        remove_report_crds(cluster)
