"""A ``tokenFile:`` user whose file is rewritten while the operator runs, as a projected
ServiceAccount token is: the operator keeps converging and repairing on the new token after
the old one is revoked on the API server."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.support.credentials import (
    BoundToken,
    Context,
    admin_server,
    cluster_entry,
    kubeconfig,
    kubectl_whoami,
    login_objects,
    mint_bound_token,
    revoke,
    service_account,
    write_kubeconfig,
)
from tests.support.kube import Cluster, OperatorProcess, baseline_policy, wait_for

pytestmark = pytest.mark.e2e


def _write_token(path: Path, token: BoundToken) -> None:
    """Replace the file atomically, as the kubelet swaps a projected token."""
    fresh = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}")
    fresh.write_text(token.token)
    fresh.chmod(0o600)
    os.replace(fresh, path)


def _wait_converged(cluster: Cluster, ns: str, name: str, what: str) -> None:
    wait_for(lambda: name in cluster.netpols(ns), 120, what=what)


def test_operator_keeps_working_while_its_token_file_is_rotated(
    cluster: Cluster, tmp_path: Path, logdir: Path, clean_policies: None
) -> None:
    with login_objects(cluster):
        sa = service_account(cluster, "tokenfile")
        home = tmp_path / "kube-home"
        home.mkdir()
        token_path = home / "token"
        current = mint_bound_token(cluster, sa)
        _write_token(token_path, current)
        # Relative to the kubeconfig's folder, like the other paths in a kubeconfig.
        path = write_kubeconfig(
            home / "config",
            kubeconfig(
                {
                    "tf": Context(
                        cluster_entry(admin_server(cluster)),
                        "token-file-user",
                        {"tokenFile": "token"},
                    )
                }
            ),
        )
        assert kubectl_whoami(cluster, path, cwd=tmp_path) == sa.username

        label = f"e2e.nsbaseline.io/tokenfile-{uuid.uuid4().hex[:6]}"
        policy = "token-file"
        ns = cluster.namespace("tf", {label: "yes"})
        cluster.apply(baseline_policy(policy, namespaceSelector={"matchLabels": {label: "yes"}}))
        dns = f"nsbaseline-{policy}-allow-dns"
        deny = f"nsbaseline-{policy}-default-deny"

        op = OperatorProcess(cluster, logdir, "--kubeconfig", str(path), cwd=tmp_path)
        try:
            op.start()
            wait_for(lambda: dns in cluster.netpols(ns), 120, what="baseline created")
            for round_ in (1, 2):
                fresh = mint_bound_token(cluster, sa)
                _write_token(token_path, fresh)
                revoke(cluster, current, tmp_path)  # returns once the API server refuses it
                current = fresh
                assert kubectl_whoami(cluster, path, cwd=tmp_path) == sa.username

                cluster.kubectl("delete", "networkpolicy", dns, "-n", ns)
                wait_for(
                    lambda: dns in cluster.netpols(ns),
                    120,
                    what=f"round {round_}: deleted allow-dns repaired on the rotated token",
                )
                cluster.kubectl(
                    "patch",
                    "networkpolicy",
                    deny,
                    "-n",
                    ns,
                    "--type=merge",
                    "-p",
                    '{"spec":{"podSelector":{"matchLabels":{"tampered":"yes"}}}}',
                )
                wait_for(
                    lambda: cluster.netpols(ns)[deny]["spec"]["podSelector"] == {},
                    120,
                    what=f"round {round_}: edited default-deny reverted",
                )
                new_ns = cluster.namespace("tf", {label: "yes"})
                _wait_converged(cluster, new_ns, dns, f"round {round_}: a new namespace converged")
            assert op.proc is not None and op.proc.poll() is None, op.tail()
        finally:
            op.stop()
