"""The image users deploy: built from the Dockerfile with podman and run the way its pod runs.

``hack/image/build.sh`` builds the repository's ``Dockerfile`` as written (on a stand-in for
``python:3.11-slim``, since no registry is reachable here). Each test then runs that image as
the install's Deployment describes its pod, read from ``kubectl kustomize deploy/``: the security
context (UID 65532, read-only root filesystem, every capability dropped, no privilege
escalation), the args and env, ``/tmp`` as the emptyDir, the templates ConfigMap, the resource
limits, and in-cluster credentials only: a TokenRequest token of the ``nsbaseline``
ServiceAccount with the CA and namespace at ``/var/run/secrets/kubernetes.io/serviceaccount``,
``KUBERNETES_SERVICE_HOST``/``PORT``, and ``kubernetes.default.svc`` reaching the API server. So
the in-cluster login and the install's RBAC are exercised together, through the image's own
entrypoint. Each container has a network namespace of its own (see tests.support.podnet).

Timings (start-up, stop, failover) are printed, not asserted: the machine is shared.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from nsbaseline import names
from tests.support.deploy import DEPLOY, SERVICE_ACCOUNT, install_base, kustomize
from tests.support.kube import REPO, Cluster, baseline_policy, parse_metrics, wait_for
from tests.support.pod import (
    ApiServer,
    Pod,
    PodTemplate,
    build_image,
    image_user,
    podman,
    remove_leftover_containers,
    service_account_volume,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TEST_LABEL = "image.nsbaseline.io/run"


@pytest.fixture(scope="module")
def image() -> str:
    remove_leftover_containers()
    return build_image()


@pytest.fixture(scope="module")
def template(cluster: Cluster) -> PodTemplate:
    """The operator's pod as the default install (``deploy/``) describes it."""
    return PodTemplate.from_docs(kustomize(cluster, DEPLOY))


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> ApiServer:
    return ApiServer.from_kubeconfig(cluster.kubeconfig)


@pytest.fixture
def peering(cluster: Cluster, template: PodTemplate) -> Iterator[str]:
    """The peering object the manifest's args use: none at the start (the pods create it),
    none left afterwards."""
    args = template.container.get("args", [])
    name = next((a.split("=", 1)[1] for a in args if a.startswith("--peering-name=")), "nsbaseline")
    cluster.kubectl("delete", "clusterkopfpeering", name, "--ignore-not-found")
    yield name
    cluster.kubectl("delete", "clusterkopfpeering", name, "--ignore-not-found")


@pytest.fixture
def run_label(cluster: Cluster) -> Iterator[dict[str, str]]:
    run = f"r{time.monotonic_ns() % 10**8}"
    yield {TEST_LABEL: run}
    cluster.kubectl("delete", "ns", "-l", f"{TEST_LABEL}={run}", "--wait=false", timeout=120)


class PodFactory(Protocol):
    def __call__(self, template: PodTemplate | None = None) -> Pod: ...


@pytest.fixture
def pods(
    cluster: Cluster,
    image: str,
    template: PodTemplate,
    api: ApiServer,
    logdir: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[PodFactory]:
    """Start replicas of the Deployment's pod; all are removed (logs kept) at the end."""
    install_base(cluster)  # the ServiceAccount and ClusterRole the token is bound to
    sa_dir = service_account_volume(
        cluster, tmp_path / "serviceaccount", api, SERVICE_ACCOUNT, template.namespace
    )
    user = image_user(image)
    deployed = template
    started: list[Pod] = []

    def start(template: PodTemplate | None = None) -> Pod:
        pod = Pod(template or deployed, image, user, api, sa_dir, logdir)
        started.append(pod)
        return pod.start()

    yield start
    report = getattr(request.node, "rep_call", None)
    for pod in started:
        if report is not None and report.failed:
            print(f"\n----- {pod.name} ({pod.log_path}) -----\n{pod.tail(40)}")
        pod.remove()


# ----- observing the operator inside ---------------------------------------------------------
def _messages(pod: Pod) -> list[str]:
    """The container's output lines. The k8s-file log has '<time> <stream> <tag> <text>' lines,
    where tag P marks a part of a long line that the next lines continue, up to a tag F."""
    messages, partial = [], ""
    for line in pod.log().splitlines():
        _, _, tag, text = [*line.split(" ", 3), "", "", "", ""][:4]
        partial += text
        if tag != "P":
            messages.append(partial)
            partial = ""
    return messages


def _is_active(pod: Pod) -> bool:
    """Whether Kopf last resumed this replica (every peering replica starts paused)."""
    text = pod.log()
    return text.rfind("Resuming operations") > text.rfind("Pausing operations")


def _metrics(pod: Pod, template: PodTemplate) -> list[tuple[str, dict[str, str], float]]:
    status, body = pod.http_get(template.port("metrics"), "/metrics")
    assert status == 200, body
    return parse_metrics(body)


def _writes(pod: Pod, template: PodTemplate) -> float:
    return sum(
        value
        for name, labels, value in _metrics(pod, template)
        if name == "nsbaseline_writes_total" and labels.get("kind") == "NetworkPolicy"
    )


def _peers(cluster: Cluster, peering: str) -> dict[str, Any]:
    body = cluster.get("clusterkopfpeering", peering) or {}
    return {k: v for k, v in (body.get("status") or {}).items() if isinstance(v, dict)}


def _peer_pods(cluster: Cluster, peering: str) -> set[str]:
    """The pods of the peering records: an identity is ``<pod>/<pid>/<random>`` (a restarted
    container in the same pod is a new peer, never mistaken for the one it replaces)."""
    return {identity.split("/", 1)[0] for identity in _peers(cluster, peering)}


def _wait_ready(pod: Pod, timeout: float = 180) -> float:
    """Seconds from ``podman run`` to the first successful readiness probe."""

    def ready() -> bool:
        if pod.state() not in ("running", "created", "configured", ""):
            raise RuntimeError(f"{pod.name} is {pod.state()}:\n{pod.tail()}")
        return pod.probe_ok("readinessProbe")

    wait_for(ready, timeout, interval=0.2, what=f"{pod.name}'s readiness probe")
    return time.monotonic() - pod.started_at


def _baseline(policy: str) -> set[str]:
    return {names.object_name(policy, "allow-dns"), names.object_name(policy, "default-deny")}


# ----- the tests -------------------------------------------------------------------------------
def test_image_runs_as_the_manifests_non_root_user_through_the_entrypoint_its_args_expect(
    image: str, template: PodTemplate, api: ApiServer, tmp_path: Path
) -> None:
    """The pod gives no ``command``: the image's ENTRYPOINT must take the manifest's args, its
    USER must be the numeric UID the security context names (runAsNonRoot), and the installed
    wheel must carry every built-in template and CRD."""
    config = json.loads(podman("image", "inspect", "--format", "{{json .Config}}", image).stdout)
    context = template.security_context()
    assert config["User"] == f"{context['runAsUser']}:{context['runAsGroup']}"
    assert context["runAsNonRoot"] and int(context["runAsUser"]) != 0
    container = template.container
    assert "command" not in container
    assert config["Entrypoint"] == ["nsbaseline"]
    assert container["args"][0] == "run"
    for port in container["ports"]:
        assert f"{port['containerPort']}/tcp" in config.get("ExposedPorts", {})

    # One-off commands in a container confined exactly like the pod (no API access needed).
    (tmp_path / "sa").mkdir()
    pod = Pod(template, image, config["User"], api, tmp_path / "sa", tmp_path)
    run_help = pod.run_once("run", "--help")
    for arg in container["args"][1:]:
        assert arg.split("=", 1)[0] in run_help, f"{arg} is not an option of `nsbaseline run`"
    script = (
        "import pathlib, nsbaseline, nsbaseline.render as r\n"
        "print(nsbaseline.__file__)\n"
        "print(*sorted(p.name for p in r.builtin_template_dir().glob('*.yaml.j2')))\n"
        "print(*sorted(p.name for p in (pathlib.Path(nsbaseline.__file__).parent / 'crds')"
        ".glob('*.yaml')))\n"
    )
    where, templates, crds = pod.run_once("-c", script, entrypoint="python").splitlines()
    assert where.startswith("/opt/nsbaseline/"), where
    assert templates.split() == sorted(p.name for p in (REPO / "templates").glob("*.yaml.j2"))
    assert crds.split() == sorted(p.name for p in (REPO / "crds").glob("*.yaml"))


def test_image_run_as_its_pod_logs_in_in_cluster_converges_repairs_and_serves_probes_and_metrics(
    cluster: Cluster,
    pods: PodFactory,
    template: PodTemplate,
    clean_policies: None,
    peering: str,
    run_label: dict[str, str],
) -> None:
    """No kubeconfig exists in the container: every API call goes through the in-cluster login
    with the ServiceAccount's token, so a missing permission in the install's ClusterRole, a
    path the read-only root refuses, or a wrong entrypoint stops the baseline from appearing."""
    pod = pods()
    ready = _wait_ready(pod)
    assert pod.probe_ok("livenessProbe")
    wait_for(lambda: pod.name in _peer_pods(cluster, peering), 120, what="its peering record")

    policy = f"img-{run_label[TEST_LABEL]}"
    cluster.apply(baseline_policy(policy, namespaceSelector={"matchLabels": run_label}))
    ns = cluster.namespace("img", run_label)
    wait_for(lambda: _baseline(policy) <= set(cluster.netpols(ns)), 120, what="the baseline")
    converged = time.monotonic() - pod.started_at

    dns = names.object_name(policy, "allow-dns")
    cluster.kubectl("delete", "networkpolicy", dns, "-n", ns)
    wait_for(lambda: dns in cluster.netpols(ns), 120, what="the deleted allow-dns repaired")

    assert _writes(pod, template) >= 3, "the writes are counted on the metrics port"
    annotations = template.deployment["spec"]["template"]["metadata"].get("annotations", {})
    assert int(annotations["prometheus.io/port"]) == template.port("metrics")
    assert pod.probe_ok("readinessProbe") and pod.probe_ok("livenessProbe")

    messages = _messages(pod)
    assert any(json.loads(m).get("message") for m in messages if m.startswith("{")), (
        "--log-format=json"
    )
    for bad in ("Read-only file system", "Permission denied", "Forbidden", "Traceback"):
        assert not [m for m in messages if bad in m], f"{bad!r} in the log:\n{pod.tail()}"
    print(
        f"\nimage pod: ready {ready:.1f}s after `podman run`, baseline converged at "
        f"{converged:.1f}s"
    )


def test_image_stops_cleanly_on_sigterm_within_the_grace_period_and_leaves_the_peering(
    cluster: Cluster, pods: PodFactory, template: PodTemplate, peering: str
) -> None:
    """The kubelet sends SIGTERM and kills after terminationGracePeriodSeconds: the operator
    (PID 1 in the container) must exit by itself, and remove its peering record so that a
    standby takes over at once instead of waiting for the record to expire."""
    pod = pods()
    _wait_ready(pod)
    wait_for(lambda: pod.name in _peer_pods(cluster, peering), 120, what="its peering record")
    seconds, code = pod.terminate()
    assert code == 0, f"exit code {code} after SIGTERM (137: killed after the grace period)"
    assert pod.name not in _peer_pods(cluster, peering), "its peering record outlived it"
    print(
        f"\nimage pod: stopped {seconds:.1f}s after SIGTERM "
        f"(terminationGracePeriodSeconds {template.grace_seconds})"
    )


def test_two_image_replicas_elect_one_active_and_the_standby_takes_over_when_it_is_killed(
    cluster: Cluster,
    pods: PodFactory,
    template: PodTemplate,
    clean_policies: None,
    peering: str,
    run_label: dict[str, str],
) -> None:
    """The Deployment's two replicas with its own args (random priorities, the default peering
    lifetime): exactly one writes; when it is SIGKILLed (a node lost, an OOM kill) the other
    takes over once the dead one's record expires."""
    replicas = [pods(), pods()]
    for pod in replicas:
        _wait_ready(pod)
    wait_for(lambda: len(_peers(cluster, peering)) == 2, 120, what="both peering records")
    assert _peer_pods(cluster, peering) == {pod.name for pod in replicas}, "POD_ID names them"
    wait_for(lambda: sum(map(_is_active, replicas)) == 1, 120, what="exactly one active replica")
    (active,) = [pod for pod in replicas if _is_active(pod)]
    (standby,) = [pod for pod in replicas if pod is not active]

    policy = f"img-{run_label[TEST_LABEL]}"
    cluster.apply(baseline_policy(policy, namespaceSelector={"matchLabels": run_label}))
    nss = [cluster.namespace("img", run_label) for _ in range(2)]
    wait_for(
        lambda: all(_baseline(policy) <= set(cluster.netpols(ns)) for ns in nss),
        120,
        what="the baseline in both namespaces",
    )
    assert _writes(active, template) > 0
    assert _writes(standby, template) == 0, "the standby wrote while paused"
    assert standby.probe_ok("readinessProbe"), "a paused standby is still ready (and live)"

    active.kill()
    killed = time.monotonic()
    dns = names.object_name(policy, "allow-dns")
    cluster.kubectl("delete", "networkpolicy", dns, "-n", nss[1])
    wait_for(lambda: dns in cluster.netpols(nss[1]), 300, interval=0.5, what="standby's repair")
    failover = time.monotonic() - killed
    assert _is_active(standby)
    assert _writes(standby, template) > 0
    lifetime = next(
        (a.split("=", 1)[1] for a in template.container["args"] if "--peering-lifetime" in a),
        "60 (default)",
    )
    print(
        f"\nimage failover: SIGKILL of the active pod -> repair by the standby in "
        f"{failover:.1f}s (peering lifetime {lifetime})"
    )


def test_image_run_without_pod_id_or_args_uses_its_default_command_and_names_itself(
    cluster: Cluster, pods: PodFactory, template: PodTemplate, peering: str
) -> None:
    """``docker run`` of the image, or a Deployment of one's own without the POD_ID env: the
    image's default command (``run --peering``) must start, and the replica then names itself
    after its hostname (the pod's name, as the kubelet sets it)."""
    container = template.container
    container.pop("args", None)
    container["env"] = [e for e in container.get("env", []) if e["name"] != "POD_ID"]
    bare = PodTemplate(copy.deepcopy(template.deployment), template.configmaps)
    bare.spec["containers"] = [container]
    pod = pods(bare)
    _wait_ready(pod)
    wait_for(lambda: len(_peers(cluster, peering)) == 1, 120, what="its peering record")
    (identity,) = _peers(cluster, peering)
    assert identity.split("/", 1)[0] == pod.name, identity
