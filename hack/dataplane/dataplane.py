"""A NetworkPolicy dataplane made of network namespaces, enforced by kube-router's firewall.

Real packets between "pods" that are network namespaces, filtered by a real NetworkPolicy
implementation (kube-router v2.1.0's firewall controller, built from Go modules by
``hack/dataplane/build.sh``), against a real API server. No Docker, no kubelet. Test tooling;
nothing here is shipped.

What one :class:`Dataplane` is made of (names carry a per-run id, so runs can share a machine)::

    host netns (untouched)   node netns nsbdp-<run>-node          pod netns nsbdp-<run>-p<N>
    API 127.0.0.1:P  <-----  agent forwarder 127.0.0.1:P         eth0 10.244.x.y/16
                             kube-router (firewall only)         default via 10.244.0.1
                             br0 10.244.0.1/16 --- veth vpN ---
                             iptables rules, ipsets, sysctls     external netns nsbdp-<run>-ext
                             lo 169.254.20.10 (node-local DNS)   192.0.2.10, 198.51.100.10,
                             vext 198.18.0.1/30 -------------    203.0.113.10, 203.0.113.200

- The **node** namespace holds the bridge, kube-router's iptables rules and ipsets, and the
  sysctls it needs (``bridge-nf-call-iptables=1``, ``ip_forward=1``, ``icmp_ratelimit=0``: every
  denial is an immediate refusal). A Node object (podCIDR, InternalIP = the bridge address,
  Ready) is kept alive by the agent's heartbeat (Lease + Ready every 10 s).
- A **pod** is a Pod object (``spec.nodeName`` = the node; status Running, podIP, hostIP = the
  node's InternalIP, Ready, written through the status subresource) and a network namespace on
  the bridge, with a listener on every port a test may probe (TCP and UDP, served by the agent).
  The Pod object is created *first*; the network is brought up only once the API server admitted
  it, as a kubelet would.
- **DNS**: :meth:`Dataplane.dns_server` runs ``dnsmasq`` (Debian ``dnsmasq-base``) in a pod
  (e.g. kube-system's ``k8s-app=kube-dns``), answering A queries for
  :data:`hack.dataplane.probes.DNS_NAME` on UDP and TCP 53; :meth:`Dataplane.node_local_dns`
  runs one on the node at 169.254.20.10.
- **External hosts** live in one more namespace routed through the node, at documentation
  addresses (:data:`EXTERNAL_HOSTS`).
- The host's network namespace is not changed: kube-router reaches the API server through the
  agent, which listens inside the node namespace and connects from the host's.

Library use (what tests do)::

    dp = Dataplane(kubeconfig, workdir).start()
    web = dp.create_pod("team-a", "web", labels={"app": "web"})   # Pod object, then netns
    dp.wait_protected([web])                                        # kube-router has its chain
    [r] = dp.probe([dp.flow(web, "203.0.113.10", 443)])             # r.verdict: allowed/denied
    with dp.continuous([Lane("dns", [dp.dns_flow(web)], ALLOWED)]) as prober:
        ...; records = prober.stop()
    dp.stop()                                                       # nothing left behind

CLI (for humans; the state lives in ``--dir``)::

    python -m hack.dataplane.dataplane up --kubeconfig KUBECONFIG    # starts, then returns
    python -m hack.dataplane.dataplane pod NAMESPACE NAME -l app=web
    python -m hack.dataplane.dataplane probe NAMESPACE/NAME 203.0.113.10 443 tcp
    python -m hack.dataplane.dataplane status | down
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hack.dataplane.kubeapi import ApiError, KubeAPI, now_rfc3339
from hack.dataplane.netns import forget, socket_in
from hack.dataplane.probes import (
    ALLOWED,
    DNS_ANSWER,
    DNS_NAME,
    ContinuousProber,
    Flow,
    Lane,
    Result,
    probe_flows,
)

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "hack" / "dataplane" / "build.sh"
PREFIX = "nsbdp-"
POD_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/12"
NODE_LOCAL_DNS = "169.254.20.10"
#: "External" hosts (documentation ranges, RFC 5737), reached through the node.
EXTERNAL_HOSTS = ("192.0.2.10", "198.51.100.10", "203.0.113.10", "203.0.113.200")
EXTERNAL_NETS = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
LINK_NODE, LINK_EXT = "198.18.0.1", "198.18.0.2"  # node <-> external link (RFC 2544 range)
#: Ports every pod and external host listens on, so that a refusal always means "policy said no".
DEFAULT_TCP = (53, 80, 443, 8080, 9090, 9100, 9101, 9102, 9103, 9200, 9201)
DEFAULT_UDP = (53, 443, 8080, 9090)
DATAPLANE_LABEL = "dataplane.nsbaseline.io/run"
#: Tolerate the node's not-ready/unreachable taints forever: a hiccup of the heartbeat on a
#: loaded machine must not evict every pod of the test.
TOLERATIONS = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
]
REQUIRED_COMMANDS = {
    "ip": "iproute2",
    "iptables": "iptables",
    "iptables-save": "iptables",
    "iptables-restore": "iptables",
    "ipset": "ipset",
    "dnsmasq": "dnsmasq-base",
}


class DataplaneError(RuntimeError):
    """Something the dataplane needs failed; the message says what and where to look."""


def run(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a command (no shell); DataplaneError with its stderr if it fails."""
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise DataplaneError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def in_netns(netns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("ip", "netns", "exec", netns, *args, check=check)


def missing_requirements() -> list[str]:
    """What this machine lacks to run a dataplane, as short phrases (empty: all there).

    Checks root, the commands kube-router and the dataplane shell out to, and the kernel
    features, by trying them in a scratch network namespace that is deleted again.
    """
    if os.geteuid() != 0:
        return [f"root (running as uid {os.geteuid()}; network namespaces and iptables need it)"]
    missing = [
        f"{cmd} (Debian package {pkg})"
        for cmd, pkg in REQUIRED_COMMANDS.items()
        if shutil.which(cmd) is None
    ]
    if missing:
        return missing
    scratch = f"{PREFIX}preflight-{secrets.token_hex(3)}"
    if run("ip", "netns", "add", scratch, check=False).returncode != 0:
        return ["network namespaces (ip netns add failed)"]
    try:
        checks = [
            ("a Linux bridge", ["ip", "-n", scratch, "link", "add", "br0", "type", "bridge"]),
            (
                "veth pairs",
                ["ip", "-n", scratch, "link", "add", "va", "type", "veth", "peer", "name", "vb"],
            ),
            (
                "br_netfilter (net.bridge.bridge-nf-call-iptables)",
                ["sysctl", "-w", "net.bridge.bridge-nf-call-iptables=1"],
            ),
            (
                "net.ipv4.icmp_ratelimit per namespace",
                ["sysctl", "-w", "net.ipv4.icmp_ratelimit=0"],
            ),
            ("ipset hash:ip", ["ipset", "create", "nsbdp-probe", "hash:ip"]),
            (
                "iptables physdev, set, conntrack, mark, comment, NFLOG and REJECT",
                [
                    "sh",
                    "-c",
                    "iptables -A FORWARD -m physdev --physdev-is-bridged -m set --match-set"
                    " nsbdp-probe src -m conntrack --ctstate NEW -m mark ! --mark 0x10000/0x10000"
                    " -m comment --comment probe -j NFLOG --nflog-group 100"
                    " && iptables -A FORWARD -m addrtype --src-type LOCAL -j REJECT"
                    " && iptables -A FORWARD -p tcp -m multiport --dports 1:2"
                    " -j MARK --set-xmark 0x1/0x1",
                ],
            ),
        ]
        for what, cmd in checks:
            if cmd[0] in ("sysctl", "ipset", "sh"):
                cmd = ["ip", "netns", "exec", scratch, *cmd]
            proc = run(*cmd, check=False)
            if proc.returncode != 0:
                return [f"kernel support for {what}: {proc.stderr.strip()[:200]}"]
        return []
    finally:
        run("ip", "netns", "del", scratch, check=False)


def build_kube_router() -> Path:
    """The kube-router binary, built from Go modules on first use (cached; see build.sh)."""
    if shutil.which("go") is None:
        raise DataplaneError("kube-router is built from Go modules, but there is no `go` on PATH")
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise DataplaneError(f"building kube-router failed:\n{proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1]) / "kube-router"


@dataclass
class Pod:
    """A pod of the dataplane: the Pod object's identity and its network namespace."""

    namespace: str
    name: str
    ip: str
    netns: str
    veth: str
    labels: dict[str, str] = field(default_factory=dict)
    tcp: list[int] = field(default_factory=list)
    udp: list[int] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class _State:
    """What ``down`` (or the next run, after a crash) needs to undo everything."""

    run: str
    node: str
    owner_pid: int
    kubeconfig: str
    netns: list[str] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)
    pods: list[dict[str, Any]] = field(default_factory=list)
    next_ip: int = 2
    next_veth: int = 0
    api_port: int = 0
    health_port: int = 0
    pod_cidr: str = POD_CIDR


class Dataplane:
    """One node of real packets; see the module docstring. Not thread-safe."""

    def __init__(
        self,
        kubeconfig: Path,
        workdir: Path,
        run_id: str | None = None,
        kube_router: Path | None = None,
        pod_cidr: str = POD_CIDR,
    ) -> None:
        """``pod_cidr``: the node's pod range. Dataplanes in separate clusters may all use the
        default; two nodes of one cluster need distinct ranges (their InternalIP is the
        range's first address, and kube-router takes a pod whose hostIP is its node's IP for
        its own)."""
        run_id = run_id or secrets.token_hex(3)
        self.workdir = workdir
        self.kubeconfig = kubeconfig
        self.kube_router_bin = kube_router
        self.state = _State(
            run=run_id,
            node=f"dp-{run_id}",
            owner_pid=os.getpid(),
            kubeconfig=str(kubeconfig),
            pod_cidr=pod_cidr,
        )
        self._api: KubeAPI | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.pods: dict[str, Pod] = {}
        self.network = ipaddress.ip_network(pod_cidr)
        self.gateway = str(self.network.network_address + 1)

    @property
    def api(self) -> KubeAPI:
        """The API client, made on first use (``down`` after a crash may find no kubeconfig;
        the namespaces and processes are cleaned up all the same)."""
        if self._api is None:
            self._api = KubeAPI.from_kubeconfig(self.kubeconfig)
        return self._api

    # ----- names -----------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        return self.state.run

    @property
    def node(self) -> str:
        return self.state.node

    @property
    def node_netns(self) -> str:
        return f"{PREFIX}{self.run_id}-node"

    @property
    def ext_netns(self) -> str:
        return f"{PREFIX}{self.run_id}-ext"

    @property
    def state_file(self) -> Path:
        return self.workdir / "state.json"

    @property
    def node_ip(self) -> str:
        """The node's InternalIP (the bridge's address): every pod's hostIP."""
        return self.gateway

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def save(self) -> None:
        self.state.pods = [asdict(p) for p in self.pods.values()]
        self.state_file.write_text(json.dumps(asdict(self.state), indent=1))

    @classmethod
    def load(cls, workdir: Path) -> Dataplane:
        """Re-attach to a dataplane started by another process (the CLI)."""
        try:
            raw = json.loads((workdir / "state.json").read_text())
        except (OSError, ValueError) as exc:
            raise DataplaneError(f"no dataplane recorded in {workdir}: {exc}") from None
        dp = cls(
            Path(raw["kubeconfig"]), workdir, raw["run"], pod_cidr=raw.get("pod_cidr", POD_CIDR)
        )
        dp.state = _State(**raw)
        dp.pods = {f"{p['namespace']}/{p['name']}": Pod(**p) for p in raw.get("pods", [])}
        return dp

    # ----- start -----------------------------------------------------------------------------
    def start(self) -> Dataplane:
        """Build the node, start the agent and kube-router, and wait until it enforces."""
        missing = missing_requirements()
        if missing:
            raise DataplaneError("this machine lacks: " + "; ".join(missing))
        self.workdir.mkdir(parents=True, exist_ok=True)
        binary = self.kube_router_bin or build_kube_router()
        self.save()
        try:
            self._node_network()
            self._external_network()
            self._node_object()
            self._start_agent()
            self._start_kube_router(binary)
        except BaseException:
            self.stop()
            raise
        return self

    def _add_netns(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self.state.netns.append(name)
        self.save()
        run("ip", "-n", name, "link", "set", "lo", "up")

    def _node_network(self) -> None:
        ns = self.node_netns
        self._add_netns(ns)
        for key, value in (
            ("net.bridge.bridge-nf-call-iptables", "1"),
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.icmp_ratelimit", "0"),
            ("net.ipv4.icmp_msgs_per_sec", "100000"),
            ("net.ipv4.icmp_msgs_burst", "100000"),
        ):
            in_netns(ns, "sysctl", "-q", "-w", f"{key}={value}")
        prefix = self.network.prefixlen
        run("ip", "-n", ns, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", ns, "addr", "add", f"{self.gateway}/{prefix}", "dev", "br0")
        run("ip", "-n", ns, "link", "set", "br0", "up")

    def _external_network(self) -> None:
        ns, ext = self.node_netns, self.ext_netns
        self._add_netns(ext)
        run(
            "ip",
            "-n",
            ns,
            "link",
            "add",
            "vext",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ext,
        )
        run("ip", "-n", ns, "addr", "add", f"{LINK_NODE}/30", "dev", "vext")
        run("ip", "-n", ns, "link", "set", "vext", "up")
        run("ip", "-n", ext, "addr", "add", f"{LINK_EXT}/30", "dev", "eth0")
        run("ip", "-n", ext, "link", "set", "eth0", "up")
        for host in EXTERNAL_HOSTS:
            run("ip", "-n", ext, "addr", "add", f"{host}/32", "dev", "lo")
        run("ip", "-n", ext, "route", "add", "default", "via", LINK_NODE)
        for net in EXTERNAL_NETS:
            run("ip", "-n", ns, "route", "add", net, "via", LINK_EXT)

    def _node_object(self) -> None:
        node = self.node
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": node,
                "labels": {"kubernetes.io/hostname": node, DATAPLANE_LABEL: self.run_id},
            },
            "spec": {"podCIDR": self.state.pod_cidr, "podCIDRs": [self.state.pod_cidr]},
        }
        created = self.api.create("/api/v1/nodes", body)
        now = now_rfc3339()
        self.api.merge_patch(
            f"/api/v1/nodes/{node}/status",
            {
                "status": {
                    "addresses": [
                        {"type": "InternalIP", "address": self.node_ip},
                        {"type": "Hostname", "address": node},
                    ],
                    "capacity": {"cpu": "2", "memory": "4Gi", "pods": "1000"},
                    "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "1000"},
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "message": "nsbaseline dataplane node",
                            "lastHeartbeatTime": now,
                            "lastTransitionTime": now,
                        }
                    ],
                }
            },
        )
        owner = {
            "apiVersion": "v1",
            "kind": "Node",
            "name": node,
            "uid": created["metadata"]["uid"],
        }
        with contextlib.suppress(ApiError):
            self.api.create(
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": node, "ownerReferences": [owner]},
                    "spec": {
                        "holderIdentity": node,
                        "leaseDurationSeconds": 40,
                        "renewTime": now_rfc3339(micro=True),
                    },
                },
            )

    def _spawn(
        self, name: str, args: Sequence[str], env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        logf = open(self.log(name), "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            list(args),
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            cwd=REPO,
        )
        logf.close()
        self._procs[name] = proc
        self.state.pids[name] = proc.pid
        self.save()
        return proc

    def _kube_router_kubeconfig(self) -> Path:
        """The kubeconfig with its server pointed at the agent's forwarder in the node netns."""
        doc = yaml.safe_load(self.kubeconfig.read_text())
        ctx_name = doc.get("current-context") or doc["contexts"][0]["name"]
        ctx = next(c for c in doc["contexts"] if c["name"] == ctx_name)["context"]
        cluster = next(c for c in doc["clusters"] if c["name"] == ctx["cluster"])["cluster"]
        url = urllib.parse.urlsplit(cluster["server"])
        if url.hostname not in ("127.0.0.1", "localhost"):
            cluster.setdefault("tls-server-name", url.hostname)
        cluster["server"] = f"https://127.0.0.1:{self.state.api_port}"
        path = self.workdir / "node.kubeconfig"
        path.write_text(json.dumps(doc))
        path.chmod(0o600)
        return path

    def _start_agent(self) -> None:
        url = urllib.parse.urlsplit(self.api.config.server)
        self.state.api_port = url.port or 443
        proc = self._spawn(
            "agent",
            [
                sys.executable,
                "-m",
                "hack.dataplane.agent",
                "--node",
                self.node,
                "--node-netns",
                self.node_netns,
                "--kubeconfig",
                str(self.kubeconfig),
                "--upstream-host",
                url.hostname or "127.0.0.1",
                "--upstream-port",
                str(self.state.api_port),
                "--listen-port",
                str(self.state.api_port),
                "--control",
                str(self.workdir / "agent.sock"),
            ],
            env={"PYTHONPATH": str(REPO)},
        )
        deadline = time.monotonic() + 30
        while not self._agent_call({"op": "ping"}, check=False):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise DataplaneError(f"the dataplane agent did not start; see {self.log('agent')}")
            time.sleep(0.1)
        self._agent_call(
            {
                "op": "listen",
                "netns": self.ext_netns,
                "tcp": list(DEFAULT_TCP),
                "udp": list(DEFAULT_UDP),
                "addresses": list(EXTERNAL_HOSTS),
            }
        )

    def _agent_call(self, request: dict[str, Any], check: bool = True) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(30)
                sock.connect(str(self.workdir / "agent.sock"))
                sock.sendall((json.dumps(request) + "\n").encode())
                answer = json.loads(sock.makefile().readline() or "{}")
        except (OSError, ValueError) as exc:
            if check:
                raise DataplaneError(f"dataplane agent unreachable: {exc}") from None
            return False
        if not answer.get("ok"):
            if check:
                raise DataplaneError(f"dataplane agent: {answer.get('error', answer)}")
            return False
        return True

    def _start_kube_router(self, binary: Path) -> None:
        self.state.health_port = 20244
        kubeconfig = self._kube_router_kubeconfig()
        proc = self._spawn(
            "kube-router",
            [
                "ip",
                "netns",
                "exec",
                self.node_netns,
                str(binary),
                "--run-firewall=true",
                "--run-router=false",
                "--run-service-proxy=false",
                "--run-loadbalancer=false",
                f"--hostname-override={self.node}",
                f"--kubeconfig={kubeconfig}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--health-port={self.state.health_port}",
                "--metrics-port=0",
                "--v=1",
            ],
        )
        deadline = time.monotonic() + 120
        while not self.kube_router_healthy():
            if proc.poll() is not None:
                raise DataplaneError(
                    f"kube-router exited ({proc.returncode}); see {self.log('kube-router')}:\n"
                    + self.tail("kube-router")
                )
            if time.monotonic() > deadline:
                raise DataplaneError(
                    f"kube-router not healthy after 120 s; see {self.log('kube-router')}"
                )
            time.sleep(0.25)

    def kube_router_healthy(self) -> bool:
        """kube-router's /healthz (inside the node namespace) and its top-level chains exist."""
        try:
            with socket_in(self.node_netns) as sock:
                sock.settimeout(2)
                sock.connect(("127.0.0.1", self.state.health_port))
                sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                head = sock.recv(64)
        except OSError:
            return False
        if b" 200 " not in head:
            return False
        return "KUBE-ROUTER-FORWARD" in self.iptables_save()

    def iptables_save(self) -> str:
        """The node's filter table. iptables-save (nf_tables) fails now and then while
        kube-router swaps sets under it ("Set ... doesn't exist"): such a read is retried."""
        for attempt in range(10):
            proc = in_netns(self.node_netns, "iptables-save", "-t", "filter", check=attempt == 9)
            if proc.returncode == 0:
                return proc.stdout
            time.sleep(0.1)
        raise AssertionError("unreachable")

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.log(name)
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # ----- pods ------------------------------------------------------------------------------
    def _next_ip(self) -> str:
        ip = str(self.network.network_address + self.state.next_ip)
        self.state.next_ip += 1
        return ip

    def create_pod(
        self,
        namespace: str,
        name: str,
        labels: Mapping[str, str] | None = None,
        tcp: Iterable[int] = DEFAULT_TCP,
        udp: Iterable[int] = DEFAULT_UDP,
        named_ports: Mapping[str, int] | None = None,
        wait: bool = False,
    ) -> Pod:
        """A pod: the Pod object first (raises :class:`ApiError` if admission refuses it), then
        its network namespace, listeners and status, as a kubelet would.

        ``named_ports`` become container ports (``name: port``), for policies that name ports.
        ``wait`` waits until kube-router has a firewall chain for the pod (see
        :meth:`wait_protected`); until then its traffic is not filtered at all.
        """
        labels = dict(labels or {})
        ports = [
            {"name": pname, "containerPort": port, "protocol": "TCP"}
            for pname, port in sorted((named_ports or {}).items())
        ]
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {**labels, DATAPLANE_LABEL: self.run_id},
            },
            "spec": {
                "nodeName": self.node,
                "terminationGracePeriodSeconds": 0,
                "automountServiceAccountToken": False,
                "tolerations": TOLERATIONS,
                "containers": [
                    {"name": "main", "image": "dataplane.invalid/pod:none", "ports": ports}
                ],
            },
        }
        path = f"/api/v1/namespaces/{namespace}/pods"
        deadline = time.monotonic() + 60
        while True:
            try:
                self.api.create(path, body)
                break
            except ApiError as exc:
                # A new namespace's "default" ServiceAccount comes a moment after it.
                if "serviceaccount" in exc.message.replace(" ", "").lower() and (
                    time.monotonic() < deadline
                ):
                    time.sleep(0.2)
                    continue
                raise
        index = self.state.next_veth
        self.state.next_veth += 1
        pod = Pod(
            namespace,
            name,
            self._next_ip(),
            f"{PREFIX}{self.run_id}-p{index}",
            f"vp{index}",
            labels,
            sorted(set(tcp) | set((named_ports or {}).values())),
            sorted(set(udp)),
        )
        self._pod_network(pod)
        self.pods[pod.ref] = pod
        self.save()
        self._agent_call({"op": "listen", "netns": pod.netns, "tcp": pod.tcp, "udp": pod.udp})
        self._pod_status(pod)
        if wait:
            self.wait_protected([pod])
        return pod

    def _pod_network(self, pod: Pod) -> None:
        ns = self.node_netns
        self._add_netns(pod.netns)
        run(
            "ip",
            "-n",
            ns,
            "link",
            "add",
            pod.veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            pod.netns,
        )
        run("ip", "-n", ns, "link", "set", pod.veth, "master", "br0", "up")
        run(
            "ip",
            "-n",
            pod.netns,
            "addr",
            "add",
            f"{pod.ip}/{self.network.prefixlen}",
            "dev",
            "eth0",
        )
        run("ip", "-n", pod.netns, "link", "set", "eth0", "up")
        run("ip", "-n", pod.netns, "route", "add", "default", "via", self.gateway)

    def _pod_status(self, pod: Pod) -> None:
        now = now_rfc3339()
        conditions = [
            {"type": t, "status": "True", "lastTransitionTime": now}
            for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ]
        self.api.merge_patch(
            f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/status",
            {
                "status": {
                    "phase": "Running",
                    "hostIP": self.node_ip,
                    "hostIPs": [{"ip": self.node_ip}],
                    "podIP": pod.ip,
                    "podIPs": [{"ip": pod.ip}],
                    "startTime": now,
                    "conditions": conditions,
                }
            },
        )

    def delete_pod(self, pod: Pod) -> None:
        """Delete the Pod object (at once: no kubelet to wait for) and its network."""
        with contextlib.suppress(ApiError):
            self.api.delete(f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}", grace_period=0)
        self._agent_call({"op": "close", "netns": pod.netns}, check=False)
        self._del_netns(pod.netns)
        self.pods.pop(pod.ref, None)
        self.save()

    def _del_netns(self, name: str) -> None:
        forget(name)
        run("ip", "netns", "del", name, check=False)
        if name in self.state.netns:
            self.state.netns.remove(name)

    def protected(self, pods: Iterable[Pod]) -> list[Pod]:
        """The pods kube-router has a firewall chain for (filtered from now on)."""
        rules = self.iptables_save()
        return [
            p
            for p in pods
            if f"rule to jump traffic destined to POD name:{p.name} namespace: {p.namespace} "
            in rules
        ]

    def wait_protected(self, pods: Sequence[Pod], timeout: float = 120) -> None:
        """Wait until kube-router filters the traffic of every pod in ``pods``."""
        deadline = time.monotonic() + timeout
        while True:
            done = self.protected(pods)
            if len(done) == len(pods):
                return
            if time.monotonic() > deadline:
                missing = sorted({p.ref for p in pods} - {p.ref for p in done})
                raise DataplaneError(f"kube-router has no chain for {missing[:5]} after {timeout}s")
            time.sleep(0.2)

    # ----- DNS -------------------------------------------------------------------------------
    def dns_server(self, pod: Pod, answer: str = DNS_ANSWER) -> None:
        """Run dnsmasq in ``pod`` on UDP+TCP 53, answering :data:`DNS_NAME` with ``answer``."""
        self._agent_call({"op": "close", "netns": pod.netns})
        self._dnsmasq(f"dnsmasq-{pod.namespace}-{pod.name}", pod.netns, pod.ip, answer)
        # Other ports keep their listeners; 53 now belongs to dnsmasq.
        self._agent_call(
            {
                "op": "listen",
                "netns": pod.netns,
                "tcp": [p for p in pod.tcp if p != 53],
                "udp": [p for p in pod.udp if p != 53],
            }
        )

    def node_local_dns(self, address: str = NODE_LOCAL_DNS, answer: str = DNS_ANSWER) -> str:
        """A node-local DNS cache: dnsmasq on the node at ``address`` (on the node's loopback,
        as node-local-dns binds it; this kernel has no dummy interfaces)."""
        run("ip", "-n", self.node_netns, "addr", "add", f"{address}/32", "dev", "lo")
        self._dnsmasq("dnsmasq-node-local", self.node_netns, address, answer)
        return address

    def _dnsmasq(self, name: str, netns: str, address: str, answer: str) -> None:
        self._spawn(
            name,
            [
                "ip",
                "netns",
                "exec",
                netns,
                "dnsmasq",
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--user=root",
                f"--pid-file={self.workdir / (name + '.pid')}",
                "--bind-interfaces",
                f"--listen-address={address}",
                "--port=53",
                f"--host-record={DNS_NAME},{answer}",
                "--log-facility=-",
            ],
        )
        deadline = time.monotonic() + 20
        flow = Flow(netns, address, 53, "dns-udp", answer=answer)
        while not probe_flows([flow], timeout=1.0)[0].allowed:
            if time.monotonic() > deadline:
                raise DataplaneError(f"dnsmasq at {address} does not answer; see {self.log(name)}")
            time.sleep(0.1)

    # ----- probes ----------------------------------------------------------------------------
    def flow(
        self, src: Pod | str, dst: Pod | str, port: int, proto: str = "tcp", name: str = ""
    ) -> Flow:
        """A flow from a pod (or a netns name) to a pod or an address."""
        src_ns = src.netns if isinstance(src, Pod) else src
        dst_ip = dst.ip if isinstance(dst, Pod) else dst
        if not name:
            s = src.ref if isinstance(src, Pod) else src
            d = dst.ref if isinstance(dst, Pod) else dst
            name = f"{s} -> {d}:{port}/{proto}"
        return Flow(src_ns, dst_ip, port, proto, name)

    def dns_flow(self, src: Pod, server: Pod | str, proto: str = "dns-udp") -> Flow:
        return self.flow(src, server, 53, proto)

    def probe(self, flows: Sequence[Flow], timeout: float = 2.0) -> list[Result]:
        return probe_flows(flows, timeout)

    def continuous(
        self, lanes: Sequence[Lane], interval: float = 0.1, timeout: float = 2.0
    ) -> ContinuousProber:
        """Lanes probed every ``interval`` s in a child process (use as a context manager)."""
        return ContinuousProber(lanes, interval, timeout)

    # ----- stop ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop exactly the processes this dataplane started, delete its namespaces and Node.

        Safe to call twice, and from another process (``down``) via :meth:`load`.
        """
        for name in sorted(self.state.pids, key=lambda n: n != "kube-router"):
            self._stop_process(name)
        for ns in list(reversed(self.state.netns)):
            self._del_netns(ns)
        for pod in list(self.pods.values()):
            with contextlib.suppress(ApiError, OSError):
                self.api.delete(
                    f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}", grace_period=0
                )
        self.pods.clear()
        with contextlib.suppress(ApiError, OSError):
            self.api.delete(f"/api/v1/nodes/{self.node}")
        with contextlib.suppress(ApiError, OSError):
            self.api.delete(
                f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node}"
            )
        if self.workdir.exists():
            self.save()

    def _stop_process(self, name: str, timeout: float = 15) -> None:
        proc = self._procs.pop(name, None)
        pid = self.state.pids.pop(name, None)
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            return
        if pid is None or not self._is_ours(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self._is_ours(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if self._is_ours(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _is_ours(self, pid: int) -> bool:
        """Whether ``pid`` is still one of ours: its command line names our run or workdir,
        or it lives in one of our network namespaces (dnsmasq, exec'd by ``ip netns exec``)."""
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            stat = Path(f"/proc/{pid}/stat").read_text()
            netns_inode = os.stat(f"/proc/{pid}/ns/net").st_ino
        except OSError:
            return False
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        text = raw.replace(b"\0", b" ").decode(errors="replace")
        if self.run_id in text or str(self.workdir) in text:
            return True
        for ns in self.state.netns:
            with contextlib.suppress(OSError):
                if os.stat(f"/run/netns/{ns}").st_ino == netns_inode:
                    return True
        return False

    def node_gone(self) -> bool:
        """Whether the Node object is gone from the API server (after :meth:`stop`)."""
        try:
            self.api.get(f"/api/v1/nodes/{self.node}")
        except ApiError as exc:
            return exc.status == 404
        return False

    def owner_alive(self) -> bool:
        try:
            os.kill(self.state.owner_pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def cleanup_stale(root: Path) -> list[str]:
    """Tear down dataplanes under ``root`` whose owning process is gone (a crashed test run)."""
    cleaned = []
    for state in sorted(root.glob("*/state.json")):
        try:
            dp = Dataplane.load(state.parent)
        except (DataplaneError, OSError, KeyError, TypeError):
            continue
        if not dp.owner_alive():
            dp.stop()
            cleaned.append(dp.run_id)
    return cleaned


# ----- CLI --------------------------------------------------------------------------------------
def _labels(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise DataplaneError(f"label {item!r} is not key=value")
        out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="A NetworkPolicy dataplane of network namespaces, enforced by kube-router."
    )
    parser.add_argument(
        "--dir", type=Path, default=REPO / ".cache" / "dataplane" / "cli", help="state folder"
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a dataplane node (returns once kube-router enforces)")
    up.add_argument("--kubeconfig", type=Path, default=os.environ.get("KUBECONFIG"))
    up.add_argument(
        "--kube-dns", action="store_true", help="also run kube-system/kube-dns (dnsmasq)"
    )
    pod = sub.add_parser("pod", help="create a pod (Pod object, then its network namespace)")
    pod.add_argument("namespace")
    pod.add_argument("name")
    pod.add_argument("-l", "--label", action="append", default=[], help="key=value")
    probe = sub.add_parser("probe", help="probe a flow from a pod: prints allowed/denied")
    probe.add_argument("source", help="NAMESPACE/POD")
    probe.add_argument("destination", help="NAMESPACE/POD or an address")
    probe.add_argument("port", type=int)
    probe.add_argument("proto", choices=["tcp", "udp", "dns-udp", "dns-tcp"])
    sub.add_parser("status", help="list the node's pods and their network namespaces")
    sub.add_parser("down", help="stop everything `up` started and delete its namespaces")
    args = parser.parse_args(argv)
    workdir: Path = args.dir.resolve()
    try:
        if args.cmd == "up":
            if not args.kubeconfig:
                raise DataplaneError("no kubeconfig: pass --kubeconfig or set KUBECONFIG")
            if (workdir / "state.json").exists() and Dataplane.load(workdir).state.pids:
                raise DataplaneError(
                    f"a dataplane is already recorded in {workdir}; run `down` first"
                )
            dp = Dataplane(Path(args.kubeconfig).resolve(), workdir)
            dp.state.owner_pid = 1  # nobody: only `down` ends it
            dp.start()
            dp.save()
            if args.kube_dns:
                dns = dp.create_pod("kube-system", "kube-dns", {"k8s-app": "kube-dns"})
                dp.dns_server(dns)
            print(f"dataplane node {dp.node} up (netns {dp.node_netns}; logs in {workdir})")
            return 0
        dp = Dataplane.load(workdir)
        if args.cmd == "pod":
            p = dp.create_pod(args.namespace, args.name, _labels(args.label), wait=True)
            print(f"{p.ref} {p.ip} netns {p.netns}   (ip netns exec {p.netns} ...)")
        elif args.cmd == "probe":
            src = dp.pods.get(args.source)
            if src is None:
                raise DataplaneError(f"no pod {args.source} on this dataplane (see `status`)")
            dst: Pod | str = dp.pods.get(args.destination) or args.destination
            (result,) = dp.probe([dp.flow(src, dst, args.port, args.proto)])
            print(f"{result.flow.describe()}: {result.verdict} {result.detail}".rstrip())
            return 0 if result.verdict == ALLOWED else 1
        elif args.cmd == "status":
            healthy = dp.kube_router_healthy()
            print(f"node {dp.node}  netns {dp.node_netns}  kube-router healthy: {healthy}")
            for p in dp.pods.values():
                print(f"  {p.ref:40} {p.ip:15} {p.netns}")
        elif args.cmd == "down":
            dp.stop()
            (workdir / "state.json").unlink(missing_ok=True)
            print(f"dataplane {dp.run_id} stopped; its network namespaces are gone")
    except (DataplaneError, ApiError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
