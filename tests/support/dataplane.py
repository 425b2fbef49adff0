"""Helpers for the dataplane tests (tests/dataplane): what the host looks like, why a machine
cannot run them, and the probe lanes the lifecycle scenarios share.

The dataplane itself (network namespaces, kube-router, probes) is in :mod:`hack.dataplane`; this
module only adds what tests need around it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hack.dataplane.dataplane import PREFIX, Dataplane, Pod, missing_requirements
from hack.dataplane.probes import ALLOWED, DENIED, Flow, Lane
from tests.support.kube import Cluster

#: Set by CI (``.ci/run``): a machine that cannot run the dataplane fails instead of skipping.
REQUIRED_ENV = "NSBASELINE_DATAPLANE_REQUIRED"
#: The sysctls the dataplane sets inside its node namespace: the host's must never change.
HOST_SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.forwarding",
    "net.ipv4.conf.all.rp_filter",
    "net.ipv4.icmp_ratelimit",
    "net.ipv4.icmp_msgs_per_sec",
    "net.ipv4.icmp_msgs_burst",
    "net.ipv6.conf.all.forwarding",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
)
EXTERNAL_DENIED = "198.51.100.10"  # an external host no lifecycle policy allows


def unavailable_reason() -> str | None:
    """Why this machine cannot run the dataplane tests, or None when it can."""
    if os.environ.get("NSBASELINE_TEST_KUBECONFIG"):
        return (
            "the dataplane tests start their own control plane and a fake node; they do not run "
            "against NSBASELINE_TEST_KUBECONFIG (see docs/dataplane.md for a real cluster's CNI)"
        )
    missing = missing_requirements()
    if missing:
        return "the dataplane needs: " + "; ".join(missing)
    if shutil.which("go") is None and not list(
        (Path.home() / ".cache" / "nsbaseline" / "dataplane").glob("*/bin/kube-router")
    ):
        return "the dataplane needs kube-router, built from Go modules: no `go` on PATH"
    return None


@dataclass
class Shared:
    """Pods every test may use as peers."""

    dns: Pod  # kube-system, k8s-app=kube-dns, dnsmasq
    node_local_dns: str  # dnsmasq on the node
    prometheus: Pod  # monitoring, app.kubernetes.io/name=prometheus
    monitoring_other: Pod  # monitoring, no Prometheus label
    ingress: Pod  # ingress-nginx, app.kubernetes.io/name=ingress-nginx
    outsider: Pod  # a namespace no policy selects
    forged_prometheus: Pod  # a tenant's pods carrying the peers' labels, in a namespace
    forged_ingress: Pod  # whose custom labels claim to be monitoring / ingress-nginx /
    forged_dns: Pod  # kube-system; dnsmasq answering another address


FORGED_NAMESPACE_LABELS = {
    "name": "kube-system",
    "team": "monitoring",
    "app.kubernetes.io/name": "ingress-nginx",
    "k8s-app": "kube-dns",
    "networking.example.com/role": "monitoring",
}
FORGED_ANSWER = "192.0.2.66"


def ensure_namespace(
    cluster: Cluster,
    name: str,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> None:
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": labels or {}, "annotations": annotations or {}},
        }
    )


#: Lines the tests report (figures per scenario), printed at the end of the session.
FIGURES: list[str] = []
_figures_file: list[Path] = []


def set_figures_file(path: Path) -> None:
    """Where :func:`report` also writes its lines (emptied now)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    _figures_file[:] = [path]


def report(line: str) -> None:
    """Record a figure line: shown in the terminal summary and kept in the figures file."""
    FIGURES.append(line)
    for path in _figures_file:
        with path.open("a") as f:
            f.write(line + "\n")
    print(line)


# ----- the host's network namespace, before and after -------------------------------------------
def _out(*args: str) -> str:
    if shutil.which(args[0]) is None:
        return f"({args[0]} not installed)"
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    return proc.stdout + (
        f"(exit {proc.returncode}: {proc.stderr.strip()})" if proc.returncode else ""
    )


def host_snapshot() -> dict[str, str]:
    """The host namespace's firewall rules, ipsets, links, addresses, routes, network
    namespaces and relevant sysctls, normalized (no counters, dates or address lifetimes)."""
    snap: dict[str, str] = {}
    for tool in ("iptables-nft-save", "ip6tables-nft-save", "iptables-legacy-save"):
        text = _out(tool)
        lines = [re.sub(r"\[\d+:\d+\]", "[0:0]", ln) for ln in text.splitlines()]
        snap[tool] = "\n".join(ln for ln in lines if not ln.startswith("#"))
    snap["ipset"] = "\n".join(sorted(_out("ipset", "save").splitlines()))
    snap["links"] = _out("ip", "-o", "link", "show")
    snap["addresses"] = re.sub(
        r"valid_lft \S+ preferred_lft \S+", "", _out("ip", "-o", "addr", "show")
    )
    snap["routes"] = _out("ip", "route", "show", "table", "all")
    snap["netns"] = "\n".join(
        sorted(ln.split()[0] for ln in _out("ip", "netns", "list").splitlines() if ln.strip())
    )
    values = []
    for key in HOST_SYSCTLS:
        path = Path("/proc/sys") / key.replace(".", "/")
        try:
            values.append(f"{key} = {path.read_text().strip()}")
        except OSError:
            values.append(f"{key} (absent)")
    snap["sysctls"] = "\n".join(values)
    return snap


def host_changes(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """What differs between two snapshots; network namespaces of *other* dataplane runs (another
    test session on the same machine) are not ours to judge and are left out."""

    def ours(text: str) -> list[str]:
        return [ln for ln in text.splitlines() if not ln.startswith(PREFIX)]

    changes = []
    for key in before:
        a, b = before[key], after.get(key, "")
        if key == "netns":
            a, b = "\n".join(ours(a)), "\n".join(ours(b))
        if a != b:
            gone = sorted(set(a.splitlines()) - set(b.splitlines()))
            new = sorted(set(b.splitlines()) - set(a.splitlines()))
            changes.append(f"{key}: removed {gone[:5]} added {new[:5]}")
    return changes


def leftover_netns(dp: Dataplane) -> list[str]:
    listing = _out("ip", "netns", "list")
    return [ln.split()[0] for ln in listing.splitlines() if f"{PREFIX}{dp.run_id}-" in ln]


def audit_writes(audit_log: Path, namespace: str) -> list[str]:
    """NetworkPolicy writes in ``namespace`` from the API server's audit log, in order: when,
    who, what, and the answer (a refused delete shows its 403)."""
    lines: list[str] = []
    if not audit_log.exists():
        return lines
    for raw in audit_log.read_text().splitlines():
        try:
            event = json.loads(raw)
        except ValueError:
            continue
        ref = event.get("objectRef") or {}
        if ref.get("namespace") != namespace or event.get("stage") != "ResponseComplete":
            continue
        lines.append(
            f"{event.get('stageTimestamp', '')[11:26]} {event.get('verb')} {ref.get('name')} "
            f"by {event.get('user', {}).get('username')} -> "
            f"{(event.get('responseStatus') or {}).get('code')}"
        )
    return lines


# ----- probe lanes ------------------------------------------------------------------------------
def dns_lane(dp: Dataplane, pod: Pod, server: Pod) -> Lane:
    """DNS from ``pod`` to the cluster DNS, UDP and TCP in turn; must always be answered."""
    return Lane(
        f"dns {pod.ref}",
        [dp.dns_flow(pod, server, "dns-udp"), dp.dns_flow(pod, server, "dns-tcp")],
        ALLOWED,
        group=pod.namespace,
    )


def forbidden_lane(dp: Dataplane, pod: Pod, outsider: Pod) -> Lane:
    """Flows the baseline forbids, in turn: egress to an external host, ingress from another
    namespace. Allowed before the namespace opts in; denied from its isolation on."""
    flows: list[Flow] = [
        dp.flow(pod, EXTERNAL_DENIED, 443),
        dp.flow(outsider, pod, 8080),
        dp.flow(pod, EXTERNAL_DENIED, 443, "udp"),
    ]
    return Lane(f"forbidden {pod.ref}", flows, DENIED, group=pod.namespace)


def lanes_for(dp: Dataplane, pods: Iterable[Pod], dns: Pod, outsider: Pod) -> list[Lane]:
    out: list[Lane] = []
    for pod in pods:
        out += [dns_lane(dp, pod, dns), forbidden_lane(dp, pod, outsider)]
    return out


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """A plain-text table for test output."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])
