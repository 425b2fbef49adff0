"""Probes with real packets: TCP connects, UDP exchanges and DNS queries from inside namespaces.

A probe opens its socket inside the source pod's network namespace (see :mod:`netns`), so the
packets leave through the pod's veth and cross the node's bridge and firewall like a pod's
would. The answer for each flow is one verdict:

- ``allowed``: the TCP handshake completed, the UDP echo came back, or the DNS server answered
  the A query with the expected address;
- ``denied``: the connection was refused (ICMP port unreachable or TCP reset). The dataplane has
  a listener on every probed port and no ICMP rate limit in the node, so a refusal always means
  the firewall said no;
- ``timeout`` or ``error:...``: neither, which a test should treat as a broken dataplane, not as a
  policy decision.

Two ways to run them:

- :func:`probe_flows` fires many flows at once (asyncio, one process) and returns a verdict for
  each: the truth table.
- :class:`ContinuousProber` runs *lanes* in a child process: each lane fires one flow every
  ``interval`` seconds (cycling through its flows), and records every verdict as runs
  (verdict, first and last start time, count) plus every unexpected result with its timestamp:
  failures in lanes that expect ``allowed`` (DNS), successes after the first denial in lanes that
  expect ``denied`` (forbidden flows). :func:`summarize` turns that into the figures a lifecycle
  test asserts on.

CLI for humans: ``python -m hack.dataplane.probes once NETNS DST PORT PROTO`` prints the verdict.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hack.dataplane.netns import socket_in

REPO = Path(__file__).resolve().parents[2]
#: The name every DNS server of the dataplane answers, and the address it answers with.
DNS_NAME = "probe.nsbaseline.test"
DNS_ANSWER = "198.51.100.53"
PROTOCOLS = ("tcp", "udp", "dns-udp", "dns-tcp")
ALLOWED = "allowed"
DENIED = "denied"
TIMEOUT = "timeout"


@dataclass(frozen=True)
class Flow:
    """One flow: from the pod (network namespace) ``src`` to ``dst``:``port`` over ``proto``."""

    src: str
    dst: str
    port: int
    proto: str = "tcp"
    name: str = ""
    qname: str = DNS_NAME
    answer: str | None = DNS_ANSWER

    def __post_init__(self) -> None:
        if self.proto not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.proto!r}; expected one of {PROTOCOLS}")

    def describe(self) -> str:
        return self.name or f"{self.src} -> {self.dst}:{self.port}/{self.proto}"


@dataclass(frozen=True)
class Result:
    """The verdict for one probe of ``flow``; ``started`` is wall-clock time (``time.time()``)."""

    flow: Flow
    verdict: str
    started: float
    elapsed: float
    detail: str = ""

    @property
    def allowed(self) -> bool:
        return self.verdict == ALLOWED

    @property
    def denied(self) -> bool:
        return self.verdict == DENIED


# ----- DNS messages -----------------------------------------------------------------------------
def dns_query(qname: str, qid: int) -> bytes:
    """A standard recursive A query for ``qname`` (RFC 1035 wire format)."""
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    labels = b"".join(
        bytes([len(part)]) + part.encode("ascii") for part in qname.rstrip(".").split(".")
    )
    return header + labels + b"\x00" + struct.pack("!HH", 1, 1)


def _skip_name(msg: bytes, pos: int) -> int:
    while True:
        length = msg[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            return pos + 2
        pos += 1 + length


def dns_answers(msg: bytes, qid: int) -> list[str]:
    """The IPv4 addresses in the answer section; ValueError if ``msg`` is not our answer."""
    if len(msg) < 12:
        raise ValueError("short DNS message")
    rid, flags, qd, an, _, _ = struct.unpack("!HHHHHH", msg[:12])
    if rid != qid or not flags & 0x8000:
        raise ValueError("not the answer to our query")
    rcode = flags & 0x000F
    if rcode != 0:
        raise ValueError(f"DNS rcode {rcode}")
    pos = 12
    for _ in range(qd):
        pos = _skip_name(msg, pos) + 4
    out = []
    for _ in range(an):
        pos = _skip_name(msg, pos)
        rtype, _, _, rdlen = struct.unpack("!HHIH", msg[pos : pos + 10])
        pos += 10
        if rtype == 1 and rdlen == 4:
            out.append(socket.inet_ntoa(msg[pos : pos + 4]))
        pos += rdlen
    return out


# ----- one probe --------------------------------------------------------------------------------
async def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    buf = b""
    while len(buf) < size:
        chunk = await loop.sock_recv(sock, size - len(buf))
        if not chunk:
            raise ConnectionError("connection closed early")
        buf += chunk
    return buf


async def _exchange(flow: Flow, sock: socket.socket) -> str:
    """Run the flow on an open socket; return the verdict (raises on refusal or timeout)."""
    loop = asyncio.get_running_loop()
    addr = (flow.dst, flow.port)
    if flow.proto == "tcp":
        await loop.sock_connect(sock, addr)
        return ALLOWED
    if flow.proto == "udp":
        payload = os.urandom(8)
        sock.connect(addr)
        sock.send(payload)
        reply = await loop.sock_recv(sock, 2048)
        return ALLOWED if reply == payload else "error:wrong echo"
    qid = random.randrange(1 << 16)
    query = dns_query(flow.qname, qid)
    if flow.proto == "dns-udp":
        sock.connect(addr)
        sock.send(query)
        reply = await loop.sock_recv(sock, 4096)
    else:
        await loop.sock_connect(sock, addr)
        await loop.sock_sendall(sock, struct.pack("!H", len(query)) + query)
        (length,) = struct.unpack("!H", await _recv_exactly(sock, 2))
        reply = await _recv_exactly(sock, length)
    try:
        answers = dns_answers(reply, qid)
    except ValueError as exc:
        return f"error:{exc}"
    if flow.answer is not None and flow.answer not in answers:
        return f"error:answered {answers}"
    return ALLOWED


#: Source ports are handed out in turn per source namespace instead of by the kernel. The
#: kernel may pick a port again within seconds; if the earlier use left a conntrack entry (UDP
#: keeps one for up to 120 s), the new probe would be "established" traffic that the firewall
#: accepts without looking at the policy, and a denial would be missed. In turn, a port comes
#: back only after the whole range. The range starts where the clock says (20 ports a second),
#: so a later process does not reuse what an earlier one just used; one-shot probes and the
#: continuous prober use separate ranges.
_PORT_RANGE = [10000, 20000]
_next_port: dict[str, int] = {}


def use_port_range(first: int, size: int) -> None:
    _PORT_RANGE[:] = [first, size]
    _next_port.clear()


def _bind_fresh_port(sock: socket.socket, netns: str) -> None:
    first, size = _PORT_RANGE
    offset = _next_port.get(netns, int(time.time() * 20))
    for _ in range(64):
        offset += 1
        try:
            sock.bind(("0.0.0.0", first + offset % size))
            break
        except OSError:  # in use (a listener, a lingering socket): the next one
            continue
    _next_port[netns] = offset


async def probe(flow: Flow, limit: float = 2.0) -> Result:
    """Probe ``flow`` once with real packets, giving up after ``limit`` seconds; never raises
    for network outcomes."""
    kind = socket.SOCK_STREAM if flow.proto in ("tcp", "dns-tcp") else socket.SOCK_DGRAM
    started = time.time()
    t0 = time.monotonic()
    detail = ""
    try:
        sock = socket_in(flow.src, socket.AF_INET, kind)
    except OSError as exc:
        return Result(flow, f"error:socket: {exc}", started, 0.0)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _bind_fresh_port(sock, flow.src)
        async with asyncio.timeout(limit):
            verdict = await _exchange(flow, sock)
    except ConnectionRefusedError:
        verdict = DENIED
    except TimeoutError:
        verdict = TIMEOUT
    except OSError as exc:
        verdict = f"error:{exc.strerror or exc}"
    except ConnectionError as exc:
        verdict = f"error:{exc}"
    finally:
        sock.close()
    if verdict.startswith("error:"):
        verdict, detail = "error", verdict[len("error:") :]
    return Result(flow, verdict, started, time.monotonic() - t0, detail)


async def probe_all(
    flows: Sequence[Flow], limit: float = 2.0, concurrency: int = 64
) -> list[Result]:
    """Probe every flow once, ``concurrency`` at a time; results in the order of ``flows``."""
    gate = asyncio.Semaphore(concurrency)

    async def one(flow: Flow) -> Result:
        async with gate:
            return await probe(flow, limit)

    return list(await asyncio.gather(*(one(f) for f in flows)))


def probe_flows(flows: Sequence[Flow], timeout: float = 2.0, concurrency: int = 64) -> list[Result]:
    """Synchronous :func:`probe_all`, for tests and the CLI."""
    return asyncio.run(probe_all(flows, timeout, concurrency))


# ----- continuous lanes -------------------------------------------------------------------------
@dataclass
class Lane:
    """Flows fired in turn, one every ``interval`` seconds; ``expect`` is what should happen."""

    name: str
    flows: list[Flow]
    expect: str  # ALLOWED (e.g. DNS) or DENIED (forbidden flows, once isolated)
    group: str = ""  # e.g. the namespace, for per-namespace figures


def _extend(runs: list[list[Any]], verdict: str, started: float) -> None:
    if runs and runs[-1][0] == verdict:
        runs[-1][2] = started
        runs[-1][3] += 1
    else:
        runs.append([verdict, started, started, 1])


@dataclass
class LaneRecord:
    """What a lane saw, as the child process reports it (JSON-friendly).

    Isolation is judged per flow: a baseline's pieces are separate objects, so a namespace may
    be isolated for ingress a moment before egress. A forbidden flow's success is a violation
    only after *that flow* was denied once; the lane counts as isolated once every one of its
    flows was denied (:attr:`isolated_at`).
    """

    name: str
    expect: str
    group: str
    flows: int = 1
    probes: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    #: [verdict, first start, last start, count] for each run of equal verdicts, whole lane.
    runs: list[list[Any]] = field(default_factory=list)
    #: The same per flow (by flow name).
    flow_runs: dict[str, list[list[Any]]] = field(default_factory=dict)
    #: When each flow was first denied.
    first_denied: dict[str, float] = field(default_factory=dict)
    #: [start, verdict, flow name, detail] for each unexpected result: failures in a lane
    #: expecting ALLOWED, successes after the flow's first denial in a lane expecting DENIED.
    events: list[list[Any]] = field(default_factory=list)

    MAX_EVENTS = 50_000

    @property
    def isolated_at(self) -> float | None:
        """When every flow of the lane had been denied at least once (None: not yet)."""
        if len(self.first_denied) < self.flows:
            return None
        return max(self.first_denied.values())

    def latest(self) -> dict[str, str]:
        """flow name -> the verdict of its latest probe."""
        return {name: runs[-1][0] for name, runs in self.flow_runs.items() if runs}

    def add(self, result: Result) -> None:
        name = result.flow.describe()
        self.probes += 1
        self.counts[result.verdict] = self.counts.get(result.verdict, 0) + 1
        _extend(self.runs, result.verdict, result.started)
        _extend(self.flow_runs.setdefault(name, []), result.verdict, result.started)
        if result.denied and name not in self.first_denied:
            self.first_denied[name] = result.started
        unexpected = (
            not result.allowed
            if self.expect == ALLOWED
            else (result.allowed and name in self.first_denied)
        )
        if unexpected and len(self.events) < self.MAX_EVENTS:
            self.events.append([result.started, result.verdict, name, result.detail])


async def _run_lane(
    lane: Lane,
    record: LaneRecord,
    interval: float,
    limit: float,
    offset: float,
    stop: asyncio.Event,
) -> None:
    await asyncio.sleep(offset)
    tick = 0
    next_at = time.monotonic()
    while not stop.is_set():
        flow = lane.flows[tick % len(lane.flows)]
        tick += 1
        record.add(await probe(flow, limit))
        next_at += interval
        delay = next_at - time.monotonic()
        if delay < 0:  # a slow probe: start the next one now, do not try to catch up
            next_at = time.monotonic()
            delay = 0
        await asyncio.sleep(delay)  # (a stop waits for at most one interval)


async def _child_main(config: dict[str, Any]) -> None:
    """Run lanes until told to stop; answer ``snapshot``/``stop`` lines on stdin with JSON."""
    lanes = [
        Lane(
            lane["name"], [Flow(**f) for f in lane["flows"]], lane["expect"], lane.get("group", "")
        )
        for lane in config["lanes"]
    ]
    interval = float(config.get("interval", 0.1))
    timeout = float(config.get("timeout", 2.0))
    records = [LaneRecord(lane.name, lane.expect, lane.group, len(lane.flows)) for lane in lanes]
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(
            _run_lane(lane, rec, interval, timeout, interval * i / max(len(lanes), 1), stop)
        )
        for i, (lane, rec) in enumerate(zip(lanes, records, strict=True))
    ]
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[str] = asyncio.Queue()

    def reader() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(commands.put_nowait, line.strip())
        loop.call_soon_threadsafe(commands.put_nowait, "stop")

    threading.Thread(target=reader, daemon=True).start()
    print(json.dumps({"ready": True}), flush=True)
    while True:
        command = await commands.get()
        if command == "stop":
            stop.set()
            await asyncio.gather(*tasks)
        if command in ("stop", "snapshot"):
            print(json.dumps({"lanes": [asdict(r) for r in records]}), flush=True)
        if command == "stop":
            return


class ContinuousProber:
    """Lanes probed continuously by a child process (so the test's own work cannot delay them).

    Use as a context manager, or ``start()``/``stop()``. ``snapshot()`` returns the records so
    far without stopping; ``stop()`` returns the final ones.
    """

    def __init__(self, lanes: Sequence[Lane], interval: float = 0.1, timeout: float = 2.0) -> None:
        self.lanes = list(lanes)
        self.interval = interval
        self.timeout = timeout
        self.proc: subprocess.Popen[str] | None = None
        self.records: list[LaneRecord] | None = None
        self.started_at = 0.0

    def start(self) -> ContinuousProber:
        config = {
            "lanes": [
                {**asdict(lane), "flows": [asdict(f) for f in lane.flows]} for lane in self.lanes
            ],
            "interval": self.interval,
            "timeout": self.timeout,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hack.dataplane.probes", "continuous"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(config) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line or not json.loads(line).get("ready"):
            self.proc.kill()
            raise RuntimeError("continuous prober did not start")
        self.started_at = time.time()
        return self

    def _ask(self, command: str) -> list[LaneRecord]:
        assert self.proc is not None and self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"continuous prober exited ({self.proc.poll()})")
        return [LaneRecord(**r) for r in json.loads(line)["lanes"]]

    def snapshot(self) -> list[LaneRecord]:
        return self._ask("snapshot")

    def stop(self) -> list[LaneRecord]:
        if self.records is None and self.proc is not None:
            try:
                self.records = self._ask("stop")
            finally:
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        return self.records or []

    def kill(self) -> None:
        """Stop without results (cleanup after a failure)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> ContinuousProber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.records is None:
            self.kill()


# ----- figures ----------------------------------------------------------------------------------
@dataclass
class Figures:
    """What a lifecycle scenario reports (see docs/dataplane.md)."""

    dns_probes: int
    dns_failures: list[list[Any]]
    forbidden_probes: int
    forbidden_successes: list[list[Any]]
    isolation_latency: dict[str, float]  # group -> seconds from opt-in to the first denial
    never_isolated: list[str]
    lanes: int = 0
    span: float = 0.0  # seconds from the first probe to the last

    @property
    def gap(self) -> float:
        """Mean seconds between two probes of one lane (the interval asked, if keeping up)."""
        probes = self.dns_probes + self.forbidden_probes
        return self.span * self.lanes / probes if probes else 0.0

    def percentile(self, q: float) -> float | None:
        values = sorted(self.isolation_latency.values())
        if not values:
            return None
        index = min(len(values) - 1, max(0, round(q / 100 * len(values) + 0.5) - 1))
        return values[index]

    def line(self, scenario: str) -> str:
        p50, p99 = self.percentile(50), self.percentile(99)
        lat = (
            f"opt-in->isolated p50 {p50:.2f}s p99 {p99:.2f}s (n={len(self.isolation_latency)})"
            if p50 is not None and p99 is not None
            else "opt-in->isolated n/a"
        )
        return (
            f"[dataplane] {scenario}: DNS failed {len(self.dns_failures)}/{self.dns_probes}, "
            f"forbidden succeeded after isolation {len(self.forbidden_successes)}/"
            f"{self.forbidden_probes}, {lat}; {self.lanes} lanes over {self.span:.0f}s, "
            f"a probe per lane every {self.gap * 1000:.0f} ms"
        )


def _reisolated(rec: LaneRecord, flow: str, since: float) -> float:
    """When ``flow`` was first denied again at or after ``since`` (inf: never)."""
    for verdict, first, _last, _count in rec.flow_runs.get(flow, []):
        if verdict == DENIED and first >= since:
            return float(first)
    return float("inf")


def summarize(
    records: Iterable[LaneRecord],
    opted_in_at: Mapping[str, float] | None = None,
    released: Mapping[str, Sequence[tuple[float, float]]] | None = None,
) -> Figures:
    """The two figures and the isolation latency from lane records.

    ``opted_in_at[group]`` is when the test opted the group's namespace in; the latency runs to
    the moment every forbidden flow of the group had been denied. ``released[group]`` lists
    (start, end) windows in which the test itself lifted the isolation on purpose (opt-out,
    policy deletion, an exception on default-deny; ``end`` is when it was restored, or
    ``inf``): a flow's successes from ``start`` until that flow is denied again after ``end``
    are expected, not violations.
    """
    opted_in_at = opted_in_at or {}
    released = released or {}
    dns_probes = forbidden_probes = 0
    dns_failures: list[list[Any]] = []
    successes: list[list[Any]] = []
    latency: dict[str, float] = {}
    never: list[str] = []
    records = list(records)
    starts = [r.runs[0][1] for r in records if r.runs]
    ends = [r.runs[-1][2] for r in records if r.runs]
    span = max(ends) - min(starts) if starts else 0.0
    for rec in records:
        if rec.expect == ALLOWED:
            dns_probes += rec.probes
            dns_failures.extend([rec.name, *e] for e in rec.events)
            continue
        forbidden_probes += rec.probes
        isolated = rec.isolated_at
        if isolated is None:
            never.append(rec.name)
        windows = released.get(rec.group, [])
        for event in rec.events:
            t, flow = event[0], event[2]
            if not any(a <= t < _reisolated(rec, flow, b) for a, b in windows):
                successes.append([rec.name, *event])
        if isolated is not None and rec.group in opted_in_at:
            lat = isolated - opted_in_at[rec.group]
            latency[rec.group] = min(lat, latency.get(rec.group, lat))
    return Figures(
        dns_probes, dns_failures, forbidden_probes, successes, latency, never, len(records), span
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Real-packet probes from network namespaces.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    once = sub.add_parser("once", help="probe one flow and print the verdict")
    once.add_argument("netns")
    once.add_argument("dst")
    once.add_argument("port", type=int)
    once.add_argument("proto", choices=PROTOCOLS)
    once.add_argument("--timeout", type=float, default=2.0)
    sub.add_parser("continuous", help="(internal) the ContinuousProber child")
    args = parser.parse_args(argv)
    if args.cmd == "continuous":
        use_port_range(30000, 30000)
        config = json.loads(sys.stdin.readline())
        asyncio.run(_child_main(config))
        return 0
    try:
        (result,) = probe_flows([Flow(args.netns, args.dst, args.port, args.proto)], args.timeout)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{result.flow.describe()}: {result.verdict} ({result.elapsed * 1000:.1f} ms)"
        + (f" {result.detail}" if result.detail else "")
    )
    return 0 if result.allowed else 1


if __name__ == "__main__":
    sys.exit(main())
