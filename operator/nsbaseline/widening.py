"""Which tenant NetworkPolicies widen a BaselinePolicy's floor. Pure: no I/O.

NetworkPolicy v1 is additive: a tenant who may create NetworkPolicies can always open what the
baseline closed. The optional guardrail (a ValidatingAdmissionPolicy, ``deploy/components/
guardrail``) refuses such policies at admission; ``nsbaseline lint`` reports them offline. Both
follow the rules in this module, with the same words: ``hack/gen_admission.py`` writes the CEL
from the message templates of :mod:`nsbaseline.widening_codes`, and one table of cases in the
tests drives both (see ``tests/support/widening_cases.py``).

A NetworkPolicy in a namespace that an Enforce-mode BaselinePolicy selects is refused when it:

* ``ingress-from-anywhere``: has an ingress rule without ``from`` (every source), or an ingress
  ``ipBlock`` of prefix length 0 (every address) -- while the policy denies ingress;
* ``ingress-from-all-namespaces``: has an ingress peer whose ``namespaceSelector`` matches every
  namespace (empty, or only ``NotIn``/``DoesNotExist`` terms or ``Exists`` on the name label);
* ``monitoring-ports`` / ``ingress-controller-ports``: lets the monitoring or ingress-controller
  namespace (named by ``kubernetes.io/metadata.name``) in on ports beyond what the policy allows
  that peer (its ``ports``, or the namespace's ``nsbaseline.io/*-ports`` annotation); only when
  that piece is enabled and the list is not empty (empty means every port);
* ``egress-to-anywhere``: has an egress rule without ``to`` -- while the policy denies egress;
* ``egress-to-all-namespaces``: has an egress peer whose ``namespaceSelector`` matches every
  namespace;
* ``egress-ipblock-outside-policy``: sends egress to an ``ipBlock`` that is not inside one of the
  policy's ``egressCIDRs`` (minus their ``except``), or its node-local DNS address;
* ``egress-ipblock-ports``: sends egress to an allowed network on ports that no entry covering
  that network allows.

Peers in the policy's own namespace (a bare ``podSelector``) and peers in namespaces named one by
one are never refused, and neither is anything that only narrows. Findings come in the order the
admission policy evaluates its validations, so the first finding is the message the API server
returns.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nsbaseline import names
from nsbaseline.selection import selector_matches
from nsbaseline.spec import defaulted
from nsbaseline.widening_codes import (
    INGRESS_PORTS_ANNOTATION,
    MESSAGES,
    MONITORING_PORTS_ANNOTATION,
)
from nsbaseline.widening_terms import (
    allowed_networks,
    allowed_ports,
    first_uncovered,
    inside,
    names_namespace,
    open_selector,
    prefix,
    show,
    show_network,
)

#: A JSON path inside the NetworkPolicy, as a tuple (``("spec", "ingress", 0, "from")``).
Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Widening:
    """One way a NetworkPolicy widens a BaselinePolicy: the rule, where, and why."""

    code: str
    path: Path
    text: str
    policy: str
    #: Index into :data:`~nsbaseline.widening_codes.MESSAGES`: the admission policy's validation
    #: that refuses it.
    check: int

    @property
    def field(self) -> str:
        """``spec.ingress[0].from[1].namespaceSelector``."""
        out = ""
        for part in self.path:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
        return out

    def __str__(self) -> str:
        """The words the admission policy uses after ``NetworkPolicy <ns>/<name> ``."""
        return f"{self.text} ({self.field}) [{self.code}]"


@dataclass(frozen=True)
class NamespaceView:
    """What the rules may know about the NetworkPolicy's namespace (as admission does)."""

    name: str
    labels: Mapping[str, str] | None = None  # None: unknown, assume every policy selects it
    annotations: Mapping[str, str] | None = None

    @property
    def effective_labels(self) -> dict[str, str]:
        return {**(self.labels or {}), names.NAMESPACE_NAME_LABEL: self.name}


def selects(spec: Mapping[str, Any], namespace: NamespaceView) -> bool:
    """Whether a (defaulted) BaselinePolicy spec enforces a baseline in ``namespace``.

    Only Enforce mode: in Audit mode there is no floor to protect. An unknown namespace (no labels
    known, e.g. linting files without their Namespace) is assumed selected unless excluded.
    """
    if spec.get("mode", "Enforce") != "Enforce":
        return False
    if namespace.name in (spec.get("excludedNamespaces") or ()):
        return False
    if namespace.labels is None:
        return True
    return selector_matches(spec.get("namespaceSelector") or {}, namespace.effective_labels)


def widenings(
    netpol: Mapping[str, Any], policy: Mapping[str, Any], namespace: NamespaceView | None = None
) -> list[Widening]:
    """How ``netpol`` widens the BaselinePolicy ``policy`` (a full object), in check order."""
    meta = netpol.get("metadata") or {}
    ns = namespace or NamespaceView(str(meta.get("namespace") or "default"))
    spec = defaulted(dict(policy.get("spec") or {}))
    if not selects(spec, ns):
        return []
    found = list(_check(netpol.get("spec") or {}, spec, str(policy["metadata"]["name"]), ns))
    return sorted(found, key=lambda w: w.check)  # stable: indices stay in order within a check


def is_ours(netpol: Mapping[str, Any]) -> bool:
    """Generated by nsbaseline: the operator is exempt from the guardrail."""
    labels = (netpol.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(names.MANAGED_BY_LABEL) == names.MANAGED_BY_VALUE)


def for_documents(
    netpol: Mapping[str, Any], documents: Sequence[Mapping[str, Any]]
) -> list[Widening]:
    """Widenings of ``netpol`` against every BaselinePolicy among ``documents`` (lint's view:
    the namespace's labels come from a Namespace among them when there is one)."""
    if is_ours(netpol):
        return []
    meta = netpol.get("metadata") or {}
    ns_name = str(meta.get("namespace") or "default")
    namespace = NamespaceView(ns_name)
    for doc in documents:
        doc_meta = doc.get("metadata") or {}
        if doc.get("kind") == "Namespace" and doc_meta.get("name") == ns_name:
            namespace = NamespaceView(
                ns_name, dict(doc_meta.get("labels") or {}), dict(doc_meta.get("annotations") or {})
            )
    out: list[Widening] = []
    for doc in documents:
        if doc.get("kind") == names.KIND and (doc.get("metadata") or {}).get("name"):
            out += widenings(netpol, doc, namespace)
    return out


# ----- the rules --------------------------------------------------------------------------------
def _message(check: int, policy: str, path: Path, **values: str) -> Widening:
    code, template = MESSAGES[check]
    return Widening(code, path, template.format(policy=policy, **values), policy, check)


def _effective(spec: Mapping[str, Any], direction: str) -> list[Mapping[str, Any]]:
    """The rules of one direction, if the NetworkPolicy's policyTypes (as the API server defaults
    them) make them count."""
    types = spec.get("policyTypes") or (["Ingress"] + (["Egress"] if spec.get("egress") else []))
    if direction.capitalize() not in types:
        return []
    return list(spec.get(direction) or [])


def _check(
    spec: Mapping[str, Any], bp: Mapping[str, Any], policy: str, ns: NamespaceView
) -> Iterator[Widening]:
    deny = bp.get("defaultDeny") or {}
    where = {"namespace": ns.name}
    if deny.get("ingress", True):
        rules = _effective(spec, "ingress")
        for i, rule in enumerate(rules):
            if not rule.get("from"):
                yield _message(0, policy, ("spec", "ingress", i), **where)
        for i, rule in enumerate(rules):
            for j, peer in enumerate(rule.get("from") or []):
                block = peer.get("ipBlock")
                if block and prefix(block.get("cidr")) == 0:
                    path: Path = ("spec", "ingress", i, "from", j, "ipBlock", "cidr")
                    yield _message(1, policy, path, cidr=str(block["cidr"]), **where)
        for i, rule in enumerate(rules):
            for j, peer in enumerate(rule.get("from") or []):
                if "namespaceSelector" in peer and open_selector(peer["namespaceSelector"]):
                    path = ("spec", "ingress", i, "from", j, "namespaceSelector")
                    yield _message(2, policy, path, **where)
        pieces = (
            (3, "monitoring", MONITORING_PORTS_ANNOTATION),
            (4, "ingressController", INGRESS_PORTS_ANNOTATION),
        )
        for check, key, annotation in pieces:
            piece = bp.get(key) or {}
            if not piece.get("enabled"):
                continue
            peer_ns = str(piece.get("namespace"))
            allowed = allowed_ports(piece.get("ports") or [], annotation, ns.annotations)
            if not allowed:
                continue  # every port
            for i, rule in enumerate(rules):
                if not any(
                    names_namespace(p.get("namespaceSelector"), peer_ns)
                    for p in rule.get("from") or []
                ):
                    continue
                bad = first_uncovered(rule, allowed)
                if bad is not None:
                    index, text = bad
                    path = ("spec", "ingress", i, "ports") + ((index,) if index >= 0 else ())
                    yield _message(
                        check, policy, path, peer=peer_ns, ports=text, allowed=show(allowed)
                    )
    if deny.get("egress", True):
        rules = _effective(spec, "egress")
        for i, rule in enumerate(rules):
            if not rule.get("to"):
                yield _message(5, policy, ("spec", "egress", i), **where)
        for i, rule in enumerate(rules):
            for j, peer in enumerate(rule.get("to") or []):
                if "namespaceSelector" in peer and open_selector(peer["namespaceSelector"]):
                    path = ("spec", "egress", i, "to", j, "namespaceSelector")
                    yield _message(6, policy, path, **where)
        networks = allowed_networks(bp)
        shown = "; ".join(show_network(n) for n in networks) or "none"
        for i, rule in enumerate(rules):
            for j, peer in enumerate(rule.get("to") or []):
                block = peer.get("ipBlock")
                if block and not [n for n in networks if inside(block, n)]:
                    path = ("spec", "egress", i, "to", j, "ipBlock", "cidr")
                    yield _message(7, policy, path, cidr=str(block.get("cidr")), allowed=shown)
        for i, rule in enumerate(rules):
            for peer in rule.get("to") or []:
                block = peer.get("ipBlock")
                covering = [n for n in networks if block and inside(block, n)]
                if not block or not covering:
                    continue
                if any(not n["ports"] for n in covering):
                    continue  # an entry allows every port there
                allowed = [p for n in covering for p in n["ports"]]
                bad = first_uncovered(rule, allowed)
                if bad is not None:
                    index, text = bad
                    path = ("spec", "egress", i, "ports") + ((index,) if index >= 0 else ())
                    yield _message(8, policy, path, cidr=str(block["cidr"]), ports=text)


__all__ = [
    "NamespaceView",
    "Widening",
    "for_documents",
    "is_ours",
    "selects",
    "widenings",
]
