"""The pod gate's per-policy bindings and the status of the admission protections, without a
cluster; and the generated admission components agree with the code that describes them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from hack import gen_admission
from nsbaseline import protections

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def _bp(name: str = "baseline", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "nsbaseline.io/v1alpha1",
        "kind": "BaselinePolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _vaps(*components: str) -> list[dict[str, Any]]:
    docs = [d for c in components for d in gen_admission.components()[c]]
    return [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"]


def _bindings(*components: str) -> list[dict[str, Any]]:
    docs = [d for c in components for d in gen_admission.components()[c]]
    return [d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"]


TAMPER = _docs(DEPLOY / "admission" / "validatingadmissionpolicy.yaml") + _docs(
    DEPLOY / "admission" / "deletion-order.yaml"
)


# ----- gate bindings --------------------------------------------------------------------------
def test_gate_binding_for_the_defaults_selects_opted_in_namespaces_minus_system_ones() -> None:
    binding = protections.gate_binding(_bp())
    assert binding is not None
    assert binding["metadata"]["name"] == (
        "pods-wait-for-networkpolicy-nsbaseline-baseline-default-deny"
    )
    assert binding["spec"] == {
        "policyName": "nsbaseline-pod-gate",
        "validationActions": ["Deny"],
        "paramRef": {"name": "nsbaseline-baseline-default-deny", "parameterNotFoundAction": "Deny"},
        "matchResources": {
            "namespaceSelector": {
                "matchLabels": {"nsbaseline.io/enabled": "true"},
                "matchExpressions": [
                    {
                        "key": "kubernetes.io/metadata.name",
                        "operator": "NotIn",
                        "values": ["kube-node-lease", "kube-public", "kube-system"],
                    }
                ],
            }
        },
    }


def test_gate_binding_copies_the_policy_selector_and_exclusions() -> None:
    expr = {"key": "tier", "operator": "In", "values": ["prod"]}
    binding = protections.gate_binding(
        _bp(
            "prod",
            namespaceSelector={"matchLabels": {"team": "x"}, "matchExpressions": [expr]},
            excludedNamespaces=["legacy"],
        )
    )
    assert binding is not None
    assert binding["spec"]["matchResources"]["namespaceSelector"] == {
        "matchLabels": {"team": "x"},
        "matchExpressions": [
            expr,
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["legacy"]},
        ],
    }
    everything = protections.gate_binding(_bp(namespaceSelector={}, excludedNamespaces=[]))
    assert everything is not None
    assert everything["spec"]["matchResources"] == {"namespaceSelector": {}}


@pytest.mark.parametrize(
    ("spec", "policy"),
    [
        ({"defaultDeny": {"ingress": True, "egress": False}}, "nsbaseline-pod-gate-ingress"),
        ({"defaultDeny": {"ingress": False, "egress": True}}, "nsbaseline-pod-gate-egress"),
        ({}, "nsbaseline-pod-gate"),
    ],
)
def test_gate_binding_asks_for_the_directions_the_policy_denies(
    spec: dict[str, Any], policy: str
) -> None:
    binding = protections.gate_binding(_bp(**spec))
    assert binding is not None and binding["spec"]["policyName"] == policy


@pytest.mark.parametrize(
    "spec", [{"mode": "Audit"}, {"defaultDeny": {"ingress": False, "egress": False}}]
)
def test_no_gate_binding_where_pods_never_wait(spec: dict[str, Any]) -> None:
    assert protections.gate_binding(_bp(**spec)) is None


def test_each_direction_has_a_gate_policy_that_checks_it() -> None:
    vaps = {v["metadata"]["name"]: v for v in _vaps("pod-gate")}
    assert set(vaps) == set(protections.POD_GATE_POLICIES.values())
    for directions, name in protections.POD_GATE_POLICIES.items():
        (validation,) = vaps[name]["spec"]["validations"]
        for d in ("Ingress", "Egress"):
            assert (f"'{d}' in params.spec.policyTypes" in validation["expression"]) == (
                d in directions
            )
        assert vaps[name]["spec"]["failurePolicy"] == "Fail"  # "no params found" must refuse


# ----- the status report ------------------------------------------------------------------------
def _states(report: list[protections.Protection]) -> dict[str, str]:
    return {p.name: p.state for p in report}


def _one(report: list[protections.Protection], name: str) -> protections.Protection:
    (found,) = [p for p in report if p.name == name]
    return found


def test_nothing_installed_reports_every_protection_off_with_where_to_get_it() -> None:
    report = protections.protections([], [], [])
    assert _states(report) == dict.fromkeys(
        ["tamper-proof", "deletion-order", "pod-gate", "opt-in-guard", "guardrail"], "off"
    )
    assert all("not installed (" in p.detail for p in report)


def test_the_default_install_reports_only_tamper_proofing_and_deletion_order() -> None:
    vaps = [d for d in TAMPER if d["kind"] == "ValidatingAdmissionPolicy"]
    bindings = [d for d in TAMPER if d["kind"] == "ValidatingAdmissionPolicyBinding"]
    report = protections.protections(vaps, bindings, [_bp()])
    assert _states(report) == {
        "tamper-proof": "on",
        "deletion-order": "on",
        "pod-gate": "off",
        "opt-in-guard": "off",
        "guardrail": "off",
    }


def test_everything_installed_and_bound_reports_on_and_what_is_protected() -> None:
    vaps = [d for d in TAMPER if d["kind"] == "ValidatingAdmissionPolicy"]
    vaps += _vaps("pod-gate", "opt-in-guard", "guardrail")
    bindings = [d for d in TAMPER if d["kind"] == "ValidatingAdmissionPolicyBinding"]
    bindings += _bindings("pod-gate", "opt-in-guard", "guardrail")
    policies = [_bp(), _bp("strict", namespaceSelector={"matchLabels": {"tier": "strict"}})]
    bindings += [b for b in map(protections.gate_binding, policies) if b]
    report = {p.name: p for p in protections.protections(vaps, bindings, policies)}
    assert {n: p.state for n, p in report.items()} == dict.fromkeys(report, "on")
    assert report["pod-gate"].detail.endswith("in namespaces of baseline, strict")
    assert "widen" in report["guardrail"].detail
    assert report["pod-gate"].row[0] == "pod-gate"


def test_pod_gate_problems_missing_stale_and_orphan_bindings_are_named() -> None:
    vaps = _vaps("pod-gate")
    fine, missing, changed = _bp("fine"), _bp("missing"), _bp("changed")
    stale = protections.gate_binding(changed)
    assert stale is not None
    changed["spec"]["excludedNamespaces"] = ["legacy"]
    orphan = protections.gate_binding(_bp("deleted"))
    audit = _bp("audit", mode="Audit")
    audit_binding = protections.gate_binding(_bp("audit"))
    bindings = [
        protections.gate_binding(fine),
        stale,
        orphan,
        audit_binding,
        *_bindings("pod-gate"),
    ]
    report = protections.protections(
        vaps, [b for b in bindings if b], [fine, missing, changed, audit]
    )
    gate = next(p for p in report if p.name == "pod-gate")
    assert gate.state == "partial"
    assert gate.detail.endswith("in namespaces of fine")
    text = "\n".join(gate.problems)
    assert "BaselinePolicy missing has no gate binding" in text
    assert "no longer matches BaselinePolicy changed" in text
    assert "nsbaseline-deleted-default-deny" in text and "can never start" in text
    assert "nsbaseline-audit-default-deny" in text  # Audit mode writes no default-deny


def test_a_binding_that_only_warns_is_reported_as_such() -> None:
    vaps = _vaps("guardrail")
    binding = copy.deepcopy(_bindings("guardrail")[0])
    binding["spec"]["validationActions"] = ["Warn"]
    guardrail = _one(protections.protections(vaps, [binding]), "guardrail")
    assert (guardrail.name, guardrail.state) == ("guardrail", "warn-only")


def test_a_policy_without_a_binding_protects_nothing() -> None:
    report = protections.protections(_vaps("opt-in-guard"), [])
    assert _states(report)["opt-in-guard"] == "off"
    assert "not bound" in _one(report, "opt-in-guard").detail


def test_without_the_policies_the_gate_lists_the_policies_it_binds() -> None:
    binding = protections.gate_binding(_bp())
    assert binding is not None
    report = protections.protections(_vaps("pod-gate"), [*_bindings("pod-gate"), binding])
    gate = _one(report, "pod-gate")
    assert gate.state == "on" and "baseline" in gate.detail


def test_the_pod_gate_without_its_anchor_binding_is_reported() -> None:
    """kube-apiserver stops a built-in paramKind's cache when no binding uses it
    (kubernetes#133827): the anchor binding, which matches nothing, keeps it running."""
    (anchor,) = _bindings("pod-gate")
    assert anchor["metadata"]["name"] == protections.POD_GATE_ANCHOR
    assert anchor["spec"]["matchResources"]["namespaceSelector"] == {
        "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "DoesNotExist"}]
    }
    binding = protections.gate_binding(_bp())
    assert binding is not None
    gate = _one(protections.protections(_vaps("pod-gate"), [binding], [_bp()]), "pod-gate")
    assert gate.state == "partial"
    assert "kubernetes#133827" in gate.problems[0]


# ----- the files ------------------------------------------------------------------------------
def test_generated_components_and_chart_templates_are_up_to_date() -> None:
    assert gen_admission.stale() == [], "run `make admission`"


def test_components_are_optional_and_left_out_of_the_default_and_base_installs() -> None:
    for name in ("pod-gate", "opt-in-guard", "guardrail"):
        kustomization = yaml.safe_load(
            (DEPLOY / "components" / name / "kustomization.yaml").read_text()
        )
        assert kustomization["kind"] == "Component"
    top = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert top["components"] == ["admission"]
    values = yaml.safe_load((REPO / "charts" / "nsbaseline" / "values.yaml").read_text())
    assert [values[k]["enabled"] for k in ("podGate", "optInGuard", "guardrail")] == [False] * 3


def test_the_example_gate_binding_is_the_one_built_for_the_example_policy() -> None:
    (example,) = _docs(DEPLOY / "examples" / "baselinepolicy.yaml")
    (binding,) = _docs(DEPLOY / "examples" / "pod-gate-binding.yaml")
    assert binding == protections.gate_binding(example)
    listed = yaml.safe_load((DEPLOY / "examples" / "kustomization.yaml").read_text())
    assert "pod-gate-binding.yaml" in listed["resources"]


def test_the_guardrail_trusts_the_operator_service_account_the_rbac_binds() -> None:
    (binding,) = [
        d for d in _docs(DEPLOY / "base" / "rbac.yaml") if d["kind"] == "ClusterRoleBinding"
    ]
    (subject,) = binding["subjects"]
    operator = f"system:serviceaccount:{subject['namespace']}:{subject['name']}"
    vap = _vaps("guardrail")[0]
    users = {v["name"]: v["expression"] for v in vap["spec"]["variables"]}["allowedUsers"]
    assert yaml.safe_load(users) == [operator]
