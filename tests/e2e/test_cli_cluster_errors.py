"""Every way of not reaching the cluster ends in one line a person can act on.

The contract: exactly one non-empty line on stderr starting with ``error: ``, no traceback, exit
code 2, naming what to fix (tests/support/cli.py checks the shape; each test names the fragments
its message must contain). Most of these run in a second or two: a kubeconfig that points at a
closed port, a token nobody issued, a context that does not exist.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
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
    Server,
    admin_server,
    bind,
    cluster_entry,
    kubeconfig,
    kubectl_whoami,
    login_objects,
    mint_bound_token,
    service_account,
    write_kubeconfig,
)
from tests.support.kube import REPO, Cluster, free_port, wait_for

pytestmark = pytest.mark.e2e


def _admin_copy(cluster: Cluster, path: Path) -> Path:
    """The admin's server and credentials in a kubeconfig of the test's own (context "admin")."""
    import yaml

    doc = yaml.safe_load(cluster.kubeconfig.read_text())
    ctx_name = doc.get("current-context") or doc["contexts"][0]["name"]
    ctx = next(c for c in doc["contexts"] if c["name"] == ctx_name)["context"]
    user = next(u for u in doc["users"] if u["name"] == ctx["user"])["user"]
    return write_kubeconfig(
        path, kubeconfig({"admin": Context(cluster_entry(admin_server(cluster)), "admin", user)})
    )


@pytest.mark.parametrize("command", list(WITH_RUN))
def test_a_missing_kubeconfig_file_is_named(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "nowhere" / "kubeconfig"
    proc = nsbaseline(*WITH_RUN[command], "--kubeconfig", str(missing), timeout=60)
    assert_mentions(one_line_error(proc), str(missing))


@pytest.mark.parametrize("command", list(WITH_RUN))
def test_a_missing_context_is_named_with_its_kubeconfig(
    cluster: Cluster, tmp_path: Path, command: str
) -> None:
    path = _admin_copy(cluster, tmp_path / "config")
    context = f"no-such-context-{uuid.uuid4().hex[:6]}"
    proc = nsbaseline(
        *WITH_RUN[command], "--kubeconfig", str(path), "--context", context, timeout=60
    )
    assert_mentions(one_line_error(proc), context, str(path))


@pytest.mark.parametrize("command", list(WITH_RUN))
def test_an_unreachable_server_is_named_by_its_url(
    cluster: Cluster, tmp_path: Path, command: str
) -> None:
    url = f"https://127.0.0.1:{free_port()}"
    entry = cluster_entry(admin_server(cluster), url=url)
    path = write_kubeconfig(
        tmp_path / "config", kubeconfig({"gone": Context(entry, "u", {"token": "x"})})
    )
    with pytest.raises(AssertionError, match="refused"):
        kubectl_whoami(cluster, path)  # nothing listens there
    proc = nsbaseline(*WITH_RUN[command], "--kubeconfig", str(path), timeout=120)
    assert_mentions(one_line_error(proc), url)


@pytest.mark.parametrize("command", list(WITH_RUN))
def test_a_401_names_the_kubeconfig_user(cluster: Cluster, tmp_path: Path, command: str) -> None:
    user = f"e2e-bogus-user-{uuid.uuid4().hex[:6]}"
    entry = cluster_entry(admin_server(cluster))
    path = write_kubeconfig(
        tmp_path / "config",
        kubeconfig({"bogus": Context(entry, user, {"token": uuid.uuid4().hex})}),
    )
    with pytest.raises(AssertionError, match="Unauthorized"):
        kubectl_whoami(cluster, path)
    proc = nsbaseline(*WITH_RUN[command], "--kubeconfig", str(path), timeout=120)
    assert_mentions(one_line_error(proc), "401", user)


LIMITED_ROLE_LABEL = "e2e.nsbaseline.io/limited-role"


@contextlib.contextmanager
def _limited_user(cluster: Cluster, tmp_path: Path, prefix: str) -> Iterator[tuple[str, Path]]:
    """A ServiceAccount that may read namespaces and NetworkPolicies and nothing else that
    nsbaseline lists (no BaselinePolicies, no pods); yields (username, kubeconfig)."""
    role = f"e2e-{prefix}-{uuid.uuid4().hex[:6]}"
    cluster.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": role, "labels": {LIMITED_ROLE_LABEL: "true"}},
            "rules": [
                {
                    "apiGroups": ["", "networking.k8s.io"],
                    "resources": ["namespaces", "networkpolicies"],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        }
    )
    try:
        with login_objects(cluster):
            sa = service_account(cluster, prefix, roles=())
            subject = {"kind": "ServiceAccount", "name": sa.name, "namespace": sa.namespace}
            bind(cluster, subject, [role], sa.namespace)
            token = mint_bound_token(cluster, sa)
            entry = cluster_entry(admin_server(cluster))
            path = write_kubeconfig(
                tmp_path / "config",
                kubeconfig({"limited": Context(entry, prefix, {"token": token.token})}),
            )
            assert kubectl_whoami(cluster, path) == sa.username
            yield sa.username, path
    finally:
        cluster.kubectl("delete", "clusterrole", role, "--ignore-not-found")


def test_a_403_on_status_names_the_user_the_verb_and_the_resource(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Everything status reads except the BaselinePolicies."""
    with _limited_user(cluster, tmp_path, "no-bp") as (user, path):
        proc = nsbaseline("status", "--kubeconfig", str(path), timeout=120)
        assert_mentions(one_line_error(proc), user, "list", "baselinepolicies.nsbaseline.io")


@pytest.mark.parametrize("command", ["explain", "lint"])
def test_a_403_on_explain_and_lint_names_the_user_the_verb_and_the_resource(
    cluster: Cluster, tmp_path: Path, command: str
) -> None:
    """Everything explain and lint read except the pods."""
    with _limited_user(cluster, tmp_path, "no-pods") as (user, path):
        proc = nsbaseline(*CLUSTER_COMMANDS[command], "--kubeconfig", str(path), timeout=120)
        assert_mentions(one_line_error(proc), user, "list", "pods")


@pytest.mark.parametrize("command", list(CLUSTER_COMMANDS))
def test_a_403_as_anonymous_names_system_anonymous(
    cluster: Cluster, tmp_path: Path, command: str
) -> None:
    """A kubeconfig user with no credentials at all, as in issue 10's report."""
    entry = cluster_entry(admin_server(cluster))
    path = write_kubeconfig(tmp_path / "config", kubeconfig({"anon": Context(entry, "nobody", {})}))
    # Not kubectl: with no credentials it prompts for a password instead of going anonymous.
    answer = _anonymous_get(admin_server(cluster), "/api/v1/namespaces")
    if "system:anonymous" not in answer:
        pytest.skip(f"this cluster does not serve anonymous requests: {answer[:200]}")
    proc = nsbaseline(*CLUSTER_COMMANDS[command], "--kubeconfig", str(path), timeout=120)
    assert_mentions(one_line_error(proc), "system:anonymous")


def _anonymous_get(server: Server, path: str) -> str:
    """The API server's answer to a request without credentials."""
    ctx = ssl.create_default_context(cadata=server.ca_pem.decode())
    try:
        with urllib.request.urlopen(server.url + path, context=ctx, timeout=30) as resp:
            return str(resp.read().decode())
    except urllib.error.HTTPError as exc:
        return str(exc.read().decode(errors="replace"))


def test_status_without_the_crd_says_how_to_install_it(cluster: Cluster) -> None:
    """The CRD is taken away for this test only and put back, Established, afterwards."""
    crd = "baselinepolicies.nsbaseline.io"
    cluster.kubectl("delete", "baselinepolicies", "--all", "--wait=true")
    cluster.kubectl("delete", "crd", crd, "--wait=true", timeout=120)
    try:
        wait_for(
            lambda: (
                cluster.kubectl(
                    "get", "--raw", "/apis/nsbaseline.io/v1alpha1", check=False
                ).returncode
                != 0
            ),
            60,
            what="the BaselinePolicy API gone",
        )
        proc = nsbaseline("status", env={"KUBECONFIG": str(cluster.kubeconfig)}, timeout=120)
        assert_mentions(one_line_error(proc), crd, "kubectl apply")
    finally:
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        wait_for(
            lambda: cluster.kubectl("get", "baselinepolicies", check=False).returncode == 0,
            60,
            what="BaselinePolicy served again",
        )


@contextlib.contextmanager
def _busy_port() -> Iterator[int]:
    """A port some other program is listening on (all addresses, so any bind of it fails)."""
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_run_with_a_busy_metrics_port_names_the_flag_and_the_port(cluster: Cluster) -> None:
    with _busy_port() as port:
        proc = nsbaseline(
            "run",
            "--standalone",
            "--metrics-port",
            str(port),
            "--health",
            f"http://127.0.0.1:{free_port()}/healthz",
            env={"KUBECONFIG": str(cluster.kubeconfig)},
            timeout=90,
        )
    assert_mentions(one_line_error(proc), "--metrics-port", str(port))


def test_run_with_a_busy_health_port_names_the_flag(cluster: Cluster) -> None:
    with _busy_port() as port:
        proc = nsbaseline(
            "run",
            "--standalone",
            "--metrics-port",
            "0",
            "--health",
            f"http://127.0.0.1:{port}/healthz",
            env={"KUBECONFIG": str(cluster.kubeconfig)},
            timeout=90,
        )
    assert_mentions(one_line_error(proc), "--health")


# ----- which kubeconfig and context are used (the successful side of the flags) ----------------
def test_kubeconfig_may_be_a_colon_separated_list_merged_like_kubectl(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Cluster and user in one file, the context choosing them in another."""
    import yaml

    full = yaml.safe_load(_admin_copy(cluster, tmp_path / "full").read_text())
    first = write_kubeconfig(
        tmp_path / "a" / "config", {**full, "contexts": [], "current-context": ""}
    )
    second = write_kubeconfig(
        tmp_path / "b" / "config",
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [],
            "users": [],
            "contexts": full["contexts"],
            "current-context": "admin",
        },
    )
    env = {"KUBECONFIG": f"{first}:{second}"}
    # kubectl merges the two files into one working kubeconfig.
    assert kubectl_whoami(cluster, None, env=env) == kubectl_whoami(cluster, cluster.kubeconfig)
    for command, args in CLUSTER_COMMANDS.items():
        assert_works(command, nsbaseline(*args, env=env))


def test_context_flag_selects_a_context_other_than_the_current_one(
    cluster: Cluster, tmp_path: Path
) -> None:
    import yaml

    good = yaml.safe_load(_admin_copy(cluster, tmp_path / "good").read_text())
    closed = f"https://127.0.0.1:{free_port()}"
    decoy = Context(cluster_entry(admin_server(cluster), url=closed), "decoy", {"token": "x"})
    doc = kubeconfig({"decoy": decoy})
    doc["clusters"] += good["clusters"]
    doc["users"] += good["users"]
    doc["contexts"] += good["contexts"]
    path = write_kubeconfig(tmp_path / "config", doc)
    assert kubectl_whoami(cluster, path, context="admin")
    for command, args in CLUSTER_COMMANDS.items():
        assert_works(command, nsbaseline(*args, "--kubeconfig", str(path), "--context", "admin"))
