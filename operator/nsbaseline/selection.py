"""Which namespaces a BaselinePolicy selects: label selectors and exclusions, without I/O."""

from collections.abc import Mapping, Sequence
from typing import Any

from nsbaseline.model import NamespaceInfo, PolicyInfo


class SelectorError(ValueError):
    """A label selector that cannot be evaluated (the CRD schema normally refuses these)."""


def _expression_matches(labels: Mapping[str, str], expr: Mapping[str, Any]) -> bool:
    key = expr.get("key", "")
    operator = expr.get("operator", "")
    values: Sequence[str] = expr.get("values") or []
    if operator == "In":
        return key in labels and labels[key] in values
    if operator == "NotIn":
        return key not in labels or labels[key] not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    raise SelectorError(f"unknown label selector operator {operator!r} for key {key!r}")


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Kubernetes ``metav1.LabelSelector`` semantics: all terms are ANDed; ``{}`` matches all."""
    if selector is None:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    return all(_expression_matches(labels, e) for e in selector.get("matchExpressions") or [])


def policy_selects(policy: PolicyInfo, namespace: NamespaceInfo) -> bool:
    """True when ``policy`` should keep a baseline in ``namespace``.

    A namespace being deleted is never selected: writing into it would only race the namespace
    controller, and its objects go away with it.
    """
    if namespace.terminating:
        return False
    if namespace.name in policy.excluded_namespaces:
        return False
    return selector_matches(policy.namespace_selector, namespace.labels)


def policies_for(policies: Sequence[PolicyInfo], namespace: NamespaceInfo) -> list[PolicyInfo]:
    """The policies that select ``namespace``, sorted by name for deterministic output."""
    return sorted((p for p in policies if policy_selects(p, namespace)), key=lambda p: p.name)
