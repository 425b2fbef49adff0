"""Identities and kubeconfigs as people really have them, for the login tests.

Each helper makes one kind of user exist on the real API server and hands back a kubeconfig
entry for it:

- :func:`service_account` — a fresh ServiceAccount bound to the operator's ClusterRole (from
  ``deploy/base``) plus :data:`CLI_ROLE` (what the CLI reads beyond it: pods, for explain/lint);
- :func:`mint_bound_token` / :func:`revoke` — TokenRequest tokens bound to a Secret of their
  own, so a test can revoke one at a moment of its choosing (the API server refuses bound
  tokens once their Secret is gone);
- :class:`ExecPlugin` — an ``exec:`` user backed by ``tests/support/execplugin.py``, with
  :class:`Revoker` making its advertised expiry real;
- :func:`client_certificate` — a client certificate issued by the cluster's own signer through
  the CertificateSigningRequest API (works on the local control plane and on any cluster whose
  ``kubernetes.io/kube-apiserver-client`` signer is enabled, such as kind);
- :func:`kubeconfig` / :func:`write_kubeconfig` — kubeconfig documents with several contexts.

Every kubeconfig a test builds is first checked with kubectl (:func:`kubectl_whoami`), so that
when the operator fails with one, the operator is at fault, not the fixture.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.deploy import install_base
from tests.support.kube import REPO, Cluster, wait_for

#: The operator's ClusterRole, from deploy/base/rbac.yaml.
OPERATOR_ROLE = "nsbaseline"
#: What the CLI reads beyond the operator's ClusterRole: ``explain`` and ``lint --cluster`` list
#: pods. A test-only role; the shipped deploy/ grants the operator no pods.
CLI_ROLE = "nsbaseline-e2e-cli-reader"
#: Marks cluster-scoped objects (bindings, CSRs) made here, for cleanup.
OBJECT_LABEL = "e2e.nsbaseline.io/login"
EXEC_PLUGIN = REPO / "tests" / "support" / "execplugin.py"


# ----- the admin's view of the server --------------------------------------------------------
@dataclass(frozen=True)
class Server:
    """Where the API server is and how to trust it, from the admin kubeconfig."""

    url: str
    ca_data: str  # base64 PEM, as in certificate-authority-data
    #: Extra fields of the admin's cluster entry (tls-server-name...), kept as they are.
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1].rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        rest = self.url.split("://", 1)[1].split("/", 1)[0]
        return int(rest.rsplit(":", 1)[1]) if ":" in rest else 443

    @property
    def ca_pem(self) -> bytes:
        return base64.b64decode(self.ca_data)


def admin_server(cluster: Cluster) -> Server:
    """The server of the admin kubeconfig's current context."""
    doc = yaml.safe_load(cluster.kubeconfig.read_text())
    ctx_name = doc.get("current-context") or doc["contexts"][0]["name"]
    ctx = next(c for c in doc["contexts"] if c["name"] == ctx_name)["context"]
    entry = dict(next(c for c in doc["clusters"] if c["name"] == ctx["cluster"])["cluster"])
    ca_data = entry.pop("certificate-authority-data", "")
    ca_file = entry.pop("certificate-authority", "")
    if not ca_data and ca_file:
        path = Path(ca_file)
        if not path.is_absolute():
            path = cluster.kubeconfig.parent / path
        ca_data = base64.b64encode(path.read_bytes()).decode()
    url = entry.pop("server")
    return Server(url=url, ca_data=ca_data, extra=entry)


# ----- kubeconfig documents ------------------------------------------------------------------
def cluster_entry(
    server: Server,
    *,
    url: str | None = None,
    ca_data: str | None = None,
    ca_file: str | None = None,
    proxy_url: str | None = None,
) -> dict[str, Any]:
    """A kubeconfig ``cluster:`` entry; the admin's server and CA unless overridden."""
    entry: dict[str, Any] = {"server": url or server.url, **server.extra}
    if ca_file is not None:
        entry["certificate-authority"] = ca_file
    else:
        entry["certificate-authority-data"] = ca_data or server.ca_data
    if proxy_url is not None:
        entry["proxy-url"] = proxy_url
    return entry


@dataclass(frozen=True)
class Context:
    """One context of a kubeconfig: its cluster entry and its named user."""

    cluster: Mapping[str, Any]
    user_name: str
    user: Mapping[str, Any]


def kubeconfig(contexts: Mapping[str, Context], current: str | None = None) -> dict[str, Any]:
    """A kubeconfig document with one cluster entry per context (named after the context)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": dict(c.cluster)} for name, c in contexts.items()],
        "users": [{"name": c.user_name, "user": dict(c.user)} for c in contexts.values()],
        "contexts": [
            {"name": name, "context": {"cluster": name, "user": c.user_name}}
            for name, c in contexts.items()
        ],
        "current-context": current if current is not None else next(iter(contexts)),
    }


def write_kubeconfig(path: Path, doc: Mapping[str, Any]) -> Path:
    """Write ``doc`` as YAML, private (0600), creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(doc), sort_keys=False))
    path.chmod(0o600)
    return path


def kubectl_whoami(
    cluster: Cluster,
    kubeconfig_path: Path | None,
    context: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> str:
    """The username the API server sees for this kubeconfig, through kubectl (proves it valid).

    ``kubeconfig_path`` None: whatever ``env`` says (``KUBECONFIG``), as a user would run it.
    """
    args = [cluster.kubectl_bin]
    args += ["--kubeconfig", str(kubeconfig_path)] if kubeconfig_path is not None else []
    args += ["--context", context] if context else []
    args += ["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]
    base = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    proc = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, **(env or {})},
        cwd=cwd,
    )
    if proc.returncode != 0:
        raise AssertionError(f"kubectl rejects {kubeconfig_path}: {proc.stderr.strip()}")
    return proc.stdout.strip()


# ----- ServiceAccount identities --------------------------------------------------------------
def ensure_roles(cluster: Cluster) -> None:
    """deploy/base (the operator's ClusterRole) and the test-only CLI reader role exist."""
    install_base(cluster)
    cluster.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": CLI_ROLE, "labels": {OBJECT_LABEL: "true"}},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
        }
    )


def bind(cluster: Cluster, subject: Mapping[str, str], roles: Iterable[str], tag: str) -> None:
    """ClusterRoleBindings of ``roles`` to ``subject``, labelled for :func:`cleanup`."""
    for role in roles:
        cluster.apply(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": f"e2e-{tag}-{role}", "labels": {OBJECT_LABEL: "true"}},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role,
                },
                "subjects": [dict(subject)],
            }
        )


def cleanup(cluster: Cluster) -> None:
    """Remove the cluster-scoped objects the helpers here made (namespaces go with settle)."""
    for kind in ("clusterrolebindings", "certificatesigningrequests"):
        cluster.kubectl("delete", kind, "-l", f"{OBJECT_LABEL}=true", "--ignore-not-found")


@dataclass(frozen=True)
class ServiceAccount:
    """A ServiceAccount in a namespace of its own (a test namespace, removed by ``settle``)."""

    namespace: str
    name: str

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}"


def service_account(
    cluster: Cluster, prefix: str, roles: Sequence[str] = (OPERATOR_ROLE, CLI_ROLE)
) -> ServiceAccount:
    """A fresh ServiceAccount bound to ``roles`` (default: what the operator and CLI need)."""
    ensure_roles(cluster)
    namespace = cluster.namespace(prefix)
    sa = ServiceAccount(namespace, prefix)
    cluster.kubectl("create", "serviceaccount", sa.name, "-n", namespace)
    bind(
        cluster,
        {"kind": "ServiceAccount", "name": sa.name, "namespace": namespace},
        roles,
        namespace,
    )
    return sa


@dataclass(frozen=True)
class BoundToken:
    """A TokenRequest token that lives exactly as long as its Secret."""

    token: str
    namespace: str
    secret: str


def mint_bound_token(cluster: Cluster, sa: ServiceAccount, secret: str | None = None) -> BoundToken:
    """A 10-minute token for ``sa`` bound to a new Secret (delete it to revoke the token)."""
    secret = secret or f"bound-{uuid.uuid4().hex[:8]}"
    uid = cluster.kubectl(
        "create",
        "secret",
        "generic",
        secret,
        "-n",
        sa.namespace,
        "--from-literal=purpose=binds-an-e2e-token",
        "-o",
        "jsonpath={.metadata.uid}",
    ).stdout.strip()
    token = cluster.kubectl(
        "create",
        "token",
        sa.name,
        "-n",
        sa.namespace,
        "--bound-object-kind=Secret",
        f"--bound-object-name={secret}",
        f"--bound-object-uid={uid}",
        "--duration=10m",
    ).stdout.strip()
    return BoundToken(token, sa.namespace, secret)


def token_works(cluster: Cluster, token: str, tmp: Path) -> bool:
    """Whether the API server still accepts ``token`` (False on 401)."""
    path = write_kubeconfig(
        tmp / f"probe-{uuid.uuid4().hex[:8]}.kubeconfig",
        kubeconfig(
            {"probe": Context(cluster_entry(admin_server(cluster)), "probe", {"token": token})}
        ),
    )
    try:
        kubectl_whoami(cluster, path)
        return True
    except AssertionError as exc:
        if "Unauthorized" in str(exc) or "401" in str(exc):
            return False
        raise
    finally:
        path.unlink()


def revoke(cluster: Cluster, token: BoundToken, tmp: Path, wait: bool = True) -> None:
    """Delete the token's Secret and (``wait``) until the API server refuses the token.

    The API server caches successful token authentications for up to 10 s, so revocation is
    not instant; waiting makes "the old token is dead" a fact when the test goes on.
    """
    cluster.kubectl("delete", "secret", token.secret, "-n", token.namespace, "--ignore-not-found")
    if wait:
        wait_for(
            lambda: not token_works(cluster, token.token, tmp),
            60,
            interval=1,
            what=f"token bound to {token.namespace}/{token.secret} refused",
        )


# ----- exec plugin ---------------------------------------------------------------------------
@dataclass
class ExecPlugin:
    """An ``exec:`` kubeconfig user backed by :mod:`tests.support.execplugin`.

    ``command`` is a small executable wrapper (the way ``aws``/``gke-gcloud-auth-plugin`` is an
    executable on the PATH); the plugin's settings are visible as ``args`` in the kubeconfig.
    """

    cluster: Cluster
    folder: Path
    sa: ServiceAccount | None
    ttl: float = 8.0
    api_version: str = "client.authentication.k8s.io/v1"
    fail: str = ""
    #: Hand out this certificate and key (PEM files) instead of minting tokens.
    client_cert: tuple[Path, Path] | None = None

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.state.mkdir(mode=0o700, exist_ok=True)
        self.command.write_text(
            f"#!/bin/sh\nexec '{sys.executable}' '{EXEC_PLUGIN}' \"$@\"\n", encoding="utf-8"
        )
        self.command.chmod(0o755)

    @property
    def state(self) -> Path:
        return self.folder / "state"

    @property
    def command(self) -> Path:
        return self.folder / "nsbaseline-e2e-get-token"

    @property
    def user(self) -> dict[str, Any]:
        """The kubeconfig ``user:`` entry."""
        args = ["--state", str(self.state), "--ttl", str(self.ttl)]
        args += ["--api-version", self.api_version]
        if self.fail:
            args += ["--fail", self.fail]
        elif self.client_cert is not None:
            args += ["--client-cert", str(self.client_cert[0])]
            args += ["--client-key", str(self.client_cert[1])]
        else:
            assert self.sa is not None
            args += [
                "--kubectl",
                self.cluster.kubectl_bin,
                "--admin-kubeconfig",
                str(self.cluster.kubeconfig),
                "--service-account",
                f"{self.sa.namespace}/{self.sa.name}",
                "--secret-prefix",
                f"exec-{self.sa.name}",
            ]
        exec_: dict[str, Any] = {
            "apiVersion": self.api_version,
            "command": str(self.command),
            "args": args,
            "provideClusterInfo": False,
        }
        if self.api_version.endswith("/v1"):
            exec_["interactiveMode"] = "Never"  # required for v1; IfAvailable is the default
        return {"exec": exec_}

    def invocations(self) -> int:
        counter = self.state / "count"
        return int(counter.read_text() or 0) if counter.exists() else 0

    def minted(self) -> list[dict[str, Any]]:
        path = self.state / "minted.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Revoker:
    """Deletes each exec-plugin token's Secret once its advertised expiry (plus ``grace``) has
    passed, in a background thread: after that, a client that did not run the plugin again
    gets 401 from the API server (within its 10 s authentication cache)."""

    def __init__(self, plugin: ExecPlugin, grace: float = 2.0, interval: float = 1.0) -> None:
        self.plugin = plugin
        self.grace = grace
        self.interval = interval
        self.revoked: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="revoker", daemon=True)

    def __enter__(self) -> Revoker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            now = time.time()
            for record in self.plugin.minted():
                if record["secret"] in self.revoked or record["expires"] + self.grace > now:
                    continue
                assert self.plugin.sa is not None
                proc = self.plugin.cluster.kubectl(
                    "delete",
                    "secret",
                    record["secret"],
                    "-n",
                    self.plugin.sa.namespace,
                    "--ignore-not-found",
                    "--wait=false",
                    check=False,
                )
                if proc.returncode == 0:
                    self.revoked.append(record["secret"])
                else:
                    self.errors.append(proc.stderr.strip())


# ----- client certificates -------------------------------------------------------------------
@dataclass(frozen=True)
class ClientCertificate:
    """A client certificate and its private key, PEM."""

    user: str
    cert_pem: bytes
    key_pem: bytes

    def needles(self) -> list[bytes]:
        """Byte strings that identify a copy of the key: a stretch of its PEM body, of its
        DER, and of the base64 of the whole PEM (as ``client-key-data`` carries it)."""
        from cryptography.hazmat.primitives import serialization

        body = b"".join(self.key_pem.strip().splitlines()[1:-1])
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        traditional = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        # A stretch from the middle of each encoding: the private numbers, not the header.
        return [
            body[200:248],
            der[300:332],
            traditional[300:332],
            base64.b64encode(self.key_pem)[200:248],
        ]


def client_certificate(
    cluster: Cluster, user: str, groups: Sequence[str] = (), expiration: int = 3600
) -> ClientCertificate:
    """A certificate for ``user`` signed by the cluster's client CA (CertificateSigningRequest
    API, signer ``kubernetes.io/kube-apiserver-client``), with a fresh RSA key.

    Skips the test on clusters that do not issue such certificates (managed control planes).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, user)]
    subject += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(subject))
        .sign(key, hashes.SHA256())
    )
    name = f"e2e-{user}"[:250]
    cluster.apply(
        {
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": name, "labels": {OBJECT_LABEL: "true"}},
            "spec": {
                "request": base64.b64encode(csr.public_bytes(serialization.Encoding.PEM)).decode(),
                "signerName": "kubernetes.io/kube-apiserver-client",
                "usages": ["client auth"],
                "expirationSeconds": expiration,
            },
        }
    )
    cluster.kubectl("certificate", "approve", name)

    def issued() -> str:
        body = cluster.get("csr", name) or {}
        return str((body.get("status") or {}).get("certificate") or "")

    try:
        cert_b64 = wait_for(issued, 60, interval=0.5, what=f"certificate for CSR {name}")
    except AssertionError:
        pytest.skip("this cluster does not issue kubernetes.io/kube-apiserver-client certificates")
    finally:
        cluster.kubectl("delete", "csr", name, "--ignore-not-found")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return ClientCertificate(user, base64.b64decode(cert_b64), key_pem)


# ----- where key material may have been left --------------------------------------------------
def key_copies(
    needles: Sequence[bytes],
    roots: Iterable[Path],
    since: float,
    exclude: Iterable[Path] = (),
    max_size: int = 8 * 1024 * 1024,
) -> list[Path]:
    """Regular files under ``roots`` changed since ``since`` (epoch) holding any ``needle``.

    Only recent files are read (a copy made by the process under test is recent), so scanning
    a busy shared ``/tmp`` stays cheap; ``exclude`` names the originals the test wrote itself.
    """
    skip = {p.resolve() for p in exclude}
    found: list[Path] = []
    for root in roots:
        if not root.exists():
            continue
        for folder, dirs, files in os.walk(root, onerror=lambda _: None):
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
            for name in files:
                path = Path(folder) / name
                try:
                    info = path.lstat()
                except OSError:
                    continue
                if not stat.S_ISREG(info.st_mode) or info.st_size > max_size:
                    continue
                if max(info.st_mtime, info.st_ctime) < since or path.resolve() in skip:
                    continue
                with contextlib.suppress(OSError):
                    data = path.read_bytes()
                    if any(n in data for n in needles):
                        found.append(path)
    return found


def private_folders_only(root: Path, needles: Sequence[bytes]) -> list[str]:
    """Problems with key material under ``root`` while a process runs: each file holding the
    key must be 0600 (or stricter) inside a folder of mode 0700 of its own."""
    problems = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if not any(n in data for n in needles):
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        parent = stat.S_IMODE(path.parent.stat().st_mode)
        if mode & 0o077 or parent != 0o700 or path.parent == root:
            problems.append(f"{path} (file {mode:o}, folder {parent:o})")
    return problems


@contextlib.contextmanager
def login_objects(cluster: Cluster) -> Iterator[None]:
    """Removes the cluster-scoped bindings and CSRs a test made through these helpers."""
    try:
        yield
    finally:
        cleanup(cluster)
