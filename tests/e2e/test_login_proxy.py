"""Reaching the API server through an HTTP CONNECT proxy (``proxy-url``, ``HTTPS_PROXY``,
``NO_PROXY``), and through one that answers some requests with 429 + ``Retry-After``.

The proxied kubeconfigs name the server ``https://kubernetes.default.svc``: that name is in the
API server's certificate but resolves nowhere outside a cluster, and only the test proxy routes
it (to the real address). So every request that succeeds went through the proxy — watches and
writes alike — and the proxy's CONNECT counter shows it.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.support.cli import assert_works, describe, nsbaseline, status_rows
from tests.support.credentials import (
    Context,
    Server,
    admin_server,
    cluster_entry,
    kubeconfig,
    kubectl_whoami,
    login_objects,
    mint_bound_token,
    service_account,
    write_kubeconfig,
)
from tests.support.kube import Cluster, OperatorProcess, baseline_policy, wait_for
from tests.support.proxy import ConnectProxy, Interceptor, ProxyCA

pytestmark = pytest.mark.e2e

VIRTUAL_HOST = "kubernetes.default.svc"
VIRTUAL = (VIRTUAL_HOST, 443)
VIRTUAL_URL = f"https://{VIRTUAL_HOST}"
TARGET = f"{VIRTUAL_HOST}:443"


def _routes(server: Server) -> dict[tuple[str, int], tuple[str, int]]:
    return {VIRTUAL: (server.host, server.port)}


def _token_user(cluster: Cluster, prefix: str) -> tuple[str, dict[str, str]]:
    """A ServiceAccount with the operator's and the CLI's rights; (username, kubeconfig user)."""
    sa = service_account(cluster, prefix)
    return sa.username, {"token": mint_bound_token(cluster, sa).token}


def _pieces(cluster: Cluster, ns: str, policy: str) -> set[str]:
    return {
        o["metadata"]["labels"]["nsbaseline.io/piece"]
        for o in cluster.netpols(ns).values()
        if o["metadata"].get("labels", {}).get("nsbaseline.io/policy") == policy
    }


def _converge_and_repair(cluster: Cluster, policy: str, label: str) -> None:
    """Two namespaces converge, a deleted object and an edited one are repaired."""
    wanted = {"allow-dns", "default-deny"}
    first = cluster.namespace("px", {label: "yes"})
    wait_for(lambda: _pieces(cluster, first, policy) == wanted, 120, what="baseline created")
    dns = f"nsbaseline-{policy}-allow-dns"
    deny = f"nsbaseline-{policy}-default-deny"
    cluster.kubectl("delete", "networkpolicy", dns, "-n", first)
    wait_for(lambda: dns in cluster.netpols(first), 120, what="deleted allow-dns repaired")
    cluster.kubectl(
        "patch",
        "networkpolicy",
        deny,
        "-n",
        first,
        "--type=merge",
        "-p",
        '{"spec":{"podSelector":{"matchLabels":{"tampered":"yes"}}}}',
    )
    wait_for(
        lambda: cluster.netpols(first)[deny]["spec"]["podSelector"] == {},
        120,
        what="edited default-deny reverted",
    )
    second = cluster.namespace("px", {label: "yes"})
    wait_for(lambda: _pieces(cluster, second, policy) == wanted, 120, what="new namespace")


def test_operator_converges_and_repairs_through_the_proxy_named_by_proxy_url(
    cluster: Cluster, tmp_path: Path, logdir: Path, clean_policies: None
) -> None:
    server = admin_server(cluster)
    with login_objects(cluster), ConnectProxy(_routes(server)) as proxy:
        username, user = _token_user(cluster, "proxy-url")
        path = write_kubeconfig(
            tmp_path / "config",
            kubeconfig(
                {
                    "px": Context(
                        cluster_entry(server, url=VIRTUAL_URL, proxy_url=proxy.url), "px", user
                    )
                }
            ),
        )
        assert kubectl_whoami(cluster, path) == username
        assert proxy.connects[TARGET] >= 1, "kubectl did not use the proxy"

        label = f"e2e.nsbaseline.io/proxy-{uuid.uuid4().hex[:6]}"
        policy = "via-proxy"
        cluster.apply(baseline_policy(policy, namespaceSelector={"matchLabels": {label: "yes"}}))
        before = proxy.connects[TARGET]
        op = OperatorProcess(cluster, logdir, env={"KUBECONFIG": str(path)})
        try:
            op.start()
            _converge_and_repair(cluster, policy, label)
            # Watches (Kopf's) and writes (ours) both needed the proxy: there is no other way
            # to kubernetes.default.svc. Several tunnels stay open: the watch streams.
            assert proxy.connects[TARGET] - before >= 2, proxy.connects
            assert proxy.open_tunnels >= 1
            assert not proxy.refused, f"asked the proxy for other targets: {proxy.refused}"
            assert op.proc is not None and op.proc.poll() is None, op.tail()
        finally:
            op.stop()

        before = proxy.connects[TARGET]
        rows = status_rows(nsbaseline("status", "--kubeconfig", str(path)))
        assert rows and set(rows.values()) <= {"compliant"}, rows
        assert proxy.connects[TARGET] > before


def test_https_proxy_from_the_environment_is_used_when_the_kubeconfig_names_none(
    cluster: Cluster, tmp_path: Path
) -> None:
    server = admin_server(cluster)
    with login_objects(cluster), ConnectProxy(_routes(server)) as proxy:
        username, user = _token_user(cluster, "https-proxy")
        path = write_kubeconfig(
            tmp_path / "config",
            kubeconfig({"px": Context(cluster_entry(server, url=VIRTUAL_URL), "px", user)}),
        )
        env = {"HTTPS_PROXY": proxy.url, "https_proxy": proxy.url}
        assert kubectl_whoami(cluster, path, env=env) == username
        before = proxy.connects[TARGET]
        proc = nsbaseline("status", "--kubeconfig", str(path), env=env)
        assert_works("status", proc)
        assert proxy.connects[TARGET] > before, describe(proc)


def test_no_proxy_from_the_environment_bypasses_the_proxy(cluster: Cluster, tmp_path: Path) -> None:
    """HTTPS_PROXY names a proxy that refuses everything; NO_PROXY names the server."""
    server = admin_server(cluster)
    with login_objects(cluster), ConnectProxy({}) as refusing:
        username, user = _token_user(cluster, "no-proxy")
        path = write_kubeconfig(
            tmp_path / "config", kubeconfig({"direct": Context(cluster_entry(server), "d", user)})
        )
        env = {
            "HTTPS_PROXY": refusing.url,
            "https_proxy": refusing.url,
            "NO_PROXY": f"{server.host},localhost",
            "no_proxy": f"{server.host},localhost",
        }
        assert kubectl_whoami(cluster, path, env=env) == username
        proc = nsbaseline("status", "--kubeconfig", str(path), env=env)
        assert_works("status", proc)
        assert refusing.total == 0 and not refusing.refused, refusing.refused


def test_proxy_url_in_the_kubeconfig_wins_over_https_proxy(
    cluster: Cluster, tmp_path: Path
) -> None:
    """As with kubectl: the kubeconfig's proxy-url is used even when HTTPS_PROXY is set."""
    server = admin_server(cluster)
    with (
        login_objects(cluster),
        ConnectProxy(_routes(server)) as proxy,
        ConnectProxy({}) as refusing,
    ):
        username, user = _token_user(cluster, "proxy-wins")
        path = write_kubeconfig(
            tmp_path / "config",
            kubeconfig(
                {
                    "px": Context(
                        cluster_entry(server, url=VIRTUAL_URL, proxy_url=proxy.url), "px", user
                    )
                }
            ),
        )
        env = {"HTTPS_PROXY": refusing.url, "https_proxy": refusing.url}
        assert kubectl_whoami(cluster, path, env=env) == username
        before = proxy.connects[TARGET]
        proc = nsbaseline("status", "--kubeconfig", str(path), env=env)
        assert_works("status", proc)
        assert proxy.connects[TARGET] > before
        assert not refusing.refused, refusing.refused


def _intercepting(cluster: Cluster, status: int) -> tuple[ConnectProxy, Interceptor, str]:
    """A TLS-terminating proxy injecting ``status`` on every other connection, and the CA
    (base64) a kubeconfig must trust to talk through it."""
    import base64

    server = admin_server(cluster)
    ca = ProxyCA([VIRTUAL_HOST])
    interceptor = Interceptor(
        ca, upstream_ca=server.ca_pem, upstream_name=server.host, status=status, retry_after=1
    )
    return (
        ConnectProxy(_routes(server), interceptor),
        interceptor,
        base64.b64encode(ca.ca_pem).decode(),
    )


def test_operator_converges_through_a_proxy_answering_429_with_retry_after(
    cluster: Cluster, tmp_path: Path, logdir: Path, clean_policies: None
) -> None:
    proxy, interceptor, ca_data = _intercepting(cluster, 429)
    with login_objects(cluster), proxy:
        username, user = _token_user(cluster, "throttled")
        entry = cluster_entry(
            admin_server(cluster), url=VIRTUAL_URL, ca_data=ca_data, proxy_url=proxy.url
        )
        path = write_kubeconfig(tmp_path / "config", kubeconfig({"t": Context(entry, "t", user)}))
        # kubectl (client-go) waits Retry-After and tries again: the fixture is well-formed.
        assert kubectl_whoami(cluster, path) == username
        assert interceptor.injected >= 1

        label = f"e2e.nsbaseline.io/throttled-{uuid.uuid4().hex[:6]}"
        policy = "throttled"
        cluster.apply(baseline_policy(policy, namespaceSelector={"matchLabels": {label: "yes"}}))
        before = interceptor.injected
        op = OperatorProcess(cluster, logdir, env={"KUBECONFIG": str(path)})
        try:
            op.start()
            _converge_and_repair(cluster, policy, label)
            assert interceptor.injected > before, "the operator never met a 429"
            assert op.proc is not None and op.proc.poll() is None, op.tail()
        finally:
            op.stop()


@pytest.mark.parametrize("status", [429, 503])
def test_status_retries_429_and_503_with_retry_after(
    cluster: Cluster, tmp_path: Path, status: int
) -> None:
    """The very first request of ``nsbaseline status`` is refused; it must wait and retry."""
    proxy, interceptor, ca_data = _intercepting(cluster, status)
    with login_objects(cluster), proxy:
        _, user = _token_user(cluster, f"retry-{status}")
        entry = cluster_entry(
            admin_server(cluster), url=VIRTUAL_URL, ca_data=ca_data, proxy_url=proxy.url
        )
        path = write_kubeconfig(tmp_path / "config", kubeconfig({"t": Context(entry, "t", user)}))
        proc = nsbaseline("status", "--kubeconfig", str(path))
        assert_works("status", proc)
        assert interceptor.injected >= 1, describe(proc)
        assert interceptor.relayed >= 1
