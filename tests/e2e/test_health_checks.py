"""Health as the ecosystem computes it, on real BaselinePolicies from the control plane.

Two readers of ``.status``, each run with its own code:

- **kstatus** (hack/kstatus/build.sh), both sigs.k8s.io/cli-utils/pkg/kstatus and Flux's fork
  github.com/fluxcd/cli-utils, which Flux's kustomize-controller uses for ``wait: true`` and
  ``healthChecks``.
  Expected: InProgress until the operator has observed the current generation, Current when
  Ready, Failed when Degraded.
- **Argo CD's Lua evaluation** (util/lua, built by hack/gitops/build.sh) of the health check we
  ship in docs/examples/gitops/argocd-cm.yaml. Expected: Progressing, Healthy, Degraded.
  (tests/e2e/test_gitops.py watches the real application controller apply the same check.)
- **Flux's CEL health checks** (github.com/fluxcd/pkg/runtime/cel) with the ``healthCheckExprs``
  of the shipped docs/examples/gitops/flux-kustomization.yaml, which is also validated against
  Flux's own Kustomization CRD. Flux itself is not run.

Four policies are put in four states by a real operator: Ready; Degraded (a template error);
observed once and then changed while the operator was stopped (stale status); created while it
was stopped (no status at all). Each test first checks the state from ``.status.conditions``
itself, then what the reader says, so the two always agree with the conditions.

kstatus reads failures only from a Stalled condition and treats an object without
status.observedGeneration as current: the operator mirrors Degraded as Stalled, and the CRD
serves a new policy with observedGeneration 0, so plain kstatus agrees in all four states.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.gitops import (
    EXAMPLES,
    FLUX_KUSTOMIZE_CONTROLLER,
    gitops_bindir,
    kstatus,
    kstatus_binary,
    lua_health,
    module_dir,
    shipped_health_lua,
    wait_established,
)
from tests.support.kube import Cluster, OperatorProcess, baseline_policy, wait_for

pytestmark = pytest.mark.e2e

LABEL = "e2e.nsbaseline.io/health"
TEMPLATE = "health-probe"
SWITCHABLE = textwrap.dedent(
    """\
    {%- if not values.bad %}
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {}
    spec:
      podSelector: {}
      policyTypes: [Ingress]
      ingress: [{ports: [{port: 8080}]}]
    {%- else %}
    {{ values.no_such_value.port }}
    {%- endif %}
    """
)

READY, DEGRADED, STALE, NEW = "hc-ready", "hc-degraded", "hc-stale", "hc-new"
#: policy -> (state from its conditions, kstatus should say, Argo CD health should say)
EXPECTED = {
    READY: ("ready", "Current", "Healthy"),
    DEGRADED: ("degraded", "Failed", "Degraded"),
    STALE: ("not-observed", "InProgress", "Progressing"),
    NEW: ("not-observed", "InProgress", "Progressing"),
}
#: What Flux says with the shipped Kustomization's healthCheckExprs. A policy the operator has not
#: seen yet has the CRD's default status (observedGeneration 0): InProgress, so `wait: true` keeps
#: waiting, as it should.
EXPECTED_FLUX_CEL = {READY: "Current", DEGRADED: "Failed", STALE: "InProgress", NEW: "InProgress"}
FLUX_KUSTOMIZATION = EXAMPLES / "flux-kustomization.yaml"


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def state_from_conditions(obj: dict[str, Any]) -> str:
    """The policy's state as ``.status`` says: the truth both readers must agree with."""
    status = obj.get("status") or {}
    generation = obj["metadata"]["generation"]
    if status.get("observedGeneration") != generation:
        return "not-observed"
    if _condition(obj, "Degraded").get("status") == "True":
        return "degraded"
    if _condition(obj, "Ready").get("status") == "True":
        return "ready"
    return "progressing"


def _ready(cluster: Cluster, name: str) -> bool:
    obj = cluster.get("baselinepolicy", name)
    return obj is not None and state_from_conditions(obj) == "ready"


def _degraded(cluster: Cluster, name: str) -> bool:
    obj = cluster.get("baselinepolicy", name)
    return obj is not None and state_from_conditions(obj) == "degraded"


@pytest.fixture(scope="module")
def policies(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster.kubectl("delete", "baselinepolicies", "--all", "--wait=true")
    cluster.settle()
    namespace = cluster.namespace("health", {LABEL: "on"})
    templates = tmp_path_factory.mktemp("templates")
    (templates / f"{TEMPLATE}.yaml.j2").write_text(SWITCHABLE)
    selector = {"matchLabels": {LABEL: "on"}}
    op = OperatorProcess(
        cluster, tmp_path_factory.mktemp("operator"), "--templates-dir", str(templates)
    ).start()
    try:
        cluster.apply(
            baseline_policy(READY, namespaceSelector=selector),
            baseline_policy(STALE, namespaceSelector=selector),
            baseline_policy(
                DEGRADED,
                namespaceSelector=selector,
                templates=[{"name": TEMPLATE, "values": {"bad": True}}],
            ),
        )
        wait_for(lambda: _ready(cluster, READY), 120, what=f"{READY} Ready")
        wait_for(lambda: _ready(cluster, STALE), 120, what=f"{STALE} Ready")
        wait_for(lambda: _degraded(cluster, DEGRADED), 120, what=f"{DEGRADED} Degraded")
    finally:
        op.stop()
    # With the operator stopped: a spec change it will not observe, and a policy it never saw.
    cluster.kubectl(
        "patch", "baselinepolicy", STALE, "--type", "merge",
        "-p", '{"spec": {"monitoring": {"enabled": true}}}',
    )  # fmt: skip
    cluster.apply(baseline_policy(NEW, namespaceSelector=selector))
    try:
        yield cluster
    finally:
        cluster.kubectl("delete", "baselinepolicies", "--all", "--wait=true")
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")


@pytest.fixture(scope="module")
def kstatus_bin() -> str:
    return kstatus_binary()


@pytest.fixture(scope="module")
def lua_bindir() -> Path:
    return gitops_bindir()


def _params(reader: int) -> list[Any]:
    """One case per policy; reader 1 (kstatus) marks the cases the status cannot pass yet."""
    return [
        pytest.param(name, id=EXPECTED[name][0] + ("-stale" if name == STALE else ""))
        for name in EXPECTED
    ]


@pytest.mark.parametrize("name", _params(1))
def test_kstatus_agrees_with_the_conditions(policies: Cluster, kstatus_bin: str, name: str) -> None:
    obj = policies.get("baselinepolicy", name)
    state, expected, _ = EXPECTED[name]
    assert state_from_conditions(obj) == state, obj.get("status")
    result = kstatus(kstatus_bin, obj)
    assert result["status"] == expected, (result, obj.get("status"))
    assert result["fluxStatus"] == result["status"], "Flux's fork disagrees with upstream kstatus"


@pytest.mark.parametrize("name", _params(2))
def test_argocd_health_check_agrees_with_the_conditions(
    policies: Cluster, lua_bindir: Path, name: str
) -> None:
    obj = policies.get("baselinepolicy", name)
    state, _, expected = EXPECTED[name]
    assert state_from_conditions(obj) == state, obj.get("status")
    result = lua_health(lua_bindir, shipped_health_lua(), obj)
    assert result["status"] == expected, (result, obj.get("status"))
    if state == "degraded":
        assert result["message"] == _condition(obj, "Degraded")["message"]
    if state == "ready":
        assert result["message"] == _condition(obj, "Ready")["message"]


@pytest.mark.parametrize("name", _params(3))
def test_flux_health_check_exprs_agree_with_the_conditions(
    policies: Cluster, kstatus_bin: str, name: str
) -> None:
    """The shipped Flux Kustomization's healthCheckExprs, evaluated by Flux's CEL package: the
    way to get Failed for a Degraded policy from Flux without any change to the status."""
    obj = policies.get("baselinepolicy", name)
    assert state_from_conditions(obj) == EXPECTED[name][0], obj.get("status")
    result = kstatus(kstatus_bin, obj, FLUX_KUSTOMIZATION)
    assert result["celStatus"] == EXPECTED_FLUX_CEL[name], result


def test_flux_kustomization_is_valid_for_flux(cluster: Cluster) -> None:
    """Flux itself is not run here; its Kustomization CRD (from the kustomize-controller module)
    accepts the shipped Kustomization in a server-side dry run."""
    crd = module_dir(FLUX_KUSTOMIZE_CONTROLLER) / "config/crd/bases"
    crd_file = crd / "kustomize.toolkit.fluxcd.io_kustomizations.yaml"
    cluster.kubectl("apply", "--server-side", "-f", str(crd_file), timeout=120)
    try:
        wait_established(cluster, "kustomizations.kustomize.toolkit.fluxcd.io")
        cluster.kubectl("create", "namespace", "flux-system", check=False)
        proc = cluster.kubectl(
            "apply", "--dry-run=server", "-f", str(FLUX_KUSTOMIZATION), "-o", "json"
        )
        applied = json.loads(proc.stdout)
        exprs = applied["spec"]["healthCheckExprs"]
        assert [(e["kind"], sorted(e)) for e in exprs] == [
            ("BaselinePolicy", ["apiVersion", "current", "failed", "kind"])
        ]
    finally:
        cluster.kubectl("delete", "namespace", "flux-system", "--ignore-not-found", "--wait=false")
        cluster.kubectl("delete", "-f", str(crd_file), "--ignore-not-found", "--wait=false")


# ----- the status changes kstatus needs, shown with kstatus itself ------------------------------

PROBE_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "statusprobes.e2e.nsbaseline.io"},
    "spec": {
        "group": "e2e.nsbaseline.io",
        "names": {"kind": "StatusProbe", "plural": "statusprobes", "singular": "statusprobe"},
        "scope": "Cluster",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                            # The proposed addition to the BaselinePolicy CRD's status schema.
                            "status": {
                                "type": "object",
                                "default": {"observedGeneration": 0},
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def probe_crd(cluster: Cluster) -> Iterator[Cluster]:
    cluster.apply(PROBE_CRD)
    wait_established(cluster, "statusprobes.e2e.nsbaseline.io")
    try:
        yield cluster
    finally:
        cluster.kubectl("delete", "crd", "statusprobes.e2e.nsbaseline.io", "--wait=false")


def test_a_status_default_makes_a_new_object_in_progress_for_kstatus(
    probe_crd: Cluster, kstatus_bin: str
) -> None:
    """With ``status: {default: {observedGeneration: 0}}`` in the schema, the API server serves
    a just-created object with observedGeneration 0, which kstatus reads as InProgress."""
    probe = {
        "apiVersion": "e2e.nsbaseline.io/v1",
        "kind": "StatusProbe",
        "metadata": {"name": "new"},
        "spec": {"a": 1},
    }
    probe_crd.apply(probe)
    obj = probe_crd.get("statusprobe", "new")
    assert obj["status"] == {"observedGeneration": 0}
    result = kstatus(kstatus_bin, obj)
    assert result["status"] == result["fluxStatus"] == "InProgress", result


def test_a_stalled_condition_mirroring_degraded_makes_kstatus_say_failed(
    policies: Cluster, probe_crd: Cluster, kstatus_bin: str
) -> None:
    """The real statuses of the Degraded and the Ready policy, each plus a Stalled condition
    that mirrors its Degraded condition: kstatus says Failed (with the Degraded message) and
    Current, so the condition fixes Degraded without changing Ready."""
    for name, expected in [(DEGRADED, "Failed"), (READY, "Current")]:
        status = dict(policies.get("baselinepolicy", name)["status"])
        degraded = _condition({"status": status}, "Degraded")
        status["conditions"] = [*status["conditions"], {**degraded, "type": "Stalled"}]
        status["observedGeneration"] = 1
        for cond in status["conditions"]:
            cond["observedGeneration"] = 1
        probe_crd.apply(
            {
                "apiVersion": "e2e.nsbaseline.io/v1",
                "kind": "StatusProbe",
                "metadata": {"name": name},
                "spec": {"a": 1},
            }
        )
        probe_crd.kubectl(
            "patch", "statusprobe", name, "--subresource=status", "--type", "merge",
            "-p", json.dumps({"status": status}),
        )  # fmt: skip
        result = kstatus(kstatus_bin, probe_crd.get("statusprobe", name))
        assert result["status"] == result["fluxStatus"] == expected, result
        if expected == "Failed":
            assert result["message"] == result["fluxMessage"] == degraded["message"]


def test_ready_is_not_reported_before_the_selected_namespaces_are_reconciled(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Health gates (Argo CD sync waves, Flux dependsOn and wait) trust Ready=True at the
    current observedGeneration. Every status the API server served for a new policy is watched:
    none may claim Ready for fewer namespaces than the policy selects."""
    cluster.kubectl("delete", "baselinepolicies", "--all", "--wait=true")
    namespaces = [cluster.namespace("health-race", {LABEL: "race"}) for _ in range(5)]
    logdir = tmp_path_factory.mktemp("race")
    op = OperatorProcess(cluster, logdir).start()
    watch = subprocess.Popen(
        [cluster.kubectl_bin, "get", "baselinepolicy", "--watch", "-o", "json",
         "--field-selector", "metadata.name=hc-race"],
        stdout=subprocess.PIPE,
        text=True,
        env=cluster.env,
    )  # fmt: skip
    try:
        cluster.apply(
            baseline_policy("hc-race", namespaceSelector={"matchLabels": {LABEL: "race"}})
        )

        def converged() -> bool:
            obj = cluster.get("baselinepolicy", "hc-race")
            return (
                obj is not None
                and state_from_conditions(obj) == "ready"
                and obj["status"]["compliantNamespaces"] == len(namespaces)
            )

        wait_for(converged, 120, what="hc-race compliant in all 5 namespaces")
    finally:
        watch.terminate()
        out, _ = watch.communicate(timeout=30)
        op.stop()
        cluster.kubectl("delete", "baselinepolicy", "hc-race", "--ignore-not-found")
        cluster.kubectl("delete", "namespace", *namespaces, "--wait=false")
    seen = [json.loads(doc) for doc in _json_documents(out)]
    early = [
        (o["status"].get("matchedNamespaces"), _condition(o, "Ready").get("reason"))
        for o in seen
        if state_from_conditions(o) == "ready"
        and o["status"].get("matchedNamespaces") != len(namespaces)
    ]
    assert seen, "the watch saw nothing"
    assert not early, f"Ready reported early (matched, reason): {early}"


def _json_documents(text: str) -> list[str]:
    """Split ``kubectl get --watch -o json`` output (concatenated pretty-printed objects)."""
    decoder = json.JSONDecoder()
    docs, index = [], 0
    while index < len(text):
        while index < len(text) and text[index].isspace():
            index += 1
        if index >= len(text):
            break
        obj, end = decoder.raw_decode(text, index)
        docs.append(json.dumps(obj))
        index = end
    return docs
