"""The optional admission components install with ``kubectl apply -k`` and with the chart, are
off in the default install, type-check cleanly on the real API server, and are reported by
:func:`nsbaseline.protections.protections` from what the cluster holds.

A real install binds the opt-in guard and the guardrail cluster-wide; both exempt the admin and
the operator, and the module removes them (not the pod gate, see ``tests.support.gate``).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from nsbaseline import protections
from tests.support.deploy import DEPLOY, by_kind_name, helm_template, kustomize
from tests.support.gate import component_objects, ensure_pod_gate
from tests.support.kube import E2E_DIR, Cluster, wait_for

pytestmark = pytest.mark.e2e

COMPONENTS = ("pod-gate", "opt-in-guard", "guardrail")
NEW_POLICIES = {
    protections.OPT_IN_GUARD_POLICY,
    protections.GUARDRAIL_POLICY,
    *protections.POD_GATE_POLICIES.values(),
}


def _overlay() -> str:
    """A user's overlay: the default install plus every optional component (as docs show)."""
    folder = E2E_DIR / "overlay-all-protections"
    folder.mkdir(parents=True, exist_ok=True)
    deploy = os.path.relpath(DEPLOY, folder)
    (folder / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [deploy],
                "components": [f"{deploy}/components/{c}" for c in COMPONENTS],
            }
        )
    )
    return str(folder)


def _admission(cluster: Cluster) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    vaps = cluster.items("validatingadmissionpolicies")
    bindings = cluster.items("validatingadmissionpolicybindings")
    return vaps, bindings


@pytest.fixture(scope="module")
def installed(cluster: Cluster) -> Iterator[list[dict[str, Any]]]:
    ensure_pod_gate(cluster)  # first, so that the apply below only re-applies it
    overlay = _overlay()
    docs = kustomize(cluster, E2E_DIR / "overlay-all-protections")
    proc = cluster.kubectl("apply", "-k", overlay, timeout=120)
    assert "error" not in proc.stderr.lower(), proc.stderr
    yield docs
    # The default install's own bindings too: left bound, they would refuse the admin-run
    # operators of later tests (the operator's exemption is for its ServiceAccount).
    for name in (
        protections.OPT_IN_GUARD_POLICY,
        protections.GUARDRAIL_POLICY,
        protections.TAMPER_PROOF_POLICY,
        protections.DELETION_ORDER_POLICY,
    ):
        cluster.kubectl("delete", "validatingadmissionpolicybinding", name, "--ignore-not-found")
    for name in (protections.OPT_IN_GUARD_POLICY, protections.GUARDRAIL_POLICY):
        cluster.kubectl("delete", "validatingadmissionpolicy", name, "--ignore-not-found")


def test_every_component_installs_with_kubectl_apply_k_and_type_checks_cleanly(
    cluster: Cluster, installed: list[dict[str, Any]]
) -> None:
    shipped = {d["metadata"]["name"] for d in installed if d["kind"] == "ValidatingAdmissionPolicy"}
    assert shipped == {
        protections.TAMPER_PROOF_POLICY,
        protections.DELETION_ORDER_POLICY,
        *NEW_POLICIES,
    }

    def checked(name: str) -> dict[str, Any]:
        vap = cluster.get("validatingadmissionpolicy", name)
        status = vap.get("status") or {}
        return status if status.get("observedGeneration") == vap["metadata"]["generation"] else {}

    for name in NEW_POLICIES:
        status = wait_for(functools.partial(checked, name), 60, what=f"the type check of {name}")
        assert not (status.get("typeChecking") or {}).get("expressionWarnings"), (name, status)
    # The example policy and its gate binding go in after the CRD, like the README says.
    cluster.kubectl("apply", "-k", str(DEPLOY / "examples"), "--dry-run=server")


def test_status_reports_every_installed_protection_from_the_cluster(
    cluster: Cluster, installed: list[dict[str, Any]]
) -> None:
    vaps, bindings = _admission(cluster)
    example = yaml.safe_load((DEPLOY / "examples" / "baselinepolicy.yaml").read_text())
    gate = protections.gate_binding(example)
    assert gate is not None
    report = {p.name: p for p in protections.protections(vaps, [*bindings, gate], [example])}
    assert {n: p.state for n, p in report.items()} == dict.fromkeys(report, "on"), report
    assert report["pod-gate"].detail.endswith("in namespaces of baseline")


def test_the_components_are_off_in_the_default_and_base_installs(cluster: Cluster) -> None:
    for folder in (DEPLOY, DEPLOY / "base"):
        names = {d["metadata"]["name"] for d in kustomize(cluster, folder)}
        assert not names & NEW_POLICIES, folder
    default = by_kind_name(helm_template())
    assert not {name for _, name in default} & NEW_POLICIES


# ----- Helm -------------------------------------------------------------------------------------
def _without_labels(doc: dict[str, Any]) -> dict[str, Any]:
    doc = json.loads(json.dumps(doc))
    doc["metadata"].pop("labels", None)
    return doc


POLICIES = [
    {"name": "defaults", "spec": {}},
    {
        "name": "custom",
        "spec": {
            "namespaceSelector": {
                "matchLabels": {"team": "payments"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["prod"]}],
            },
            "excludedNamespaces": ["legacy", "batch"],
        },
    },
    {"name": "ingress-only", "spec": {"defaultDeny": {"egress": False}}},
    {"name": "everything", "spec": {"namespaceSelector": {}, "excludedNamespaces": []}},
    {"name": "audit", "spec": {"mode": "Audit"}},
    {"name": "open", "spec": {"defaultDeny": {"ingress": False, "egress": False}}},
]


@pytest.fixture(scope="module")
def helm_all() -> dict[tuple[str, str], dict[str, Any]]:
    values = E2E_DIR / "helm-all-protections.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "podGate": {"enabled": True, "policies": POLICIES[1:]},
                "defaultPolicy": POLICIES[0],
                "optInGuard": {
                    "enabled": True,
                    "allowedUsers": ["system:serviceaccount:argocd:argocd-application-controller"],
                },
                "guardrail": {"enabled": True, "allowedGroups": ["platform-admins"]},
            }
        )
    )
    return by_kind_name(helm_template("-f", str(values)))


def test_the_chart_renders_the_components_policies_exactly(
    helm_all: dict[tuple[str, str], dict[str, Any]],
) -> None:
    for component in COMPONENTS:
        shipped = DEPLOY / "components" / component / "validatingadmissionpolicies.yaml"
        for doc in component_objects(shipped):
            rendered = helm_all[(doc["kind"], doc["metadata"]["name"])]
            if (
                doc["metadata"]["name"]
                in (
                    protections.OPT_IN_GUARD_POLICY,
                    protections.GUARDRAIL_POLICY,
                )
                and doc["kind"] == "ValidatingAdmissionPolicy"
            ):
                doc = json.loads(json.dumps(doc))
                rendered = json.loads(json.dumps(rendered))
                for vap in (doc, rendered):
                    vap["spec"]["variables"] = vap["spec"]["variables"][2:]  # identities: below
            assert _without_labels(rendered) == _without_labels(doc), doc["metadata"]["name"]


def test_the_chart_takes_the_allowed_identities_from_its_values(
    helm_all: dict[tuple[str, str], dict[str, Any]],
) -> None:
    def identities(name: str) -> tuple[list[str], list[str]]:
        variables = {
            v["name"]: v["expression"]
            for v in helm_all[("ValidatingAdmissionPolicy", name)]["spec"]["variables"]
        }
        return yaml.safe_load(variables["allowedUsers"]), yaml.safe_load(variables["allowedGroups"])

    assert identities(protections.OPT_IN_GUARD_POLICY) == (
        ["system:serviceaccount:argocd:argocd-application-controller"],
        ["system:masters"],
    )
    assert identities(protections.GUARDRAIL_POLICY) == (
        ["system:serviceaccount:nsbaseline-system:nsbaseline"],
        ["platform-admins"],
    )


def test_the_chart_binds_the_gate_for_each_policy_as_gate_binding_does(
    helm_all: dict[tuple[str, str], dict[str, Any]],
) -> None:
    rendered = {
        name: doc
        for (kind, name), doc in helm_all.items()
        if kind == "ValidatingAdmissionPolicyBinding" and name.startswith("pods-wait-for-")
    }
    expected = {}
    for entry in POLICIES:
        binding = protections.gate_binding(
            {"metadata": {"name": entry["name"]}, "spec": entry["spec"]}
        )
        if binding is not None:
            expected[binding["metadata"]["name"]] = binding
    assert set(rendered) == set(expected)  # no binding for Audit mode or no default-deny
    for name, binding in expected.items():
        assert rendered[name]["spec"] == binding["spec"], name


def test_the_charts_components_are_accepted_by_the_api_server(
    cluster: Cluster, helm_all: dict[tuple[str, str], dict[str, Any]]
) -> None:
    docs = [
        d
        for (kind, _), d in helm_all.items()
        if kind.startswith("ValidatingAdmissionPolicy")
        and d["metadata"]["name"] != protections.TAMPER_PROOF_POLICY
    ]
    text = yaml.safe_dump_all(docs, sort_keys=False)
    proc = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=text, timeout=120)
    assert proc.stdout.count("(server dry run)") == len(docs), proc.stdout
