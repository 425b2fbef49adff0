"""Logging in through a kubeconfig ``exec:`` plugin, the way EKS, GKE and AKS kubeconfigs do.

The plugin (tests/support/execplugin.py) hands out ServiceAccount tokens that it says expire a
few seconds later; a :class:`Revoker` then really revokes each one on the API server (by
deleting the Secret it is bound to), so a client that keeps an old token instead of running the
plugin again is refused with 401. kubectl is run on every kubeconfig first: it supports all of
this, so a failure below is nsbaseline's.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.support.cli import (
    CLUSTER_COMMANDS,
    WITH_RUN,
    assert_mentions,
    assert_works,
    nsbaseline,
    one_line_error,
)
from tests.support.credentials import (
    Context,
    ExecPlugin,
    Revoker,
    admin_server,
    cluster_entry,
    kubeconfig,
    kubectl_whoami,
    login_objects,
    service_account,
    token_works,
    write_kubeconfig,
)
from tests.support.kube import Cluster, OperatorProcess, baseline_policy, free_port, wait_for

pytestmark = pytest.mark.e2e

V1 = "client.authentication.k8s.io/v1"
V1BETA1 = "client.authentication.k8s.io/v1beta1"
#: Advertised token lifetime: short enough that the operator outlives several tokens, long
#: enough that one plugin run (two kubectl calls on a busy machine) is not most of it.
TTL = 12.0


def _exec_kubeconfig(cluster: Cluster, plugin: ExecPlugin, path: Path) -> Path:
    return write_kubeconfig(
        path,
        kubeconfig(
            {"exec": Context(cluster_entry(admin_server(cluster)), "exec-user", plugin.user)}
        ),
    )


def _pieces(cluster: Cluster, ns: str, policy: str) -> set[str]:
    return {
        o["metadata"]["labels"]["nsbaseline.io/piece"]
        for o in cluster.netpols(ns).values()
        if o["metadata"].get("labels", {}).get("nsbaseline.io/policy") == policy
    }


@pytest.mark.parametrize("api_version", [V1, V1BETA1], ids=["v1", "v1beta1"])
def test_status_explain_and_lint_log_in_through_an_exec_plugin(
    cluster: Cluster, tmp_path: Path, api_version: str
) -> None:
    with login_objects(cluster):
        sa = service_account(cluster, "exec-cli")
        plugin = ExecPlugin(cluster, tmp_path / "plugin", sa, ttl=TTL, api_version=api_version)
        path = _exec_kubeconfig(cluster, plugin, tmp_path / "kube" / "config")
        # The fixture: kubectl logs in with it, and asks in the version the kubeconfig names.
        assert kubectl_whoami(cluster, path) == sa.username
        assert plugin.minted()[-1]["apiVersion"] == api_version

        for command, args in CLUSTER_COMMANDS.items():
            before = plugin.invocations()
            proc = nsbaseline(*args, "--kubeconfig", str(path))
            assert_works(command, proc)
            assert plugin.invocations() > before, f"{command} did not run the plugin"
        # Answered in the version asked for: a client that mixed them up would have failed.
        assert {m["apiVersion"] for m in plugin.minted()} == {api_version}


def test_operator_runs_the_exec_plugin_again_after_expiry_and_survives_revoked_tokens(
    cluster: Cluster, tmp_path: Path, logdir: Path, clean_policies: None
) -> None:
    """``run`` through ``--kubeconfig``/``--context``: converges, repairs and converges new
    namespaces while every token it was given expires and is revoked under it."""
    with login_objects(cluster):
        sa = service_account(cluster, "exec-run")
        plugin = ExecPlugin(cluster, tmp_path / "plugin", sa, ttl=TTL, api_version=V1)
        server = admin_server(cluster)
        # The current context is a decoy (nothing listens there): only --context reaches the
        # cluster. KUBECONFIG names another decoy: only --kubeconfig is read.
        closed = f"https://127.0.0.1:{free_port()}"
        decoy = Context(cluster_entry(server, url=closed), "decoy-user", {"token": "decoy"})
        real = Context(cluster_entry(server), "exec-user", plugin.user)
        path = write_kubeconfig(
            tmp_path / "kube" / "config", kubeconfig({"decoy": decoy, "exec": real}, "decoy")
        )
        env_decoy = write_kubeconfig(tmp_path / "decoy" / "config", kubeconfig({"decoy": decoy}))
        assert kubectl_whoami(cluster, path, context="exec") == sa.username

        label = f"e2e.nsbaseline.io/exec-{uuid.uuid4().hex[:6]}"
        policy = "exec-login"
        first_ns = cluster.namespace("exec", {label: "yes"})
        cluster.apply(baseline_policy(policy, namespaceSelector={"matchLabels": {label: "yes"}}))

        with Revoker(plugin) as revoker:
            op = OperatorProcess(
                cluster,
                logdir,
                "--kubeconfig",
                str(path),
                "--context",
                "exec",
                env={"KUBECONFIG": str(env_decoy)},
            )
            started = time.time()
            try:
                op.start()
                _wait_converged(cluster, first_ns, policy, "baseline made through the exec plugin")
                # Let the operator's first token expire and be revoked on the server.
                first = next(m for m in plugin.minted() if m["minted"] >= started)
                wait_for(lambda: first["secret"] in revoker.revoked, 60, what="first token revoked")
                wait_for(
                    lambda: not token_works(cluster, first["token"], tmp_path),
                    60,
                    interval=1,
                    what="the API server refusing the first token",
                )
                for round_ in (1, 2):
                    runs = plugin.invocations()
                    _delete_and_wait_repaired(cluster, first_ns, f"nsbaseline-{policy}-allow-dns")
                    new_ns = cluster.namespace("exec", {label: "yes"})
                    _wait_converged(cluster, new_ns, policy, f"round {round_}: new namespace")
                    assert plugin.invocations() > runs, "the plugin was not run again"
                    time.sleep(TTL + revoker.grace + 1)  # the token in use expires again
                assert op.proc is not None and op.proc.poll() is None, op.tail()
                assert not revoker.errors, revoker.errors
            finally:
                op.stop()


def _delete_and_wait_repaired(cluster: Cluster, ns: str, name: str) -> None:
    cluster.kubectl("delete", "networkpolicy", name, "-n", ns)
    wait_for(lambda: name in cluster.netpols(ns), 120, what=f"deleted {ns}/{name} repaired")


def _wait_converged(cluster: Cluster, ns: str, policy: str, what: str) -> None:
    wanted = {"allow-dns", "default-deny"}
    wait_for(lambda: _pieces(cluster, ns, policy) == wanted, 120, what=what)


@pytest.mark.parametrize("command", list(WITH_RUN))
def test_a_failing_exec_plugin_is_one_line_naming_the_plugin_and_its_message(
    cluster: Cluster, tmp_path: Path, command: str
) -> None:
    message = f"the e2e identity provider refused the login (ticket {uuid.uuid4().hex[:6]})"
    plugin = ExecPlugin(cluster, tmp_path / "plugin", None, fail=message)
    path = _exec_kubeconfig(cluster, plugin, tmp_path / "kube" / "config")
    with pytest.raises(AssertionError, match="ticket"):
        kubectl_whoami(cluster, path)  # the fixture fails the way it should, for kubectl too

    proc = nsbaseline(*WITH_RUN[command], "--kubeconfig", str(path), timeout=120)
    line = one_line_error(proc)
    assert_mentions(line, str(plugin.command), message)
    assert plugin.invocations() >= 2
