"""Control-plane faults: the API server (and etcd behind it) go away while the operator runs.

The operator must ride out the outage without a restart: its watches and its own API client
reconnect, whatever changed meanwhile or right after is converged, and no managed object is lost.
Needs the local control plane (the components are stopped and started one by one); skipped on an
external cluster.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from nsbaseline import names
from tests.support.kube import Cluster, OperatorProcess, baseline_policy, wait_for
from tests.support.watcher import PolicyWatcher, expected_objects, mismatches

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TEST_LABEL = "faults.nsbaseline.io/control-plane"
#: Longer than Kopf's default retry budget for a request (about 54 s), after which a watch stream
#: used to give up for good; etcd's outage stays short, it is the same path behind the API server.
APISERVER_OUTAGE_SECONDS = 60
ETCD_OUTAGE_SECONDS = 10
NAMESPACES = 5


@pytest.fixture
def control_plane(local_control_plane: Any) -> Any:
    if local_control_plane is None:
        pytest.skip("stops and starts control-plane components: needs the local control plane")
    return local_control_plane


@pytest.fixture
def run_label(cluster: Cluster) -> Iterator[dict[str, str]]:
    run = uuid.uuid4().hex[:6]
    yield {TEST_LABEL: run}
    cluster.kubectl("delete", "ns", "-l", f"{TEST_LABEL}={run}", "--wait=false", timeout=120)


def _listed(cluster: Cluster, policy: str) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for obj in cluster.items("networkpolicies", "-A", "-l", f"{names.POLICY_LABEL}={policy}"):
        out.setdefault(obj["metadata"]["namespace"], {})[obj["metadata"]["name"]] = obj
    return out


def _outage_then_changes(
    cluster: Cluster,
    operator: OperatorProcess,
    labels: dict[str, str],
    outage: Callable[[], None],
    what: str,
) -> None:
    """Converge, run ``outage`` (which must leave the API server serving again), then change
    things and require convergence by the same operator process, with nothing lost."""
    prefix = f"cpf-{labels[TEST_LABEL]}"
    with PolicyWatcher(cluster.kubeconfig, lambda ns: ns.startswith(prefix + "-")) as watcher:
        tampered = _converge_outage_change(cluster, operator, labels, outage, what)
        # Deleting allow-dns by hand (the tampering) is the only way egress lost DNS.
        foreign = [m for m in watcher.violations() if m.namespace != tampered]
        assert not foreign, f"egress denied without DNS: {foreign[:5]}"


def _converge_outage_change(
    cluster: Cluster,
    operator: OperatorProcess,
    labels: dict[str, str],
    outage: Callable[[], None],
    what: str,
) -> str:
    policy = f"cpf-{labels[TEST_LABEL]}"
    cluster.apply(baseline_policy(policy, namespaceSelector={"matchLabels": labels}))
    nss = [cluster.namespace(f"cpf-{labels[TEST_LABEL]}", labels) for _ in range(NAMESPACES)]
    body = cluster.get("baselinepolicy", policy)
    expected = expected_objects(body, nss, labels)
    wait_for(
        lambda: not mismatches(_listed(cluster, policy), expected), 120, what="initial baseline"
    )
    before = {
        (ns, name): obj["metadata"]["uid"]
        for ns, objs in _listed(cluster, policy).items()
        for name, obj in objs.items()
    }

    outage()
    back = time.monotonic()
    assert operator.proc is not None and operator.proc.poll() is None, "operator died"

    # Changes of every kind right after the outage: a new namespace, tampering, a policy edit.
    fresh = cluster.namespace(f"cpf-{labels[TEST_LABEL]}", labels)
    deny, dns = (names.object_name(policy, p) for p in ("default-deny", "allow-dns"))
    cluster.kubectl("delete", "networkpolicy", dns, "-n", nss[0])
    cluster.kubectl(
        "patch",
        "networkpolicy",
        deny,
        "-n",
        nss[1],
        "--type=merge",
        "-p",
        '{"spec": {"policyTypes": ["Ingress"]}}',
    )
    cluster.apply(
        baseline_policy(
            policy, namespaceSelector={"matchLabels": labels}, monitoring={"enabled": True}
        )
    )
    body = cluster.get("baselinepolicy", policy)
    expected = expected_objects(body, [*nss, fresh], labels)
    wait_for(
        lambda: not mismatches(_listed(cluster, policy), expected),
        180,
        interval=0.5,
        what=f"convergence after the {what}",
    )
    recovered = time.monotonic() - back
    assert operator.starts == 1 and operator.proc.poll() is None, "the operator was restarted"

    after = _listed(cluster, policy)
    lost = [
        key
        for key, uid in before.items()
        if key != (nss[0], dns)
        and after.get(key[0], {}).get(key[1], {}).get("metadata", {}).get("uid") != uid
    ]
    assert not lost, f"managed objects replaced or lost across the {what}: {lost}"
    wait_for(
        lambda: (
            (cluster.get("baselinepolicy", policy) or {})
            .get("status", {})
            .get("observedGeneration")
            == body["metadata"]["generation"]
        ),
        60,
        what="the policy status to catch up",
    )
    print(f"\n{what}: converged {recovered:.1f}s after the API server was serving again")
    return nss[0]


def _api_is_down(cluster: Cluster) -> None:
    """Prove the outage: nothing can be read or changed while it lasts."""
    proc = cluster.kubectl("get", "namespaces", "--request-timeout=3s", check=False, timeout=30)
    assert proc.returncode != 0, "the API server still answers"
    proc = cluster.kubectl(
        "create", "namespace", "cpf-during-outage", "--request-timeout=3s", check=False, timeout=30
    )
    assert proc.returncode != 0, "a change went through during the outage"


def _serve_again(control_plane: Any) -> None:
    # The controller-manager may give up while its API server is gone; it is not under test.
    if not control_plane._is_ours(
        "kube-controller-manager", control_plane.pids.get("kube-controller-manager", -1)
    ):
        control_plane.start_component("kube-controller-manager")
    control_plane.wait_ready(180)


def test_operator_recovers_from_an_apiserver_restart_without_restarting(
    cluster: Cluster,
    operator: OperatorProcess,
    control_plane: Any,
    run_label: dict[str, str],
) -> None:
    def outage() -> None:
        control_plane.stop_component("kube-apiserver")
        _api_is_down(cluster)
        time.sleep(APISERVER_OUTAGE_SECONDS)
        control_plane.start_component("kube-apiserver")
        _serve_again(control_plane)

    _outage_then_changes(cluster, operator, run_label, outage, "API server restart")


def test_operator_recovers_from_an_etcd_restart_without_restarting(
    cluster: Cluster,
    operator: OperatorProcess,
    control_plane: Any,
    run_label: dict[str, str],
) -> None:
    def outage() -> None:
        control_plane.stop_component("kube-apiserver")
        control_plane.stop_component("etcd")
        _api_is_down(cluster)
        time.sleep(ETCD_OUTAGE_SECONDS)
        control_plane.start_component("etcd")  # same data dir: the cluster's state survives
        control_plane.start_component("kube-apiserver")
        _serve_again(control_plane)

    _outage_then_changes(cluster, operator, run_label, outage, "etcd and API server restart")
