"""Start and stop a real, local Kubernetes control plane: etcd, kube-apiserver and
kube-controller-manager built from Go modules by ``hack/controlplane/build.sh``.

This is what envtest does for Go operators, plus the controller-manager so that namespace
deletion and ownerReference garbage collection really happen. Everything listens on loopback on
free ports; certificates, keys and tokens are generated per cluster; the processes started are
recorded by PID so that ``down`` stops exactly those and nothing else.

Used three ways:
- ``python hack/localcluster.py up|down|status`` (what ``make up`` / ``make down`` run);
- the pytest session fixture in ``tests/conftest.py``;
- the fault-injection tests, which stop and restart single components.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "hack" / "controlplane" / "build.sh"
DEFAULT_DIR = REPO / ".cache" / "localcluster"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager")

#: What the API server's audit log records when ``LocalCluster(audit=True)``: only LIST and WATCH
#: requests, at Metadata level (who, which URI with its ``limit``/``continue``, which user agent),
#: one event per request once it completes. Enough for tests to prove every listing is paginated,
#: small enough to leave on for a whole test session.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived", "ResponseStarted"],
    "rules": [{"level": "Metadata", "verbs": ["list", "watch"]}, {"level": "None"}],
}


def build_binaries() -> Path:
    """Build (or find cached) control-plane binaries and return their folder."""
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    return Path(out.strip().splitlines()[-1])


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (all sockets held open together, so none repeats)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def self_signed_ca(
    name: x509.Name, key: CertificateIssuerPrivateKeyTypes, valid: datetime.timedelta
) -> x509.Certificate:
    """A CA certificate for ``key``, valid from five minutes ago (clock skew) for ``valid``.

    Shared by the local control plane's PKI and the tests' intercepting proxy.
    """
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + valid)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )


def generate_pki(pki: Path) -> None:
    """A CA, a serving certificate for 127.0.0.1/localhost, and the service-account key pair."""
    import ipaddress

    pki.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nsbaseline-local-ca")])
    ca_cert = self_signed_ca(ca_name, ca_key, datetime.timedelta(days=30))
    serving_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sans = [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes"),
        x509.DNSName("kubernetes.default"),
        x509.DNSName("kubernetes.default.svc"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
    ]
    serving_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(serving_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki / "ca.key", ca_key)
    (pki / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(pki / "serving.key", serving_key)
    (pki / "serving.crt").write_bytes(serving_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(pki / "sa.key", sa_key)
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def kubeconfig_text(server: str, ca_file: Path, token: str, user: str = "admin") -> str:
    """A kubeconfig that authenticates with a bearer token (JSON is valid YAML)."""
    import base64

    ca_data = base64.b64encode(ca_file.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "local", "cluster": {"server": server, "certificate-authority-data": ca_data}}
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
        "current-context": "local",
    }
    return json.dumps(config, indent=2) + "\n"


@dataclass
class LocalCluster:
    """One local control plane living in ``workdir``.

    The state file records ports, tokens and PIDs so that another process (``make down``, or the
    next ``make up``) can find and stop exactly what was started.
    """

    workdir: Path
    bindir: Path | None = None
    #: Write the API server's audit log of LISTs and WATCHes (:data:`AUDIT_POLICY`) to
    #: :attr:`audit_log`; the e2e session turns it on, ``make up`` leaves it off.
    audit: bool = False
    ports: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    #: Extra kube-controller-manager flags, e.g. ``--use-service-account-credentials=true`` to
    #: give each controller its own identity as real clusters do (the default runs them all as
    #: the admin user).
    controller_manager_args: list[str] = field(default_factory=list)
    #: Extra kube-apiserver flags (e.g. an audit log for a test that must know who wrote what).
    apiserver_args: list[str] = field(default_factory=list)
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    # ----- paths ---------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.workdir / "state.json"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def logdir(self) -> Path:
        return self.workdir / "logs"

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def audit_log(self) -> Path:
        """The API server's audit log (JSON lines); written only when ``audit`` is on."""
        return self.logdir / "audit.log"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def admin_token(self) -> str:
        return self.tokens["admin"]

    # ----- state ---------------------------------------------------------------------------
    def save(self) -> None:
        state = {
            "bindir": str(self.bindir),
            "ports": self.ports,
            "tokens": self.tokens,
            "pids": self.pids,
            "audit": self.audit,
        }
        self.state_file.write_text(json.dumps(state, indent=2))
        self.state_file.chmod(0o600)

    @classmethod
    def load(cls, workdir: Path) -> LocalCluster | None:
        path = workdir / "state.json"
        if not path.exists():
            return None
        state = json.loads(path.read_text())
        return cls(
            workdir=workdir,
            bindir=Path(state["bindir"]),
            ports=state["ports"],
            tokens=state["tokens"],
            pids=state["pids"],
            audit=bool(state.get("audit", False)),
        )

    # ----- lifecycle -----------------------------------------------------------------------
    def start(self, timeout: float = 180.0, attempts: int = 3) -> None:
        """Start the control plane, trying again with fresh ports if a component dies at start.

        On a busy machine a port picked as free can be taken before the component binds it;
        the logs of a failed attempt are kept (``logs/attempt-N``) for diagnosis.
        """
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(timeout)
                return
            except RuntimeError as exc:
                if attempt == attempts:
                    raise
                print(f"control plane start attempt {attempt} failed: {exc}", file=sys.stderr)
                kept = self.workdir / "logs" / f"attempt-{attempt}"
                kept.mkdir(parents=True, exist_ok=True)
                for log in self.logdir.glob("*.log"):
                    log.rename(kept / log.name)
                shutil.rmtree(self.workdir / "etcd-data", ignore_errors=True)

    def _start_once(self, timeout: float) -> None:
        """Generate credentials, start all components and wait until the cluster is usable."""
        if self.bindir is None:
            self.bindir = build_binaries()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logdir.mkdir(exist_ok=True)
        generate_pki(self.pki)
        self.tokens = {"admin": secrets.token_hex(16), "unprivileged": secrets.token_hex(16)}
        (self.pki / "tokens.csv").write_text(
            f'{self.tokens["admin"]},admin,admin,"system:masters"\n'
            f"{self.tokens['unprivileged']},nobody,nobody-uid\n"
        )
        self.ports = dict(
            zip(
                ["etcd", "etcd-peer", "apiserver", "controller-manager"], free_ports(4), strict=True
            )
        )
        self.kubeconfig.write_text(
            kubeconfig_text(self.server, self.pki / "ca.crt", self.tokens["admin"])
        )
        self.kubeconfig.chmod(0o600)
        self.start_component("etcd")
        self.start_component("kube-apiserver")
        try:
            self.wait_ready(timeout, ["/readyz"])
            # The controller-manager reads its authentication config from the API server once,
            # at start, and exits if nothing is serving yet: start it only now.
            self.start_component("kube-controller-manager")
            self.wait_ready(timeout)
        except Exception:
            self.stop()
            raise

    def _command(self, component: str) -> list[str]:
        assert self.bindir is not None
        binary = str(self.bindir / component)
        pki = self.pki
        if component == "etcd":
            client = f"http://127.0.0.1:{self.ports['etcd']}"
            peer = f"http://127.0.0.1:{self.ports['etcd-peer']}"
            return [
                binary,
                "--name=default",
                f"--data-dir={self.workdir / 'etcd-data'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                "--unsafe-no-fsync=true",
                "--quota-backend-bytes=8589934592",
                "--log-level=warn",
            ]
        if component == "kube-apiserver":
            port = self.ports["apiserver"]
            audit: list[str] = []
            if self.audit:
                policy = self.workdir / "audit-policy.json"
                policy.write_text(json.dumps(AUDIT_POLICY, indent=2) + "\n")
                audit = [
                    f"--audit-policy-file={policy}",
                    f"--audit-log-path={self.audit_log}",
                    "--audit-log-format=json",
                    "--audit-log-mode=blocking",
                ]
            return [
                binary,
                f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
                f"--secure-port={port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={pki / 'serving.crt'}",
                f"--tls-private-key-file={pki / 'serving.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--token-auth-file={pki / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                f"--service-account-issuer=https://127.0.0.1:{port}/",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                *audit,
                "--v=1",
                *self.apiserver_args,
            ]
        if component == "kube-controller-manager":
            kcm_kubeconfig = self.workdir / "kcm.kubeconfig"
            kcm_kubeconfig.write_text(
                kubeconfig_text(self.server, pki / "ca.crt", self.tokens["admin"])
            )
            return [
                binary,
                f"--kubeconfig={kcm_kubeconfig}",
                f"--authentication-kubeconfig={kcm_kubeconfig}",
                f"--authorization-kubeconfig={kcm_kubeconfig}",
                "--controllers=*",
                "--leader-elect=false",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['controller-manager']}",
                f"--cert-dir={self.workdir / 'kcm-certs'}",
                "--v=1",
                *self.controller_manager_args,
            ]
        raise ValueError(f"unknown component {component}")

    def start_component(self, component: str) -> None:
        log = open(self.logdir / f"{component}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            self._command(component),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.pids[component] = proc.pid
        self._procs[component] = proc
        self.save()

    def _running(self, component: str) -> bool:
        """Whether the component we started is still running (not exited, not a zombie)."""
        proc = self._procs.get(component)
        if proc is not None:
            return proc.poll() is None
        pid = self.pids.get(component, -1)
        return self._is_ours(component, pid)

    def _is_ours(self, component: str, pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            return False
        return cmdline.endswith("/" + component)

    def stop_component(
        self, component: str, sig: int = signal.SIGTERM, timeout: float = 20
    ) -> None:
        proc = self._procs.pop(component, None)
        if proc is not None:
            # Our own child: stop it through its handle, which cannot name another process.
            if proc.poll() is None:
                proc.send_signal(sig)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self.pids.pop(component, None)
            self.save()
            return
        pid = self.pids.get(component)
        if pid is None or not self._is_ours(component, pid):
            self.pids.pop(component, None)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                # Reap our own child (tests); for processes started by another `make up`, poll.
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    break
            except ChildProcessError:
                if not self._is_ours(component, pid):
                    break
            time.sleep(0.1)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        self.pids.pop(component, None)
        self.save()

    def stop(self) -> None:
        """Stop exactly the processes this cluster started, newest first."""
        for component in reversed(COMPONENTS):
            self.stop_component(component)

    def alive(self) -> bool:
        return all(self._running(c) for c in COMPONENTS)

    # ----- readiness -----------------------------------------------------------------------
    def request(self, path: str, token: str | None = None, timeout: float = 5) -> tuple[int, str]:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        req = urllib.request.Request(self.server + path)
        req.add_header("Authorization", f"Bearer {token or self.admin_token}")
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def wait_ready(self, timeout: float = 180.0, paths: list[str] | None = None) -> None:
        """``/readyz`` with credentials, then namespace ``default`` and its ServiceAccount.

        Fails fast when a started component has exited, with the end of its log.
        """
        deadline = time.monotonic() + timeout
        checks = paths or [
            "/readyz",
            "/api/v1/namespaces/default",
            "/api/v1/namespaces/default/serviceaccounts/default",
        ]
        for path in checks:
            while True:
                for component in [c for c in COMPONENTS if c in self.pids]:
                    if not self._running(component):
                        raise RuntimeError(
                            f"{component} exited; see {self.logdir / (component + '.log')}:\n"
                            + self.tail_log(component)
                        )
                try:
                    status, _ = self.request(path)
                    if status == 200:
                        break
                except (OSError, ssl.SSLError):
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"control plane not ready after {timeout}s waiting for {path}"
                    )
                time.sleep(0.25)

    def tail_log(self, component: str, lines: int = 30) -> str:
        path = self.logdir / f"{component}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def kubectl(
        self, *args: str, check: bool = True, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        assert self.bindir is not None
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        return subprocess.run(
            [str(self.bindir / "kubectl"), *args],
            check=check,
            text=True,
            capture_output=True,
            env=env,
            **kwargs,
        )


def cmd_up(workdir: Path) -> int:
    existing = LocalCluster.load(workdir)
    if existing is not None and existing.alive():
        try:
            existing.wait_ready(timeout=10)
            print(f"local control plane already running at {existing.server}", file=sys.stderr)
            print(f"export KUBECONFIG={existing.kubeconfig}")
            return 0
        except (TimeoutError, RuntimeError):
            existing.stop()
    elif existing is not None:
        existing.stop()
    started = time.monotonic()
    cluster = LocalCluster(workdir)
    cluster.start()
    print(
        f"local control plane ready at {cluster.server} in {time.monotonic() - started:.1f}s "
        f"(logs: {cluster.logdir})",
        file=sys.stderr,
    )
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


def cmd_down(workdir: Path) -> int:
    cluster = LocalCluster.load(workdir)
    if cluster is None:
        print("no local control plane recorded; nothing to stop", file=sys.stderr)
        return 0
    cluster.stop()
    cluster.state_file.unlink(missing_ok=True)
    print("local control plane stopped", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down", "status", "build"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state folder")
    args = parser.parse_args(argv)
    workdir: Path = args.dir.resolve()
    if args.action == "up":
        return cmd_up(workdir)
    if args.action == "down":
        return cmd_down(workdir)
    if args.action == "build":
        print(build_binaries())
        return 0
    cluster = LocalCluster.load(workdir)
    if cluster is None or not cluster.alive():
        print("not running")
        return 1
    print(f"running at {cluster.server}; export KUBECONFIG={cluster.kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
