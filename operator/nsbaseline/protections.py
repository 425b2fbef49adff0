"""Which admission protections are installed, and what they protect. Pure: no I/O.

nsbaseline ships four ValidatingAdmissionPolicies (native CEL admission, no webhook):

* ``tamper-proof`` (on by default, ``deploy/admission``): hand edits and deletes of generated
  NetworkPolicies are refused;
* ``pod-gate`` (optional, ``deploy/components/pod-gate``): a pod cannot be created in a namespace
  an Enforce-mode BaselinePolicy with default-deny selects until that namespace's default-deny
  exists (one binding per such BaselinePolicy, built by :func:`gate_binding`);
* ``opt-in-guard`` (optional, ``deploy/components/opt-in-guard``): only allowed identities may
  take a namespace out of a BaselinePolicy or change its ``nsbaseline.io/`` annotations;
* ``guardrail`` (optional, ``deploy/components/guardrail``): tenant NetworkPolicies that widen a
  BaselinePolicy's floor are refused (the rules of :mod:`nsbaseline.widening`).

:func:`protections` turns the ValidatingAdmissionPolicies, bindings and BaselinePolicies found in
a cluster into one :class:`Protection` per component, for ``nsbaseline status``. Why the pod gate
needs one binding per policy, and why the operator does not write those bindings itself, is in
docs/admission.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nsbaseline import names
from nsbaseline.spec import defaulted

TAMPER_PROOF = "tamper-proof"
DELETION_ORDER = "deletion-order"
POD_GATE = "pod-gate"
OPT_IN_GUARD = "opt-in-guard"
GUARDRAIL = "guardrail"

TAMPER_PROOF_POLICY = "nsbaseline-protect-managed-networkpolicies"
DELETION_ORDER_POLICY = "nsbaseline-keep-dns-until-default-deny-is-gone"
OPT_IN_GUARD_POLICY = "nsbaseline-opt-in-guard"
GUARDRAIL_POLICY = "nsbaseline-guardrail"
#: The pod gate's policies, by the directions the default-deny must deny.
POD_GATE_POLICIES: Mapping[tuple[str, ...], str] = {
    ("Ingress", "Egress"): "nsbaseline-pod-gate",
    ("Ingress",): "nsbaseline-pod-gate-ingress",
    ("Egress",): "nsbaseline-pod-gate-egress",
}
#: A binding of the pod gate that matches nothing: it keeps kube-apiserver's NetworkPolicy
#: parameter cache running while no BaselinePolicy is bound (kubernetes#133827).
POD_GATE_ANCHOR = "nsbaseline-pod-gate-anchor"
#: Where each optional component comes from, for "not installed" hints.
SOURCES: Mapping[str, str] = {
    TAMPER_PROOF: "deploy/admission (in the default install), Helm vap.enabled",
    DELETION_ORDER: "deploy/admission (in the default install), Helm vap.enabled",
    POD_GATE: "deploy/components/pod-gate, Helm podGate.enabled",
    OPT_IN_GUARD: "deploy/components/opt-in-guard, Helm optInGuard.enabled",
    GUARDRAIL: "deploy/components/guardrail, Helm guardrail.enabled",
}
PROTECTS: Mapping[str, str] = {
    TAMPER_PROOF: "hand edits and deletes of generated NetworkPolicies are refused",
    DELETION_ORDER: "allow pieces outlive their default-deny when a BaselinePolicy is deleted "
    "(DNS never breaks)",
    OPT_IN_GUARD: "only allowed identities may take a namespace out of a BaselinePolicy or "
    "change its nsbaseline.io/ annotations",
    GUARDRAIL: "tenant NetworkPolicies that widen a BaselinePolicy are refused",
}


@dataclass(frozen=True)
class Protection:
    """One admission component: ``on``, ``partial``, ``warn-only`` or ``off``."""

    name: str
    state: str
    detail: str
    problems: tuple[str, ...] = ()

    @property
    def row(self) -> tuple[str, str, str]:
        """(PROTECTION, STATE, DETAIL) for a status table; problems follow the detail."""
        return self.name, self.state, "; ".join((self.detail, *self.problems))


def gate_binding_name(policy: str) -> str:
    """Reads as the reason in the API server's fixed refusal ("... with binding 'pods-wait-for-
    networkpolicy-nsbaseline-baseline-default-deny' denied request: ... no params found ...")."""
    return f"pods-wait-for-networkpolicy-{names.object_name(policy, names.DEFAULT_DENY)}"


def gate_directions(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """The directions a (defaulted) spec's default-deny denies, or () when pods need not wait."""
    if spec.get("mode", "Enforce") != "Enforce":
        return ()
    deny = spec.get("defaultDeny") or {}
    return tuple(
        d for d, key in (("Ingress", "ingress"), ("Egress", "egress")) if deny.get(key, True)
    )


def gate_binding(policy: Mapping[str, Any]) -> dict[str, Any] | None:
    """The pod gate's binding for one BaselinePolicy (a full object), or None when its pods need
    not wait (Audit mode, or no default-deny).

    The binding's namespaceSelector is the policy's, plus its exclusions as a ``NotIn`` on the
    immutable name label, so the API server itself knows which namespaces the policy selects; the
    parameter is that namespace's default-deny, looked up by name in the pod's namespace.
    """
    name = str(policy["metadata"]["name"])
    spec = defaulted(dict(policy.get("spec") or {}))
    directions = gate_directions(spec)
    if not directions:
        return None
    selector = dict(spec.get("namespaceSelector") or {})
    namespace_selector: dict[str, Any] = {}
    if selector.get("matchLabels"):
        namespace_selector["matchLabels"] = dict(selector["matchLabels"])
    expressions = [dict(e) for e in selector.get("matchExpressions") or []]
    excluded = sorted(spec.get("excludedNamespaces") or [])
    if excluded:
        expressions.append(
            {"key": names.NAMESPACE_NAME_LABEL, "operator": "NotIn", "values": excluded}
        )
    if expressions:
        namespace_selector["matchExpressions"] = expressions
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {
            "name": gate_binding_name(name),
            "labels": {"app.kubernetes.io/part-of": "nsbaseline", names.POLICY_LABEL: name},
        },
        "spec": {
            "policyName": POD_GATE_POLICIES[directions],
            "validationActions": ["Deny"],
            "paramRef": {
                "name": names.object_name(name, names.DEFAULT_DENY),
                "parameterNotFoundAction": "Deny",
            },
            "matchResources": {"namespaceSelector": namespace_selector},
        },
    }


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _enforcing(binding: Mapping[str, Any]) -> bool:
    return "Deny" in ((binding.get("spec") or {}).get("validationActions") or [])


def _bound(
    name: str, vaps: Sequence[Mapping[str, Any]], bindings: Sequence[Mapping[str, Any]], what: str
) -> Protection:
    """A component of one policy and any binding to it."""
    ours = [b for b in bindings if (b.get("spec") or {}).get("policyName") == name]
    if not any(_name(v) == name for v in vaps):
        hint = f"not installed ({SOURCES[what]})"
        if ours:
            return Protection(what, "off", hint, (f"binding {_name(ours[0])} has no policy",))
        return Protection(what, "off", hint)
    if not ours:
        return Protection(what, "off", f"policy {name} is installed but not bound")
    if not any(_enforcing(b) for b in ours):
        return Protection(what, "warn-only", PROTECTS[what] + " (binding warns or audits only)")
    scoped = all((b.get("spec") or {}).get("matchResources") for b in ours if _enforcing(b))
    return Protection(
        what, "on", PROTECTS[what] + (" (in namespaces its binding selects)" if scoped else "")
    )


def _comparable(binding: Mapping[str, Any]) -> dict[str, Any]:
    spec = dict(binding.get("spec") or {})
    spec.setdefault("matchResources", {})
    match = {
        k: v
        for k, v in (spec["matchResources"] or {}).items()
        if k in ("namespaceSelector", "objectSelector") and v
    }
    return {
        "policyName": spec.get("policyName"),
        "validationActions": sorted(spec.get("validationActions") or []),
        "paramRef": spec.get("paramRef"),
        "match": match,
    }


def _pod_gate(
    vaps: Sequence[Mapping[str, Any]],
    bindings: Sequence[Mapping[str, Any]],
    policies: Sequence[Mapping[str, Any]] | None,
) -> Protection:
    installed = {_name(v) for v in vaps} & set(POD_GATE_POLICIES.values())
    found = [
        b
        for b in bindings
        if (b.get("spec") or {}).get("policyName") in POD_GATE_POLICIES.values()
        and _name(b) != POD_GATE_ANCHOR
    ]
    if not installed:
        return Protection(POD_GATE, "off", f"not installed ({SOURCES[POD_GATE]})")
    anchor: list[str] = []
    if not any(_name(b) == POD_GATE_ANCHOR for b in bindings):
        anchor.append(
            f"binding {POD_GATE_ANCHOR} is missing: without it kube-apiserver stops its "
            "NetworkPolicy cache whenever no policy is bound, and the gate then refuses pods "
            "until the API server restarts (kubernetes#133827); re-apply the component"
        )
    by_param = {
        str(((b.get("spec") or {}).get("paramRef") or {}).get("name", "")): b for b in found
    }
    if policies is None:
        targets = sorted(
            str(b["metadata"].get("labels", {}).get(names.POLICY_LABEL) or _name(b)) for b in found
        )
        if not targets:
            return Protection(
                POD_GATE, "off", "installed but no BaselinePolicy is bound", tuple(anchor)
            )
        return Protection(
            POD_GATE,
            "partial" if anchor else "on",
            "pods wait for their namespace's default-deny (bindings: " + ", ".join(targets) + ")",
            tuple(anchor),
        )
    gated: list[str] = []
    problems: list[str] = list(anchor)
    expected_params: set[str] = set()
    for policy in sorted(policies, key=_name):
        want = gate_binding(policy)
        if want is None:
            continue
        param = want["spec"]["paramRef"]["name"]
        expected_params.add(param)
        have = by_param.get(param)
        if want["spec"]["policyName"] not in installed:
            problems.append(
                f"policy {want['spec']['policyName']} for BaselinePolicy {_name(policy)} is missing"
            )
        elif have is None:
            problems.append(
                f"BaselinePolicy {_name(policy)} has no gate binding {want['metadata']['name']}"
            )
        elif _comparable(have) != _comparable(want):
            problems.append(
                f"binding {_name(have)} no longer matches BaselinePolicy {_name(policy)} "
                "(selector, exclusions or directions changed): re-apply it"
            )
        else:
            gated.append(_name(policy))
    for param, binding in sorted(by_param.items()):
        if param not in expected_params:
            problems.append(
                f"binding {_name(binding)} waits for {param}, which no Enforce-mode BaselinePolicy "
                "with default-deny creates: pods it selects can never start; delete it"
            )
    if not gated:
        state = "off"
        detail = "installed but gates no BaselinePolicy"
    else:
        state = "partial" if problems else "on"
        detail = "pods wait for their namespace's default-deny in namespaces of " + ", ".join(gated)
    return Protection(POD_GATE, state, detail, tuple(problems))


def protections(
    vaps: Sequence[Mapping[str, Any]],
    bindings: Sequence[Mapping[str, Any]],
    policies: Sequence[Mapping[str, Any]] | None = None,
) -> list[Protection]:
    """The state of each protection, from the ValidatingAdmissionPolicies and bindings in the
    cluster (and, to check the pod gate's per-policy bindings, its BaselinePolicies)."""
    return [
        _bound(TAMPER_PROOF_POLICY, vaps, bindings, TAMPER_PROOF),
        _bound(DELETION_ORDER_POLICY, vaps, bindings, DELETION_ORDER),
        _pod_gate(vaps, bindings, policies),
        _bound(OPT_IN_GUARD_POLICY, vaps, bindings, OPT_IN_GUARD),
        _bound(GUARDRAIL_POLICY, vaps, bindings, GUARDRAIL),
    ]


__all__ = [
    "DELETION_ORDER",
    "DELETION_ORDER_POLICY",
    "GUARDRAIL",
    "GUARDRAIL_POLICY",
    "OPT_IN_GUARD",
    "OPT_IN_GUARD_POLICY",
    "POD_GATE",
    "POD_GATE_ANCHOR",
    "POD_GATE_POLICIES",
    "TAMPER_PROOF",
    "TAMPER_PROOF_POLICY",
    "Protection",
    "gate_binding",
    "gate_binding_name",
    "protections",
]
