"""A client-certificate user: every command works, and no copy of the private key outlives the
process.

The certificate is issued by the cluster's own signer (CertificateSigningRequest API) and bound
to the operator's ClusterRole plus the CLI's reads. The kubeconfig lives in a folder of its own
and names the certificate, key and CA by paths relative to that folder (kubectl resolves them
against the kubeconfig's folder, not the working directory); a second variant carries them
inline (``client-certificate-data``/``client-key-data``), which a TLS library can only load
from a file. Every process runs with ``TMPDIR`` set to a fresh folder and its working
directory elsewhere; afterwards that folder must be empty, and ``/tmp``, ``/dev/shm`` and the
working directory must hold no file with the key's bytes (PEM, DER or base64) other than the
originals the test wrote.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.cli import CLUSTER_COMMANDS, assert_works, nsbaseline
from tests.support.credentials import (
    CLI_ROLE,
    OPERATOR_ROLE,
    ClientCertificate,
    Context,
    ExecPlugin,
    admin_server,
    bind,
    cleanup,
    client_certificate,
    cluster_entry,
    ensure_roles,
    key_copies,
    kubeconfig,
    kubectl_whoami,
    private_folders_only,
    write_kubeconfig,
)
from tests.support.kube import Cluster, OperatorProcess, baseline_policy, wait_for

pytestmark = pytest.mark.e2e

VARIANTS = {"files-by-relative-path": False, "inline-data": True}


@pytest.fixture(scope="module")
def cert_user(cluster: Cluster) -> Iterator[ClientCertificate]:
    """One certificate user for the module, bound like the operator's ServiceAccount."""
    ensure_roles(cluster)
    user = f"e2e-cert-{uuid.uuid4().hex[:6]}"
    cert = client_certificate(cluster, user)
    bind(
        cluster,
        {"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"},
        [OPERATOR_ROLE, CLI_ROLE],
        user,
    )
    yield cert
    cleanup(cluster)


@dataclass(frozen=True)
class Layout:
    """Where a test keeps things: the kubeconfig's folder, a working folder, the originals."""

    kubeconfig: Path
    work: Path
    originals: tuple[Path, ...]


def _layout(cluster: Cluster, cert: ClientCertificate, root: Path, inline: bool) -> Layout:
    server = admin_server(cluster)
    home = root / "kube-home"
    work = root / "work"
    work.mkdir(parents=True)
    if inline:
        user = {
            "client-certificate-data": base64.b64encode(cert.cert_pem).decode(),
            "client-key-data": base64.b64encode(cert.key_pem).decode(),
        }
        entry = cluster_entry(server)
        originals: tuple[Path, ...] = ()
    else:
        creds = home / "credentials"
        creds.mkdir(parents=True)
        (creds / "user.crt").write_bytes(cert.cert_pem)
        (creds / "user.key").write_bytes(cert.key_pem)
        (creds / "user.key").chmod(0o600)
        (creds / "ca.crt").write_bytes(server.ca_pem)
        user = {
            "client-certificate": "credentials/user.crt",
            "client-key": "credentials/user.key",
        }
        entry = cluster_entry(server, ca_file="credentials/ca.crt")
        originals = (creds / "user.key",)
    path = write_kubeconfig(home / "config", kubeconfig({"cert": Context(entry, cert.user, user)}))
    return Layout(path, work, (*originals, path))


def _fresh_tmpdir(root: Path, name: str) -> Path:
    folder = root / "tmpdirs" / name
    folder.mkdir(parents=True)
    return folder


def _leftovers(cert: ClientCertificate, layout: Layout, tmpdir: Path, since: float) -> list[str]:
    """Everything a finished process left behind: files in its TMPDIR, copies of the key."""
    found = [f"left in TMPDIR: {p}" for p in tmpdir.rglob("*")]
    roots = [Path("/tmp"), Path("/dev/shm"), layout.work, tmpdir]
    copies = key_copies(cert.needles(), roots, since, exclude=layout.originals)
    return found + [f"copy of the key: {p}" for p in copies]


@pytest.mark.parametrize("inline", VARIANTS.values(), ids=VARIANTS.keys())
def test_cli_commands_log_in_with_a_client_certificate_and_leave_no_key_behind(
    cluster: Cluster, cert_user: ClientCertificate, tmp_path: Path, inline: bool
) -> None:
    layout = _layout(cluster, cert_user, tmp_path, inline)
    # kubectl resolves the relative paths against the kubeconfig's folder, from anywhere.
    assert kubectl_whoami(cluster, layout.kubeconfig, cwd=layout.work) == cert_user.user

    for command, args in CLUSTER_COMMANDS.items():
        tmpdir = _fresh_tmpdir(tmp_path, command)
        since = time.time() - 1
        proc = nsbaseline(
            *args,
            "--kubeconfig",
            str(layout.kubeconfig),
            env={"TMPDIR": str(tmpdir)},
            cwd=layout.work,
        )
        assert_works(command, proc)
        assert _leftovers(cert_user, layout, tmpdir, since) == [], command


@pytest.mark.parametrize("inline", VARIANTS.values(), ids=VARIANTS.keys())
def test_operator_logs_in_with_a_client_certificate_and_leaves_no_key_behind(
    cluster: Cluster,
    cert_user: ClientCertificate,
    tmp_path: Path,
    logdir: Path,
    clean_policies: None,
    inline: bool,
) -> None:
    layout = _layout(cluster, cert_user, tmp_path, inline)
    tmpdir = _fresh_tmpdir(tmp_path, "run")
    label = f"e2e.nsbaseline.io/cert-{uuid.uuid4().hex[:6]}"
    policy = "cert-login"
    ns = cluster.namespace("cert", {label: "yes"})
    cluster.apply(baseline_policy(policy, namespaceSelector={"matchLabels": {label: "yes"}}))
    since = time.time() - 1
    # Through KUBECONFIG this time (the CLI test above uses --kubeconfig).
    op = OperatorProcess(
        cluster,
        logdir,
        env={"KUBECONFIG": str(layout.kubeconfig), "TMPDIR": str(tmpdir)},
        cwd=layout.work,
    )
    try:
        op.start()
        dns = f"nsbaseline-{policy}-allow-dns"
        wait_for(lambda: dns in cluster.netpols(ns), 120, what="baseline created")
        cluster.kubectl("delete", "networkpolicy", dns, "-n", ns)
        wait_for(lambda: dns in cluster.netpols(ns), 120, what="deleted allow-dns repaired")
        # While it runs, key material may only sit in a private folder of the process.
        assert private_folders_only(tmpdir, cert_user.needles()) == []
        assert op.proc is not None and op.proc.poll() is None, op.tail()
    finally:
        op.stop()
    assert op.proc is not None and op.proc.returncode == 0, op.tail()
    assert _leftovers(cert_user, layout, tmpdir, since) == []


def _key_files(folder: Path, needles: list[bytes]) -> int:
    """How many files under ``folder`` hold the key right now."""
    count = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and any(n in path.read_bytes() for n in needles):
                count += 1
        except OSError:
            continue  # removed while we looked: what should happen
    return count


def test_operator_with_certificates_from_an_exec_plugin_keeps_no_key_across_relogins(
    cluster: Cluster,
    cert_user: ClientCertificate,
    tmp_path: Path,
    logdir: Path,
    clean_policies: None,
) -> None:
    """An exec plugin may hand out a client certificate and key (with an expiry) instead of a
    token: the key exists only in memory, so each login writes it somewhere for the TLS library.
    Across several re-logins at most one copy may exist at any moment, in a private folder,
    and none after exit."""
    creds = tmp_path / "plugin-credentials"
    creds.mkdir()
    crt, key = creds / "user.crt", creds / "user.key"
    crt.write_bytes(cert_user.cert_pem)
    key.write_bytes(cert_user.key_pem)
    key.chmod(0o600)
    ttl = 12.0
    plugin = ExecPlugin(cluster, tmp_path / "plugin", None, ttl=ttl, client_cert=(crt, key))
    entry = cluster_entry(admin_server(cluster))
    path = write_kubeconfig(
        tmp_path / "kube" / "config", kubeconfig({"x": Context(entry, "exec-cert", plugin.user)})
    )
    assert kubectl_whoami(cluster, path) == cert_user.user
    layout = Layout(path, tmp_path / "work", (key, path))
    layout.work.mkdir()
    tmpdir = _fresh_tmpdir(tmp_path, "run")
    needles = cert_user.needles()

    label = f"e2e.nsbaseline.io/exec-cert-{uuid.uuid4().hex[:6]}"
    policy = "exec-cert"
    ns = cluster.namespace("xc", {label: "yes"})
    cluster.apply(baseline_policy(policy, namespaceSelector={"matchLabels": {label: "yes"}}))
    since = time.time() - 1
    op = OperatorProcess(
        cluster, logdir, "--kubeconfig", str(path), env={"TMPDIR": str(tmpdir)}, cwd=layout.work
    )
    try:
        op.start()
        dns = f"nsbaseline-{policy}-allow-dns"
        wait_for(lambda: dns in cluster.netpols(ns), 120, what="baseline created")
        runs = plugin.invocations()
        held: list[int] = []
        problems: list[str] = []
        deadline = time.monotonic() + 2 * ttl + 4
        while time.monotonic() < deadline:  # watch TMPDIR across expiries
            held.append(_key_files(tmpdir, needles))
            problems += private_folders_only(tmpdir, needles)
            time.sleep(0.5)
        cluster.kubectl("delete", "networkpolicy", dns, "-n", ns)
        wait_for(lambda: dns in cluster.netpols(ns), 120, what="repaired after certificate expiry")
        assert max(held) <= 1, f"copies of the key at once: {held}"
        assert problems == []
        assert op.proc is not None and op.proc.poll() is None, op.tail()
        assert plugin.invocations() > runs, "the plugin was not run again after expiry"
    finally:
        op.stop()
    assert op.proc is not None and op.proc.returncode == 0, op.tail()
    assert _leftovers(cert_user, layout, tmpdir, since) == []
