"""Which namespaces a BaselinePolicy selects: label selectors and exclusions, without I/O."""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nsbaseline.model import BaselinePolicy, Namespace
from nsbaseline.spec import LabelSelector


class SelectorError(ValueError):
    """A label selector that cannot be evaluated (the CRD schema normally refuses these)."""


def _expression_matches(
    labels: Mapping[str, str], key: str, operator: str, values: Iterable[str]
) -> bool:
    if operator == "In":
        return key in labels and labels[key] in values
    if operator == "NotIn":
        return key not in labels or labels[key] not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    raise SelectorError(f"unknown label selector operator {operator!r} for key {key!r}")


def selector_matches(
    selector: LabelSelector | Mapping[str, Any] | None, labels: Mapping[str, str]
) -> bool:
    """Kubernetes ``metav1.LabelSelector`` semantics: all terms are ANDed; ``{}`` matches all.

    ``selector`` is a BaselinePolicy's (typed) or a NetworkPolicy's (JSON, as written).
    """
    if selector is None:
        return True
    if isinstance(selector, LabelSelector):
        match_labels: Mapping[str, Any] = selector.match_labels or {}
        expressions: list[tuple[str, str, Iterable[str]]] = [
            (e.key, e.operator, e.values or ()) for e in selector.match_expressions or ()
        ]
    else:
        match_labels = selector.get("matchLabels") or {}
        expressions = [
            (e.get("key", ""), e.get("operator", ""), e.get("values") or [])
            for e in selector.get("matchExpressions") or []
        ]
    for key, value in match_labels.items():
        if labels.get(key) != value:
            return False
    return all(_expression_matches(labels, *expression) for expression in expressions)


def policy_selects(policy: BaselinePolicy, namespace: Namespace) -> bool:
    """True when ``policy`` should keep a baseline in ``namespace``.

    A namespace being deleted is never selected: writing into it would only race the namespace
    controller, and its objects go away with it.
    """
    if namespace.terminating:
        return False
    if namespace.name in policy.spec.excluded_namespaces:
        return False
    return selector_matches(policy.spec.namespace_selector, namespace.labels)


def policies_for(policies: Sequence[BaselinePolicy], namespace: Namespace) -> list[BaselinePolicy]:
    """The policies that select ``namespace``, sorted by name for deterministic output."""
    return sorted((p for p in policies if policy_selects(p, namespace)), key=lambda p: p.name)
