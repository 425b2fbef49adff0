#!/usr/bin/env python3
"""nsbaseline benchmark: the operator beside a tuned direct client, on one API server, one run.

``make bench`` runs this. It starts its own local control plane in ``.cache/bench/cluster``
(unless ``NSBASELINE_BENCH_KUBECONFIG`` names a cluster), then measures, in this order:

1. reference convergence: N namespaces' pre-rendered NetworkPolicies POSTed by ``refclient.py``
   (a separate process, same concurrency as the operator's ``--workers``) into reference
   namespaces the operator does not select;
2. reference fan-out: the same objects with one port changed, server-side applied;
3. operator convergence: the operator runs, the N opted-in namespaces exist, then the
   BaselinePolicy is created; time until the watcher sees all 4N objects with the right spec;
   the API server's request counters over that window give the API economy; operator RSS;
4. operator fan-out: one port of the policy changed; time until all N objects are updated;
5. new-namespace latency, drift-repair latency, idle writes, restart writes and re-sync time;
6. the reference again (convergence, fan-out), then fan-out rounds of the operator and the
   reference turn about, both object sets in place (``rounds.py``).

``--reports`` installs the real PolicyReport CRD (from its Go module, ``hack/reportcrds.py``) so
the operator also keeps one PolicyReport per namespace, and adds what that costs: report writes
per namespace, when the last report is written, and report writes in every later phase.

Every "seen" time comes from one independent watch (``watcher.py``) in this process. Write
counts come from the API server's ``apiserver_request_total``, never from the operator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))  # hack.localcluster

from kubeaccess import Access, Api, ApiFailure, np_path  # noqa: E402
from rounds import OPERATOR, REFERENCE, Round, abba, summarise  # noqa: E402
from watcher import ABSENT, AllMatch, Key, Restored, Watcher  # noqa: E402

from nsbaseline import canonical, names  # noqa: E402
from nsbaseline.model import BaselinePolicy, Namespace  # noqa: E402
from nsbaseline.plan import with_hash  # noqa: E402
from nsbaseline.policy_render import render_policy  # noqa: E402
from nsbaseline.render import TemplateSet  # noqa: E402

POLICY = "bench"
PIECES = ("allow-dns", "allow-monitoring", "allow-ingress-controller", "default-deny")
FANOUT_PIECE = "allow-monitoring"
WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY")
ECONOMY_RESOURCES = ("networkpolicies", "baselinepolicies", "events", "namespaces", "policyreports")
REPORTS = "policyreports"
WATCHED_RESOURCES = ("networkpolicies", "namespaces", "baselinepolicies")
CRDS = ("crd/baselinepolicies.nsbaseline.io", "crd/clusterkopfpeerings.kopf.dev")
RUN_LABEL = "nsbaseline-bench/run"
REF_MANAGED_BY = "nsbaseline-bench-reference"
REF_PREFIX = "ref-"
#: The BaselinePolicy that owns the reference's objects (it selects no namespace), so they carry
#: the same controller ownerReference as the operator's: the same objects for the API server.
REF_OWNER = "bench-reference-owner"
TIMEOUT_PER_OBJECT = 0.25  # generous: a wait fails only if something is really stuck


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ----- figures ------------------------------------------------------------------------------
@dataclass
class Row:
    section: str
    metric: str
    operator: str
    reference: str = ""
    ratio: str = ""
    target: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def add(self, section: str, metric: str, operator: Any, reference: Any = "", **kw: Any) -> None:
        self.rows.append(Row(section, metric, _fmt(operator), _fmt(reference), **kw))

    def table(self, title: str) -> str:
        headers = ("#", "metric", "operator", "reference", "op/ref", "target")
        cells = [
            (r.section, r.metric, r.operator, r.reference, r.ratio, r.target)
            for r in sorted(self.rows, key=lambda r: r.section)  # stable: keeps order within
        ]
        widths = [max(len(str(c[i])) for c in [headers, *cells]) for i in range(len(headers))]
        rule = "-+-".join("-" * w for w in widths)
        lines = [title, rule, " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
        lines.append(rule)
        for cell in cells:
            lines.append(" | ".join(str(c).ljust(w) for c, w in zip(cell, widths, strict=True)))
        lines.append(rule)
        return "\n".join(line.rstrip() for line in lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


#: kube-apiserver's NamespaceLifecycle admission sleeps this long before it looks again for a
#: namespace its informer has not seen yet, when something is created in it (k8s.io/apiserver,
#: pkg/admission/plugin/namespace/lifecycle: missingNamespaceWait).
MISSING_NAMESPACE_WAIT = 0.050


def over(values: list[float], limit: float) -> float:
    """Percentage of ``values`` above ``limit``."""
    return 100.0 * sum(1 for v in values if v > limit) / len(values) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 100 samples is the 99th smallest)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


# ----- API server metrics -------------------------------------------------------------------
Counts = dict[tuple[str, str], float]


async def request_counts(api: Api) -> Counts:
    """``apiserver_request_total`` summed by (verb, resource)."""
    counts: Counts = {}
    for line in (await api.text("/metrics")).splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, _, value = line[len("apiserver_request_total{") :].rpartition("} ")
        labels = dict(
            part.split("=", 1) for part in labels_text.replace('"', "").split(",") if "=" in part
        )
        key = (labels.get("verb", ""), labels.get("resource", ""))
        counts[key] = counts.get(key, 0.0) + float(value)
    return counts


LIFECYCLE_ADMISSION = (
    'apiserver_admission_controller_admission_duration_seconds_bucket{name="NamespaceLifecycle",'
    'operation="CREATE",rejected="false",type="admit",le="'
)


async def lifecycle_waits(api: Api) -> float:
    """Creates that NamespaceLifecycle admission held for more than 25 ms so far: the ones that
    arrived before its informer knew their namespace and slept ``missingNamespaceWait``."""
    buckets: dict[str, float] = {}
    for line in (await api.text("/metrics")).splitlines():
        if line.startswith(LIFECYCLE_ADMISSION):
            le, _, value = line[len(LIFECYCLE_ADMISSION) :].partition('"} ')
            buckets[le] = float(value)
    return buckets.get("+Inf", 0.0) - buckets.get("0.025", 0.0)


def diff(after: Counts, before: Counts) -> Counts:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


def writes(delta: Counts, resources: Iterable[str] = WATCHED_RESOURCES) -> dict[str, int]:
    out = {r: 0 for r in resources}
    for (verb, resource), value in delta.items():
        if verb in WRITE_VERBS and resource in out:
            out[resource] += int(value)
    return out


def requests_summary(delta: Counts, skip: Iterable[tuple[str, str]] = ()) -> str:
    """A window's requests, writes and GETs of the resources the operator touches, as
    ``"APPLY networkpolicies 5000, PATCH baselinepolicies 2"`` (largest first)."""
    shown = [
        (int(count), verb, resource)
        for (verb, resource), count in delta.items()
        if (verb, resource) not in skip
        and (verb in WRITE_VERBS or verb in ("GET", "LIST"))
        and resource in (*WATCHED_RESOURCES, "events")
    ]
    return ", ".join(f"{verb} {resource} {n}" for n, verb, resource in sorted(shown, reverse=True))


def report_writes(delta: Counts) -> int:
    """Write requests on PolicyReports in a request-count delta."""
    return writes(delta, (REPORTS,))[REPORTS]


def split(counts: Mapping[str, int]) -> str:
    """``total (np/ns/bp)`` in the order of :data:`WATCHED_RESOURCES`."""
    return f"{sum(counts.values())} ({'/'.join(str(counts[r]) for r in WATCHED_RESOURCES)})"


# ----- the operator process -----------------------------------------------------------------
def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds a process has used so far (NaN when it is not ours to read)."""
    if pid is None:
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class Ticks(NamedTuple):
    """The whole machine's CPU ticks so far, from /proc/stat."""

    steal: int
    idle: int
    total: int


def machine_ticks() -> Ticks:
    """(steal, idle + iowait, total) CPU ticks of the whole machine so far."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return Ticks(0, 0, 0)
    if len(fields) < 8:
        return Ticks(0, 0, sum(fields))
    return Ticks(fields[7], fields[3] + fields[4], sum(fields))


def stolen_percent(before: Ticks, after: Ticks) -> float:
    """Share of the machine's CPU time the hypervisor gave to others between two readings: on a
    shared VM, what makes the same work take longer in one phase than in another."""
    total = after.total - before.total
    return 100.0 * (after.steal - before.steal) / total if total > 0 else float("nan")


def busy_percent(before: Ticks, after: Ticks) -> float:
    """Share of the machine's CPU time spent working between two readings: near 100 the phase
    was bound by CPU, well below it by waiting (round trips, too little concurrency)."""
    total = after.total - before.total
    idle = (after.idle - before.idle) + (after.steal - before.steal)
    return 100.0 * (total - idle) / total if total > 0 else float("nan")


class PortChange(NamedTuple):
    """One operator fan-out window (see :meth:`Bench.change_port`)."""

    seconds: float
    first: float
    cpu: dict[str, float]
    requests: Counts


#: The bench's own requests in an operator fan-out window: its policy PATCH. (The counts do not
#: tell a status PATCH from it, so the operator's status writes are left out with it.)
BENCH_OWN = (("PATCH", names.PLURAL),)


@dataclass
class Window:
    """One timed phase of the reference: seconds, first object, steal, busy, CPU by process."""

    seconds: float
    first: float
    steal: float
    busy: float
    cpu: dict[str, float]


#: Fan-out CPU rows: whose CPU, as the report names it (the writer is the operator or the
#: reference client, whichever wrote).
FANOUT_CPU_ROWS = (
    ("writer", "writer (operator / reference client)"),
    ("kube-apiserver", "kube-apiserver"),
    ("etcd", "etcd"),
    ("kube-controller-manager", "kube-controller-manager"),
)


def per_object(
    before: Mapping[str, float], after: Mapping[str, float], objects: int
) -> dict[str, float]:
    """CPU seconds each process spent per object between two readings."""
    return {k: (after[k] - before[k]) / objects for k in before if k in after and objects}


def proc_status_mb(pid: int, field: str) -> float:
    """A memory figure from /proc/PID/status (VmRSS now, VmHWM the peak so far), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def shipped_memory_limit() -> str:
    """The operator's memory limit in ``deploy/base`` (the chart ships the same), e.g. ``512Mi``.

    The restart's peak RSS is held against it: above it, the shipped install is OOM-killed at
    every start-up re-sync (docs/sizing.md).
    """
    text = (REPO / "deploy" / "base" / "deployment.yaml").read_text()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "limits:":
            for following in lines[i + 1 : i + 4]:
                key, _, value = following.strip().partition(":")
                if key == "memory":
                    return value.strip()
    return "?"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _knows_reports(tree: Path) -> bool:
    """Whether ``tree``'s operator has ``--reports`` (checkouts from before it was added do not;
    they write no reports, which is what ``--reports off`` asks of the newer ones)."""
    cli = tree / "operator" / "nsbaseline" / "cli" / "run.py"
    return cli.exists() and '"--reports"' in cli.read_text()


class Operator:
    """``nsbaseline run --standalone`` as a child process, optionally under pyinstrument."""

    def __init__(
        self,
        kubeconfig: Path,
        workdir: Path,
        workers: int,
        profile: bool,
        reports: bool = False,
        tree: Path = REPO,
    ) -> None:
        self.reports = reports
        #: The checkout whose operator runs: another one measures an older version of the code
        #: against the same reference, cluster and bench, in the same conditions.
        self.tree = tree
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        self.workers = workers
        self.profile = profile
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        self.health_port = 0
        self.started_at = 0.0
        self.runs = 0

    def start(self) -> None:
        self.metrics_port, self.health_port = free_port(), free_port()
        self.runs += 1
        cmd = [sys.executable]
        if self.profile:
            out = self.workdir / f"profile-{self.runs}.txt"
            cmd += ["-m", "pyinstrument", "-r", "text", "--show-all", "-o", str(out)]
        cmd += [
            "-m",
            "nsbaseline.cli",
            "run",
            "--standalone",
            "--metrics-port",
            str(self.metrics_port),
            "--health",
            f"http://127.0.0.1:{self.health_port}/healthz",
            "--workers",
            str(self.workers),
            "--log-format",
            "plain",
        ]
        if self.reports or _knows_reports(self.tree):
            cmd += ["--reports", "wgpolicyk8s" if self.reports else "off"]
        log_file = open(self.workdir / "operator.log", "ab")  # noqa: SIM115 - owned by the child
        self.started_at = time.time()
        self.proc = subprocess.Popen(
            cmd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={
                **os.environ,
                "KUBECONFIG": str(self.kubeconfig),
                "PYTHONPATH": str(self.tree / "operator"),
            },
            start_new_session=True,
        )
        log_file.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        # SIGINT: Kopf stops gracefully, and pyinstrument writes its report on the way out.
        self.proc.send_signal(signal.SIGINT if self.profile else signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def rss_mb(self) -> float:
        assert self.proc is not None
        return proc_status_mb(self.proc.pid, "VmRSS")

    def peak_rss_mb(self) -> float:
        """The highest RSS of this operator process since it started (VmHWM)."""
        assert self.proc is not None
        return proc_status_mb(self.proc.pid, "VmHWM")

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid if self.proc is not None else None)

    def _get(self, port: int, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return str(resp.read().decode())

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for line in self._get(self.metrics_port, "/metrics").splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def reconciles(self) -> tuple[float, float]:
        """(reconciles so far, queue depth) from the operator's own metrics."""
        m = self.metrics()
        done = sum(v for k, v in m.items() if k.startswith("nsbaseline_reconciles_total{"))
        return done, m.get("nsbaseline_queue_depth", 0.0)

    async def wait_healthy(self, within: float = 120) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"operator exited; see {self.workdir / 'operator.log'}")
            with contextlib.suppress(OSError):
                self._get(self.health_port, "/healthz")
                return
            await asyncio.sleep(0.1)
        raise TimeoutError("operator health endpoint did not come up")

    async def wait_resynced(self, namespaces: int, within: float) -> float:
        """Wait for the start-up re-sync: every namespace reconciled once, and the queue empty.

        Kopf runs no event handler before every index has its initial listing, so until then
        the counter stays at zero; a quiet queue alone would not prove the operator is ready.
        """
        deadline = time.monotonic() + within
        while True:
            with contextlib.suppress(OSError):
                done, depth = self.reconciles()
                if done >= namespaces and depth == 0:
                    return time.time()
            if not self.alive():
                raise RuntimeError(f"operator exited; see {self.workdir / 'operator.log'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"operator re-sync of {namespaces} namespaces did not finish")
            await asyncio.sleep(0.05)

    async def wait_reports(self, reports: int, within: float) -> float:
        """Until the operator has compared every report and knows ``reports`` of its own exist.

        Its own gauges (cheap to poll); :meth:`Bench.count_reports` then checks the cluster.
        """
        deadline = time.monotonic() + within
        while True:
            with contextlib.suppress(OSError):
                m = self.metrics()
                stored = m.get("nsbaseline_reports_stored", 0.0)
                if stored >= reports and m.get("nsbaseline_reports_pending", 1.0) == 0:
                    return time.time()
            if not self.alive():
                raise RuntimeError(f"operator exited; see {self.workdir / 'operator.log'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the operator did not write {reports} PolicyReports")
            await asyncio.sleep(0.1)

    async def wait_settled(self, quiet: float = 1.0, within: float = 300) -> float:
        """Wait until the queue is empty and no reconcile happened for ``quiet`` seconds."""
        deadline = time.monotonic() + within
        last = (-1.0, -1.0)
        since = time.monotonic()
        while time.monotonic() < deadline:
            try:
                now = self.reconciles()
            except OSError:
                now = (-1.0, -1.0)
            if now != last or now[1] > 0:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return time.time()
            await asyncio.sleep(0.1)
        raise TimeoutError("operator did not settle")


# ----- the benchmark ------------------------------------------------------------------------
class Bench:
    def __init__(
        self,
        args: argparse.Namespace,
        kubeconfig: Path,
        kubectl: str,
        pids: Mapping[str, int] | None = None,
    ) -> None:
        self.args = args
        #: The local control plane's processes, to bill their CPU per object (empty on external
        #: clusters, where the figures read NaN).
        self.pids: dict[str, int] = dict(pids or {})
        self.apiserver_pid = self.pids.get("kube-apiserver")
        #: Fan-out CPU seconds of each control-plane process while the reference wrote.
        self.ref_fanout_cpu: dict[str, float] = {}
        self.ref_cpu: dict[str, float] = {}
        #: The reference's and the operator's times (s), and the operator's CPU per object by
        #: process in its convergence and fan-out windows (for the reference run again).
        self.ref_converge = self.ref_fanout = float("nan")
        self.op_windows: dict[str, float] = {}
        self.op_cpu: dict[str, dict[str, float]] = {"convergence": {}, "fan-out": {}}
        self.n: int = args.namespaces
        self.workers: int = args.workers
        self.ref_concurrency: int = args.reference_concurrency or args.workers
        self.kubeconfig = kubeconfig
        self.kubectl = kubectl
        self.workdir: Path = args.dir
        self.run_id = time.strftime("%H%M%S")
        self.api = Api(Access.from_kubeconfig(kubeconfig), limit=max(16, self.workers))
        self.watcher = Watcher(Api(Access.from_kubeconfig(kubeconfig), limit=2))
        self.templates = TemplateSet()
        self.report = Report()
        self.reports: bool = args.reports
        self.operator = Operator(
            kubeconfig, self.workdir, self.workers, args.profile, self.reports, args.operator_tree
        )
        self.op_namespaces = [f"bench-{self.run_id}-{i:05d}" for i in range(self.n)]
        self.ref_namespaces = [f"bref-{self.run_id}-{i:05d}" for i in range(self.n)]
        self.apply_namespaces = (
            [f"bapp-{self.run_id}-{i:05d}" for i in range(self.n)] if args.reference_apply else []
        )
        self.policy_body: dict[str, Any] = {}
        self.ref_owner: BaselinePolicy | None = None
        self.ref_apply = 0.0
        #: When the reference's first fan-out object was seen, from its first write.
        self.ref_first = float("nan")
        #: Hypervisor steal (%) during the reference's convergence and fan-out windows.
        self.steal: dict[str, float] = {}
        #: Machine CPU busy (%) in the reference's windows.
        self.busy: dict[str, float] = {}
        #: Namespaces created by the new-namespace phase (they get reports too).
        self.new_names: list[str] = []
        self.ref_new_names: list[str] = []

    # ----- helpers ---------------------------------------------------------------------------
    def policy_spec(self, monitoring_port: int) -> dict[str, Any]:
        return {
            "namespaceSelector": {"matchLabels": {names.OPT_IN_LABEL: "true"}},
            "monitoring": {"enabled": True, "ports": [{"port": monitoring_port}]},
            "ingressController": {"enabled": True},
        }

    def namespace_info(self, name: str, opted_in: bool) -> Namespace:
        labels = {names.NAMESPACE_NAME_LABEL: name, RUN_LABEL: self.run_id}
        if opted_in:
            labels[names.OPT_IN_LABEL] = "true"
        return Namespace(name, labels, {})

    def rendered(self, namespace: str, policy: BaselinePolicy) -> dict[str, dict[str, Any]]:
        """piece -> the exact object the operator would send for ``namespace``."""
        result = render_policy(
            self.templates,
            self.namespace_info(namespace, True),
            policy,
            datetime.datetime.now(datetime.UTC),
        )
        if result.errors:
            raise RuntimeError(f"render failed: {result.errors[0]}")
        objects = {o.piece: with_hash(o.body) for o in result.objects}
        missing = set(PIECES) - set(objects)
        if missing:
            raise RuntimeError(f"the bench policy does not render {sorted(missing)}")
        return objects

    def expected(
        self, namespaces: Iterable[str], policy: BaselinePolicy, pieces: Iterable[str] = PIECES
    ) -> dict[Key, str]:
        out: dict[Key, str] = {}
        wanted = set(pieces)
        for ns in namespaces:
            for piece, body in self.rendered(ns, policy).items():
                if piece in wanted:
                    out[(ns, body["metadata"]["name"])] = canonical.fingerprint(body["spec"])
        return out

    def reference_body(self, body: Mapping[str, Any], namespace: str) -> dict[str, Any]:
        """The pre-rendered object, renamed and relabelled so the operator never adopts it."""
        meta = dict(body["metadata"])
        meta["name"] = REF_PREFIX + meta["name"]
        meta["namespace"] = namespace
        meta["labels"] = {**meta["labels"], names.MANAGED_BY_LABEL: REF_MANAGED_BY}
        if self.ref_owner is not None:
            meta["ownerReferences"] = [self.ref_owner.owner_reference()]
        else:
            meta.pop("ownerReferences", None)
        return {**body, "metadata": meta}

    async def create_reference_owner(self) -> None:
        """The owner of the reference's objects: an ownerReference costs the API server about a
        third more per server-side apply (bench/ownerref_cost.py), so a reference without one
        would not be taking the same objects as the operator writes."""
        if not self.args.reference_owner:
            return
        body = await self.api.request(
            "POST",
            f"/apis/{names.API_VERSION}/{names.PLURAL}",
            {
                "apiVersion": names.API_VERSION,
                "kind": names.KIND,
                "metadata": {"name": REF_OWNER},
                "spec": {"namespaceSelector": {"matchLabels": {RUN_LABEL: "none"}}},
            },
        )
        self.ref_owner = BaselinePolicy.from_body(body)

    async def remove_reference_owner(self) -> None:
        """Gone before the operator starts: it would be one more policy to watch and assess."""
        if self.ref_owner is not None:
            await self.api.request(
                "DELETE", f"/apis/{names.API_VERSION}/{names.PLURAL}/{REF_OWNER}"
            )

    async def gather_limited(self, coros: list[Any], limit: int) -> list[Any]:
        semaphore = asyncio.Semaphore(limit)

        async def one(coro: Any) -> Any:
            async with semaphore:
                return await coro

        return await asyncio.gather(*(one(c) for c in coros))

    async def wait(self, waiter: AllMatch | Restored, what: str, within: float) -> float:
        try:
            return await asyncio.wait_for(asyncio.shield(waiter.future), within)
        except TimeoutError:
            progress = getattr(waiter, "progress", "")
            raise TimeoutError(
                f"timed out after {within:.0f}s waiting for {what} {progress}"
            ) from None

    async def run_reference(self, requests: list[list[Any]]) -> dict[str, Any]:
        """Run refclient.py on ``requests``; its own CPU seconds come back as ``cpu``."""
        job = {
            "kubeconfig": str(self.kubeconfig),
            "concurrency": self.ref_concurrency,
            "requests": requests,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(BENCH / "refclient.py"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(BENCH)},
        )
        out, _ = await proc.communicate(json.dumps(job).encode())
        if proc.returncode != 0:
            raise RuntimeError(f"reference client failed ({proc.returncode})")
        result: dict[str, Any] = json.loads(out)
        if result["errors"]:
            raise RuntimeError(
                f"reference client: {result['errors']} errors: {result['first_error']}"
            )
        return result

    async def create_namespaces(self, names_: list[str], opted_in: bool) -> None:
        async def create(name: str) -> None:
            info = self.namespace_info(name, opted_in)
            labels = {k: v for k, v in info.labels.items() if k != names.NAMESPACE_NAME_LABEL}
            body = {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": labels},
            }
            await self.api.request("POST", "/api/v1/namespaces", body)

        await self.gather_limited([create(n) for n in names_], self.workers)

    # ----- phases ----------------------------------------------------------------------------
    async def setup(self) -> None:
        if await self.api.request(
            "GET", f"/apis/{names.API_VERSION}/{names.PLURAL}/{POLICY}", ok_missing=True
        ):
            raise RuntimeError(
                f"a BaselinePolicy named {POLICY!r} already exists; refusing to touch it"
            )
        await self.watcher.start()
        t0 = time.time()
        await self.create_namespaces(self.op_namespaces, True)
        await self.create_namespaces(self.ref_namespaces + self.apply_namespaces, False)
        elapsed = time.time() - t0
        count = len(self.op_namespaces) + len(self.ref_namespaces) + len(self.apply_namespaces)
        log(f"created {count} namespaces in {elapsed:.1f}s")
        self.report.raw["namespace_creation_s"] = elapsed
        # Its two controllers write ~40 objects/s between them: 20,000 namespaces need ~17 min.
        within = 300 + 0.1 * 2 * self.args.namespaces
        await self.wait_for_controller_manager(within * self.args.timeout_scale)

    async def wait_for_controller_manager(self, within: float = 900) -> None:
        """Wait until the controller-manager has given every namespace its default
        ServiceAccount and kube-root-ca.crt ConfigMap.

        Thousands of new namespaces keep it busy for a while; its writes landing in the middle of
        one measured phase and not the other would make the comparison unfair.
        """
        t0 = time.monotonic()
        while True:
            namespaces = await self.live_namespaces()
            accounts = await self.count("/api/v1/serviceaccounts", "metadata.name=default")
            maps = await self.count("/api/v1/configmaps", "metadata.name=kube-root-ca.crt")
            if accounts >= namespaces and maps >= namespaces:
                log(f"controller-manager caught up in {time.monotonic() - t0:.1f}s")
                return
            if time.monotonic() - t0 > within:
                raise TimeoutError("the controller-manager did not catch up with the namespaces")
            await asyncio.sleep(1.0)

    async def count_reports(self) -> tuple[int, int]:
        """(our PolicyReports in the bench namespaces, how many of them pass every piece)."""
        total = passing = 0
        params = {"labelSelector": f"{names.MANAGED_BY_LABEL}={names.MANAGED_BY_VALUE}"}
        params["limit"] = "500"
        while True:
            page = await self.api.request(
                "GET", f"/apis/wgpolicyk8s.io/v1alpha2/{REPORTS}", params=params
            )
            for item in page.get("items") or []:
                if not item["metadata"]["namespace"].startswith(f"bench-{self.run_id}-"):
                    continue
                total += 1
                summary = item.get("summary") or {}
                passing += summary.get("pass") == len(PIECES) and not summary.get("fail")
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return total, passing
            params["continue"] = token

    async def report_phase(self, section: str, what: str, before: Counts, expected: int) -> None:
        """With --reports: wait until every report is written, then bill the phase's report
        writes (``expected`` is what a perfect operator would write)."""
        if not self.reports:
            return
        reports = self.n + len(self.new_names)
        await self.operator.wait_reports(reports, self.timeout(reports))
        await asyncio.sleep(1.0)
        count = report_writes(diff(await request_counts(self.api), before))
        log(f"{what}: {count} PolicyReport writes")
        self.report.add(section, f"PolicyReport writes, {what}", count, target=str(expected))

    async def count(self, path: str, field_selector: str) -> int:
        """How many objects a LIST with ``field_selector`` returns (paginated, names only)."""
        total, params = 0, {"fieldSelector": field_selector, "limit": "500"}
        while True:
            page = await self.api.request("GET", path, params=params)
            total += len(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return total
            params["continue"] = token

    def control_plane_cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each local control-plane process."""
        return {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    async def reference_create(
        self, namespaces: list[str], verb: str, record: bool = True
    ) -> float:
        """The reference writer creates every pre-rendered object in ``namespaces``."""
        policy = BaselinePolicy.from_body(
            {"metadata": {"name": POLICY}, "spec": self.policy_spec(self.args.port)}
        )
        requests: list[list[Any]] = []
        expected: dict[Key, str] = {}
        for ns in namespaces:
            for body in self.rendered(ns, policy).values():
                ref = self.reference_body(body, ns)
                name = ref["metadata"]["name"]
                requests.append([verb, np_path(ns, name if verb == "APPLY" else None), ref])
                expected[(ns, name)] = canonical.fingerprint(ref["spec"])
        waiter = self.watcher.add(AllMatch(expected, self.watcher.specs))
        result = await self.run_reference(requests)
        seen = await self.wait(waiter, "reference objects", self.timeout(len(expected)))
        converge = float(seen - result["start"])
        if verb == "POST" and record:
            self.ref_cpu["client"] = float(result["cpu"]) / len(requests)
        log(f"reference: {len(requests)} objects created ({verb}) and seen in {converge:.2f}s")
        return converge

    async def reference(self) -> tuple[float, float]:
        await self.create_reference_owner()
        server_before = cpu_seconds(self.apiserver_pid)
        ticks = machine_ticks()
        converge = await self.reference_create(self.ref_namespaces, "POST")
        after = machine_ticks()
        self.steal["converge"] = stolen_percent(ticks, after)
        self.busy["converge"] = busy_percent(ticks, after)
        objects = len(self.ref_namespaces) * len(PIECES)
        self.ref_cpu["apiserver"] = (cpu_seconds(self.apiserver_pid) - server_before) / objects
        if self.args.reference_apply:
            # The same creation with the operator's verb: how much of any gap is server-side
            # apply's own cost in the API server rather than the operator's.
            self.ref_apply = await self.reference_create(self.apply_namespaces, "APPLY")
        fanout = await self.reference_fanout()
        self.steal["fanout"] = fanout.steal
        self.busy["fanout"] = fanout.busy
        self.ref_fanout_cpu = fanout.cpu
        self.ref_first = fanout.first
        return converge, fanout.seconds

    async def reference_fanout(self, port: int | None = None) -> Window:
        """The reference server-side applies the changed monitoring port to its N objects."""
        port = self.args.port + 1 if port is None else port
        changed = BaselinePolicy.from_body(
            {"metadata": {"name": POLICY}, "spec": self.policy_spec(port)}
        )
        requests, expected = [], {}
        for ns in self.ref_namespaces:
            body = self.reference_body(self.rendered(ns, changed)[FANOUT_PIECE], ns)
            requests.append(["APPLY", np_path(ns, body["metadata"]["name"]), body])
            expected[(ns, body["metadata"]["name"])] = canonical.fingerprint(body["spec"])
        waiter = self.watcher.add(AllMatch(expected, self.watcher.specs))
        ticks, cpu = machine_ticks(), self.control_plane_cpu()
        before = await request_counts(self.api)
        result = await self.run_reference(requests)
        seen = await self.wait(waiter, "reference fan-out", self.timeout(len(expected)))
        window = diff(await request_counts(self.api), before)
        log(f"reference: fan-out window requests: {requests_summary(window)}")
        after = machine_ticks()
        spent = per_object(cpu, self.control_plane_cpu(), len(requests))
        spent["writer"] = float(result["cpu"]) / len(requests)
        fanout = float(seen - result["start"])
        log(f"reference: fan-out of {len(requests)} objects seen in {fanout:.2f}s")
        return Window(
            seconds=fanout,
            first=float((waiter.first or seen) - result["start"]),
            steal=stolen_percent(ticks, after),
            busy=busy_percent(ticks, after),
            cpu=spent,
        )

    async def reference_again(self) -> None:
        """The reference once more, after the operator's phases, and the ratios against it.

        The reference always ran first, on a fresh API server and etcd; the operator then works
        on one that has stored and deleted the reference's objects, and stores its own. In one
        N = 5000 run etcd spent 1.75x the CPU per object in the operator's fan-out window that it
        spent in the reference's, for the same objects: the windows differ by more than who
        writes. Measured again afterwards, the reference brackets the operator's window, and the
        headline ratios are taken against the mean of both reference runs.
        """
        objects = len(self.ref_namespaces) * len(PIECES)
        ticks, cpu = machine_ticks(), self.control_plane_cpu()
        converge = await self.reference_create(self.ref_namespaces, "POST", record=False)
        converge_cpu = per_object(cpu, self.control_plane_cpu(), objects)
        converge_steal = stolen_percent(ticks, machine_ticks())
        fanout = await self.reference_fanout()
        for section, what, mine, before, again, steal, spent in (
            (
                "1",
                "convergence",
                self.op_windows["converge"],
                self.ref_converge,
                converge,
                converge_steal,
                converge_cpu,
            ),
            (
                "7",
                "fan-out",
                self.op_windows["fanout"],
                self.ref_fanout,
                fanout.seconds,
                fanout.steal,
                fanout.cpu,
            ),
        ):
            mean = (before + again) / 2
            self.report.add(
                section,
                f"  reference again, after the operator: {what} (s)",
                mine,
                again,
                ratio=ratio(mine, again),
            )
            self.report.add(
                section,
                "    steal in that window (%)",
                "",
                steal,
            )
            for key in ("kube-apiserver", "etcd"):
                self.report.add(
                    section,
                    f"    {key} CPU per object, reference again (ms)",
                    self.op_cpu[what].get(key, float("nan")) * 1000,
                    spent.get(key, float("nan")) * 1000,
                    ratio=ratio(
                        self.op_cpu[what].get(key, float("nan")), spent.get(key, float("nan"))
                    ),
                )
            self.report.add(
                section,
                f"  {what} vs the mean of both reference runs (s)",
                mine,
                mean,
                ratio=ratio(mine, mean),
                target="<= 1.3x",
            )
            self.report.raw[f"reference_again_{what}_s"] = again
        if self.args.fanout_rounds:
            await self.alternating_fanout(self.args.fanout_rounds)
        await self.remove_reference_objects()

    async def alternating_fanout(self, pairs: int) -> None:
        """Fan-out windows of the operator and the reference, turn about (see rounds.py).

        Both object sets are in place (the reference's were just created again); each window
        waits until the operator is settled and has posted every Event it held back, so no
        side's window carries the other's leftovers. The operator's namespaces include the ones
        the new-namespace phase added, hence the time per object.
        """
        port = self.args.port + 1
        done: list[Round] = []
        for side in abba(pairs):
            port += 1
            await self.operator_quiet()
            if side == OPERATOR:
                namespaces = self.op_namespaces + self.new_names
                waiter = self.fanout_waiter(port, namespaces)
                change = await self.change_port(port, waiter, f"round {len(done) + 1}, operator")
                seconds, spent = change.seconds, change.cpu
            else:
                namespaces = self.ref_namespaces
                ref = await self.reference_fanout(port)
                seconds, spent = ref.seconds, ref.cpu
            done.append(Round(side, seconds, len(namespaces)))
            cpu_ms = ", ".join(f"{k} {v * 1000:.2f}" for k, v in sorted(spent.items()))
            log(
                f"round {len(done)}, {side}: {len(namespaces)} objects in {seconds:.2f}s; "
                f"CPU per object (ms): {cpu_ms}"
            )
        await self.operator_quiet()
        summary = summarise(done)
        self.report.raw["fanout_rounds"] = [vars(r) for r in done]
        self.report.add(
            "7",
            f"fan-out per object, {pairs} pairs of rounds, turn about (ms, median)",
            summary.operator_ms,
            summary.reference_ms,
            ratio=f"{summary.ratio:.2f}x",
            target="<= 1.3x",
        )
        self.report.add(
            "7",
            "  ratio in each pair of adjacent rounds (the figure is their median)",
            " / ".join(f"{r:.2f}" for r in summary.pair_ratios),
        )
        for side in (OPERATOR, REFERENCE):
            self.report.add(
                "7",
                f"  {side} rounds (s)",
                " / ".join(f"{r.seconds:.2f}" for r in done if r.side == side),
            )

    async def operator_quiet(self) -> None:
        """Until the operator is settled and its held-back Events are out.

        Its ``nsbaseline_events_pending`` gauge when it has one (older trees do not); in any
        case the API server's Event POSTs must have stopped for a second.
        """
        await self.operator.wait_settled()
        deadline = time.monotonic() + self.timeout(self.n)
        last = -1.0
        while time.monotonic() < deadline:
            posted = (await request_counts(self.api)).get(("POST", "events"), 0.0)
            with contextlib.suppress(OSError):
                pending = self.operator.metrics().get("nsbaseline_events_pending", 0.0)
                if pending == 0 and posted == last:
                    return
            last = posted
            await asyncio.sleep(1.0)
        raise TimeoutError("the operator's Events were still going out")

    async def remove_reference_objects(self) -> None:
        """Delete the reference's objects (one DELETECOLLECTION per namespace) before the
        operator starts, so its memory and start-up are measured without thousands of foreign
        NetworkPolicies it would otherwise list and track (its namespaces stay, unselected)."""
        expected = {
            key: ABSENT
            for key in self.watcher.specs
            if key[1].startswith(REF_PREFIX + names.NAME_PREFIX)
        }
        waiter = self.watcher.add(AllMatch(expected, self.watcher.specs))
        selector = {"labelSelector": f"{names.MANAGED_BY_LABEL}={REF_MANAGED_BY}"}
        await self.gather_limited(
            [
                self.api.request("DELETE", np_path(ns), params=selector)
                for ns in self.ref_namespaces + self.apply_namespaces + self.ref_new_names
            ],
            self.workers,
        )
        await self.wait(waiter, "reference objects to go", self.timeout(len(expected)))
        log(f"reference: {len(expected)} objects removed")

    async def live_namespaces(self) -> int:
        """Namespaces not being deleted: a terminating one may vanish before the operator lists
        it, and would then never be counted as reconciled (earlier tests leave some behind)."""
        items = (await self.api.request("GET", "/api/v1/namespaces"))["items"]
        return sum(1 for n in items if not n.get("metadata", {}).get("deletionTimestamp"))

    def timeout(self, objects: int) -> float:
        return 120 + TIMEOUT_PER_OBJECT * objects * float(self.args.timeout_scale)

    async def operator_convergence(self, ref_converge: float) -> None:
        namespaces = await self.live_namespaces()
        self.operator.start()
        await self.operator.wait_healthy()
        synced = await self.operator.wait_resynced(namespaces, self.timeout(namespaces))
        self.report.add(
            "4",
            f"first start: re-sync of {namespaces} ns, no policy selecting any (s)",
            synced - self.operator.started_at,
        )
        await self.operator.wait_settled()
        if self.reports:  # its first listing of reports belongs to the start, not convergence
            await self.operator.wait_reports(0, self.timeout(namespaces))
        log(f"operator up and idle (pid {self.operator.proc.pid if self.operator.proc else '?'})")
        before = await request_counts(self.api)
        reconciles_before = self.operator.reconciles()[0]
        body = {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "metadata": {"name": POLICY},
            "spec": self.policy_spec(self.args.port),
        }
        # The expectation needs the policy's uid (ownerReference), which only the POST returns;
        # fingerprints cover specs only, so render with a placeholder and fix nothing later.
        policy = BaselinePolicy.from_body(body)
        expected = self.expected(self.op_namespaces, policy)
        waiter = self.watcher.add(AllMatch(expected, self.watcher.specs))
        cpu_before = self.operator.cpu()
        server_before = cpu_seconds(self.apiserver_pid)
        processes_before = self.control_plane_cpu()
        ticks = machine_ticks()
        t0 = time.time()
        self.policy_body = await self.api.request(
            "POST", f"/apis/{names.API_VERSION}/{names.PLURAL}", body
        )
        seen = await self.wait(waiter, "operator convergence", self.timeout(len(expected)))
        after = machine_ticks()
        steal = stolen_percent(ticks, after)
        converge = seen - t0
        self.op_windows["converge"] = converge
        self.op_cpu["convergence"] = per_object(
            processes_before, self.control_plane_cpu(), len(expected)
        )
        op_cpu = (self.operator.cpu() - cpu_before) / len(expected)
        server_cpu = (cpu_seconds(self.apiserver_pid) - server_before) / len(expected)
        log(f"operator: {len(expected)} objects seen in {converge:.2f}s")
        self.report.add(
            "1",
            f"convergence, {self.n} ns x 4 pieces (s)",
            converge,
            ref_converge,
            ratio=ratio(converge, ref_converge),
            target="(reference before)",
        )
        self.report.add(
            "1",
            "  CPU stolen by the hypervisor in that window (%)",
            steal,
            self.steal.get("converge", float("nan")),
        )
        self.report.add(
            "1",
            "  machine CPU busy in that window (%)",
            busy_percent(ticks, after),
            self.busy.get("converge", float("nan")),
        )
        if self.ref_apply:
            self.report.add(
                "1",
                "  same, reference creating with server-side apply (s)",
                converge,
                self.ref_apply,
                ratio=ratio(converge, self.ref_apply),
            )
        if self.reports:
            reports_done = await self.operator.wait_reports(self.n, self.timeout(self.n))
        settled = await self.operator.wait_settled()
        await asyncio.sleep(1.0)  # the status loop writes within 0.5 s of the last change
        delta = diff(await request_counts(self.api), before)
        if self.reports:  # checked in the cluster after the window: the bench's LISTs are its own
            total, passing = await self.count_reports()
            log(f"operator: {total} PolicyReports ({passing} all pass), {reports_done - t0:.2f}s")
            self.report.add(
                "1",
                f"  last of {self.n} PolicyReports written, from the policy POST (s)",
                reports_done - t0,
                target=f"{passing}/{self.n} all pass",
            )
            self.report.raw["reports_written_after_s"] = reports_done - t0
        # The bench's own policy POST is not the operator's; the rest (the operator, plus the
        # controller-manager's own traffic) is counted as the operator's cost.
        own = ("POST", "baselinepolicies")
        delta[own] = delta.get(own, 0.0) - 1
        self.report.raw["convergence_request_delta"] = {
            f"{v} {r}": c for (v, r), c in delta.items()
        }
        objects = len(expected)
        shown = {("GET", "networkpolicies"), ("APPLY", "networkpolicies")}
        shown |= {k for k in delta if k[1] in ECONOMY_RESOURCES and delta[k] > 0}
        for verb, resource in sorted(shown, key=lambda k: (ECONOMY_RESOURCES.index(k[1]), k[0])):
            count = delta.get((verb, resource), 0.0)
            self.report.add(
                "5",
                f"requests per object: {verb} {resource}",
                f"{count / objects:.3f}",
                "1.000 (POST)" if (verb, resource) == ("APPLY", "networkpolicies") else "",
                target={"GET": "0", "APPLY": "<= 1"}.get(verb, "")
                if resource == "networkpolicies"
                else "",
            )
        if self.reports:
            self.report.add(
                "5",
                "PolicyReport writes per opted-in namespace",
                f"{report_writes(delta) / self.n:.3f}",
                target="1",
            )
        reconciles = self.operator.reconciles()[0] - reconciles_before
        self.report.add(
            "5", "reconciles per opted-in namespace (operator metric)", reconciles / self.n
        )
        op_writes = writes(delta, ("networkpolicies",))["networkpolicies"]
        self.report.add(
            "5",
            "NetworkPolicy writes per object",
            f"{op_writes / objects:.3f}",
            "1.000",
            ratio=ratio(op_writes / objects, 1.0),
            target="<= 1",
        )
        self.report.raw["operator_settled_after_s"] = settled - t0
        self.report.add(
            "5",
            "operator CPU per object at convergence (ms)",
            op_cpu * 1000,
            self.ref_cpu.get("client", float("nan")) * 1000,
            ratio=ratio(op_cpu, self.ref_cpu.get("client", float("nan"))),
            target="halved",
        )
        self.report.add(
            "5",
            "API server CPU per object (ms)",
            server_cpu * 1000,
            self.ref_cpu.get("apiserver", float("nan")) * 1000,
            ratio=ratio(server_cpu, self.ref_cpu.get("apiserver", float("nan"))),
        )
        self.report.add(
            "6",
            f"operator RSS at {self.n} ns converged (MB)",
            self.operator.rss_mb(),
            target="<= 150 at 5000",
        )
        self.report.add("6", "  peak RSS, start-up + convergence (MB)", self.operator.peak_rss_mb())

    def fanout_waiter(self, port: int, namespaces: list[str]) -> AllMatch:
        """Waits for every namespace's fanned-out object to carry monitoring port ``port``."""
        policy = BaselinePolicy.from_body(
            {"metadata": {"name": POLICY}, "spec": self.policy_spec(port)}
        )
        expected = self.expected(namespaces, policy, [FANOUT_PIECE])
        return self.watcher.add(AllMatch(expected, self.watcher.specs))

    async def change_port(self, port: int, waiter: AllMatch, what: str) -> PortChange:
        """Set the policy's monitoring port and wait for ``waiter``; measures the window from the
        PATCH: seconds to the first and to every changed object, CPU per object by process (the
        operator as "writer"), and the requests the API server counted (logged)."""
        objects = len(waiter.expected)
        before = await request_counts(self.api)
        cpu, writer = self.control_plane_cpu(), self.operator.cpu()
        t0 = time.time()
        self.policy_body = await self.api.request(
            "PATCH",
            f"/apis/{names.API_VERSION}/{names.PLURAL}/{POLICY}",
            {"spec": {"monitoring": {"ports": [{"port": port}]}}},
            content_type="application/merge-patch+json",
        )
        seen = await self.wait(waiter, what, self.timeout(objects))
        spent = per_object(cpu, self.control_plane_cpu(), objects)
        spent["writer"] = (self.operator.cpu() - writer) / objects
        requests = diff(await request_counts(self.api), before)
        log(f"{what}: window requests: {requests_summary(requests, BENCH_OWN)}")
        return PortChange(float(seen - t0), float((waiter.first or seen) - t0), spent, requests)

    async def fanout(self, ref_fanout: float) -> None:
        waiter = self.fanout_waiter(self.args.port + 1, self.op_namespaces)
        expected = waiter.expected
        before = await request_counts(self.api)  # for the phase's report writes, below
        ticks = machine_ticks()
        change = await self.change_port(self.args.port + 1, waiter, "operator fan-out")
        elapsed, first, spent = change.seconds, change.first, change.cpu
        after = machine_ticks()
        steal = stolen_percent(ticks, after)
        self.op_windows["fanout"] = elapsed
        self.op_cpu["fan-out"] = spent
        events = change.requests.get(("POST", "events"), 0.0)
        log(f"operator: fan-out to {len(expected)} objects seen in {elapsed:.2f}s")
        self.report.add(
            "7",
            f"policy change fan-out, {self.n} objects (s)",
            elapsed,
            ref_fanout,
            ratio=ratio(elapsed, ref_fanout),
            target="(reference before)",
        )
        self.report.add(
            "7",
            "  CPU stolen by the hypervisor in that window (%)",
            steal,
            self.steal.get("fanout", float("nan")),
        )
        self.report.add("7", "  first object seen after (s)", first, self.ref_first)
        self.report.add(
            "7",
            "  machine CPU busy in that window (%)",
            busy_percent(ticks, after),
            self.busy.get("fanout", float("nan")),
        )
        for key, label in FANOUT_CPU_ROWS:
            mine, theirs = spent.get(key, float("nan")), self.ref_fanout_cpu.get(key, float("nan"))
            self.report.add(
                "7",
                f"  {label} CPU per object (ms)",
                mine * 1000,
                theirs * 1000,
                ratio=ratio(mine, theirs),
            )
        # Events compete with the writes for the API server; the reference posts none.
        self.report.add("7", "  Event POSTs in that window", int(events), 0)
        await self.operator.wait_settled()
        await self.report_phase("7", "fan-out (results unchanged)", before, 0)

    def current_policy(self) -> BaselinePolicy:
        return BaselinePolicy.from_body(self.policy_body)

    async def new_namespaces(self) -> None:
        policy = self.current_policy()
        latencies: list[float] = []
        before = await request_counts(self.api)
        waits_before = await lifecycle_waits(self.api)
        for i in range(self.args.new_namespaces):
            name = f"bnew-{self.run_id}-{i:04d}"
            self.new_names.append(name)
            waiter = self.watcher.add(AllMatch(self.expected([name], policy), self.watcher.specs))
            t0 = time.time()
            await self.create_namespaces([name], True)
            latencies.append(await self.wait(waiter, f"baseline of {name}", 60) - t0)
        self.report.raw["new_namespace_latencies"] = latencies
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        log(f"new namespaces: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
        waits = await lifecycle_waits(self.api) - waits_before
        await self.operator.wait_settled()
        count = len(self.new_names)
        await self.report_phase("2", f"{count} new namespaces", before, count)
        waits_before = await lifecycle_waits(self.api)
        ref = await self.reference_new_namespaces(policy)
        ref_waits = await lifecycle_waits(self.api) - waits_before
        self.report.raw["reference_new_namespace_latencies"] = ref
        rows = [(f"new-namespace latency p{q} ({count} ns, ms)", q) for q in (50, 99)]
        for (label, q), target in zip(rows, ("", "<= 100 at 5000"), strict=True):
            mine, theirs = percentile(latencies, q) * 1000, percentile(ref, q) * 1000
            self.report.add("2", label, mine, theirs, ratio=ratio(mine, theirs), target=target)
        self.report.add(
            "2",
            f"  share over {MISSING_NAMESPACE_WAIT * 1000:.0f} ms (%)",
            over(latencies, MISSING_NAMESPACE_WAIT),
            over(ref, MISSING_NAMESPACE_WAIT),
        )
        self.report.add(
            "2",
            "  creates held by NamespaceLifecycle admission (> 25 ms)",
            int(waits),
            int(ref_waits),
        )

    async def reference_new_namespaces(self, policy: BaselinePolicy) -> list[float]:
        """The reference for a new namespace: the bench's own client POSTs a namespace the
        operator does not select and, on the answer, that namespace's four objects at once;
        namespace POST -> all four seen, like the operator's figure.

        No client can do better than the API server lets it: a create in a namespace its
        NamespaceLifecycle admission has not seen yet (its informer lags the write by a few
        milliseconds) waits :data:`MISSING_NAMESPACE_WAIT` there, whoever sends it.
        """
        latencies: list[float] = []
        for i in range(self.args.new_namespaces):
            name = f"bnref-{self.run_id}-{i:04d}"
            self.ref_new_names.append(name)
            bodies = [self.reference_body(b, name) for b in self.rendered(name, policy).values()]
            expected = {
                (name, b["metadata"]["name"]): canonical.fingerprint(b["spec"]) for b in bodies
            }
            waiter = self.watcher.add(AllMatch(expected, self.watcher.specs))
            t0 = time.time()
            await self.create_namespaces([name], False)
            await asyncio.gather(*(self.api.request("POST", np_path(name), b) for b in bodies))
            latencies.append(await self.wait(waiter, f"reference objects of {name}", 60) - t0)
        log(
            f"reference new namespaces: p50 {percentile(latencies, 50) * 1000:.0f} ms, "
            f"p99 {percentile(latencies, 99) * 1000:.0f} ms"
        )
        return latencies

    async def drift(self) -> None:
        policy = self.current_policy()
        rng = random.Random(self.args.seed)
        latencies: dict[str, list[float]] = {"delete": [], "edit": []}
        before = await request_counts(self.api)
        for i in range(self.args.tampers):
            ns = rng.choice(self.op_namespaces)
            piece = rng.choice(PIECES)
            body = self.rendered(ns, policy)[piece]
            name = body["metadata"]["name"]
            waiter = self.watcher.add(Restored((ns, name), canonical.fingerprint(body["spec"])))
            kind = "delete" if i % 2 == 0 else "edit"
            t0 = time.time()
            if kind == "delete":
                await self.api.request("DELETE", np_path(ns, name))
            else:
                await self.api.request(
                    "PATCH",
                    np_path(ns, name),
                    {"spec": {"podSelector": {"matchLabels": {"bench-tamper": str(i)}}}},
                    content_type="application/merge-patch+json",
                )
            latencies[kind].append(await self.wait(waiter, f"repair of {ns}/{name}", 60) - t0)
        both = latencies["delete"] + latencies["edit"]
        self.report.raw["drift_latencies"] = latencies
        p50, p99 = percentile(both, 50), percentile(both, 99)
        log(f"drift repair: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
        self.report.add("3", f"drift repair p50 ({len(both)} tampers, ms)", p50 * 1000)
        self.report.add(
            "3", f"drift repair p99 ({len(both)} tampers, ms)", p99 * 1000, target="<= 300"
        )
        for kind, values in latencies.items():
            self.report.add("3", f"  p99 of {kind}s only (ms)", percentile(values, 99) * 1000)
        await self.operator.wait_settled()
        await self.report_phase("3", f"{self.args.tampers} tampers repaired", before, 0)

    async def idle_and_restart(self) -> None:
        await asyncio.sleep(2.0)  # let the last status write and its watch echo pass
        before = await request_counts(self.api)
        await asyncio.sleep(self.args.idle)
        idle_delta = diff(await request_counts(self.api), before)
        idle = writes(idle_delta)
        log(f"idle {self.args.idle:.0f}s: writes {idle}")
        if self.reports:
            self.report.add(
                "4",
                f"idle PolicyReport writes over {self.args.idle:.0f}s",
                report_writes(idle_delta),
                target="0",
            )
        self.report.add(
            "4",
            f"idle writes over {self.args.idle:.0f}s (np/ns/bp)",
            split(idle),
            target="0",
        )
        before = await request_counts(self.api)
        self.operator.stop()
        namespaces = await self.live_namespaces()
        self.operator.start()
        await self.operator.wait_healthy()
        healthy = time.time() - self.operator.started_at
        await self.operator.wait_resynced(namespaces, self.timeout(namespaces))
        resync = time.time() - self.operator.started_at
        await self.operator.wait_settled()
        if self.reports:
            reports = self.n + len(self.new_names)
            await self.operator.wait_reports(reports, self.timeout(reports))
        await asyncio.sleep(2.0)
        restart_delta = diff(await request_counts(self.api), before)
        restart = writes(restart_delta)
        if self.reports:
            self.report.add(
                "4",
                "PolicyReport writes across restart + re-sync",
                report_writes(restart_delta),
                target="0",
            )
        log(f"restart: healthy {healthy:.2f}s, re-sync {resync:.2f}s, writes {restart}")
        self.report.add(
            "4",
            "writes across restart + re-sync (np/ns/bp)",
            split(restart),
            target="0",
        )
        self.report.add("4", f"startup re-sync time, {namespaces} ns (s)", resync)
        self.report.add("4", "  of which to healthz (s)", healthy)
        self.report.add(
            "6",
            "operator RSS after restart + re-sync (MB)",
            self.operator.rss_mb(),
            target="<= 200 at 5000",
        )
        self.report.add(
            "6",
            "  peak RSS during the re-sync (MB)",
            self.operator.peak_rss_mb(),
            target=f"< {shipped_memory_limit()} (deploy/base)",
        )

    async def cleanup(self) -> None:
        """For an external cluster: remove what this run created (the local one is just stopped)."""
        with contextlib.suppress(ApiFailure):
            await self.remove_reference_owner()
        with contextlib.suppress(ApiFailure):
            await self.api.request(
                "DELETE", f"/apis/{names.API_VERSION}/{names.PLURAL}/{POLICY}", ok_missing=True
            )
        items = (
            await self.api.request(
                "GET", "/api/v1/namespaces", params={"labelSelector": f"{RUN_LABEL}={self.run_id}"}
            )
        )["items"]
        await self.gather_limited(
            [
                self.api.request(
                    "DELETE", f"/api/v1/namespaces/{n['metadata']['name']}", ok_missing=True
                )
                for n in items
            ],
            self.workers,
        )

    async def run(self) -> Report:
        try:
            await self.setup()
            self.ref_converge, self.ref_fanout = await self.reference()
            await self.remove_reference_objects()
            await self.operator_convergence(self.ref_converge)
            if self.args.settle_before_fanout:
                started = time.monotonic()
                await self.operator_quiet()
                log(f"operator settled, its Events out, in {time.monotonic() - started:.1f}s")
            await self.fanout(self.ref_fanout)
            await self.new_namespaces()
            await self.drift()
            await self.idle_and_restart()
            await self.reference_again()
        finally:
            self.operator.stop()
            await self.watcher.stop()
            await self.watcher.api.close()
            if self.args.external:
                with contextlib.suppress(Exception):
                    await self.cleanup()
            await self.api.close()
        self.report.raw["watch_events"] = self.watcher.events
        return self.report


# ----- entry point --------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "-n", "--namespaces", type=int, default=1000, help="N opted-in namespaces (1000; try 5000)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=16,
        help="operator --workers, and the reference client's concurrency",
    )
    p.add_argument(
        "--reference-concurrency",
        type=int,
        default=0,
        help="override the reference client's concurrency",
    )
    p.add_argument("--idle", type=float, default=60.0, help="idle window in seconds (60)")
    p.add_argument(
        "--new-namespaces", type=int, default=100, help="namespaces created one at a time (100)"
    )
    p.add_argument(
        "--tampers", type=int, default=200, help="drift tampers, half deletes, half edits (200)"
    )
    p.add_argument(
        "--port", type=int, default=9100, help="monitoring port in the policy (fan-out adds 1)"
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--settle-before-fanout",
        action="store_true",
        help="start the first fan-out only once the operator has posted the convergence's Events"
        " (as every round does): tells their share of the first fan-out apart",
    )
    p.add_argument(
        "--fanout-rounds",
        type=int,
        default=4,
        help="pairs of fan-out windows, operator and reference turn about, at the end (4; 0: none)",
    )
    p.add_argument(
        "--timeout-scale", type=float, default=1.0, help="multiply wait timeouts (slow machines)"
    )
    p.add_argument("--profile", action="store_true", help="run the operator under pyinstrument")
    p.add_argument(
        "--dir",
        type=Path,
        default=REPO / ".cache" / "bench",
        help="work folder (cluster, logs, results)",
    )
    p.add_argument(
        "--reference-apply",
        action="store_true",
        help="also time the reference creating with server-side apply (N more namespaces)",
    )
    p.add_argument(
        "--no-reference-owner",
        dest="reference_owner",
        action="store_false",
        help="the reference's objects without the operator's ownerReference (as before 2026-11-30:"
        " cheaper for the API server than the objects the operator writes)",
    )
    p.add_argument(
        "--operator-tree",
        type=Path,
        default=REPO,
        help="run the operator of another checkout (e.g. a worktree of an older commit) against "
        "this bench; its crds/ are installed unless --crds says otherwise",
    )
    p.add_argument("--crds", type=Path, default=None, help="CRD manifests to install")
    p.add_argument(
        "--reports",
        action="store_true",
        help="install the real PolicyReport CRD and run the operator with reports on",
    )
    p.add_argument(
        "--keep-cluster", action="store_true", help="leave the local control plane running"
    )
    args = p.parse_args(argv)
    args.dir = args.dir.resolve()
    args.operator_tree = args.operator_tree.resolve()
    if args.crds is None:
        args.crds = args.operator_tree / "crds"
    args.external = bool(os.environ.get("NSBASELINE_BENCH_KUBECONFIG"))
    return args


def machine() -> str:
    cpus = os.cpu_count()
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        model = "unknown CPU"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpus} CPUs ({model}), load average {load:.1f} at start, Python {sys.version.split()[0]}"
    )


def install_crds(
    kubeconfig: Path, kubectl: str, cluster: Any, crds: Path, reports: bool = False
) -> None:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    steps = [["apply", "--server-side", "-f", str(crds)]]
    established = list(CRDS)
    if reports:
        from hack.reportcrds import crd_path

        crd = "crd/policyreports.wgpolicyk8s.io"
        present = subprocess.run([kubectl, "get", crd], env=env, capture_output=True).returncode
        if present != 0:  # an external cluster's own CRD (Kyverno's, say) is left as it is
            steps.append(["apply", "--server-side", "-f", str(crd_path("wgpolicyk8s"))])
        established.append(crd)
    steps.append(["wait", "--for=condition=Established", "--timeout=120s", *established])
    for args in steps:
        for attempt in range(3):  # a just-started API server may still refuse for a moment
            proc = subprocess.run([kubectl, *args], env=env, capture_output=True, text=True)
            if proc.returncode == 0:
                break
            log(f"kubectl {args[0]} failed (attempt {attempt + 1}): {proc.stderr.strip()}")
            time.sleep(3)
        else:
            raise RuntimeError(f"kubectl {' '.join(args)} kept failing: {proc.stderr}")
    if cluster is not None:
        # The controller-manager's garbage collector learns new resources from API discovery
        # only every 30 s; until it knows BaselinePolicy it re-checks every object owned by one
        # with GETs, which would be billed to the operator in the API economy figures.
        cluster.stop_component("kube-controller-manager")
        cluster.start_component("kube-controller-manager")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    (args.dir / "operator.log").unlink(missing_ok=True)
    where = machine()
    cluster = None
    if args.external:
        kubeconfig = Path(os.environ["NSBASELINE_BENCH_KUBECONFIG"])
        kubectl = os.environ.get("NSBASELINE_BENCH_KUBECTL") or shutil.which("kubectl") or "kubectl"
        server = "external cluster"
    else:
        from hack.localcluster import LocalCluster

        workdir = args.dir / "cluster"
        old = LocalCluster.load(workdir)
        if old is not None:
            old.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        log(f"starting a local control plane in {workdir}")
        cluster = LocalCluster(workdir)
        cluster.start()
        assert cluster.bindir is not None
        kubeconfig, kubectl = cluster.kubeconfig, str(cluster.bindir / "kubectl")
        server = "local kube-apiserver/etcd (hack/localcluster.py)"
    try:
        install_crds(kubeconfig, kubectl, cluster, args.crds, args.reports)
        bench = Bench(args, kubeconfig, kubectl, cluster.pids if cluster is not None else None)
        started = time.time()
        report = asyncio.run(bench.run())
    finally:
        if cluster is not None and not args.keep_cluster:
            cluster.stop()
    report.raw.update({"args": {k: str(v) for k, v in vars(args).items()}, "machine": where})
    (args.dir / "results.json").write_text(json.dumps(report.raw, indent=2, default=str))
    title = (
        f"nsbaseline bench: N={args.namespaces}, workers={args.workers}, reference concurrency="
        f"{bench.ref_concurrency}, idle={args.idle:.0f}s, reports "
        f"{'on (PolicyReport)' if args.reports else 'off'}; {server}\n"
        "reference = pre-rendered objects from a direct asyncio client in its own process "
        "(POST to create, server-side apply to fan out), "
        f"{'with the operator' if args.reference_owner else 'without the operator'}"
        "'s ownerReference; times are as seen by one watcher\n"
        f"machine: {where}; total {time.time() - started:.0f}s"
    )
    print()
    print(report.table(title))
    if args.profile:
        print(f"\noperator profiles: {sorted(str(p) for p in args.dir.glob('profile-*.txt'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
