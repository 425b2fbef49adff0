"""Which namespaces a BaselinePolicy selects: label-selector semantics plus exclusions."""

from __future__ import annotations

from typing import Any

import pytest

from nsbaseline.model import Namespace
from nsbaseline.selection import SelectorError, policies_for, policy_selects, selector_matches
from tests.support.builders import namespace, policy

LABELS = {"env": "prod", "team": "a", "nsbaseline.io/enabled": "true"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({}, True),
        (None, True),
        ({"matchLabels": {"env": "prod"}}, True),
        ({"matchLabels": {"env": "prod", "team": "a"}}, True),
        ({"matchLabels": {"env": "prod", "team": "b"}}, False),
        ({"matchLabels": {"missing": ""}}, False),
        ({"matchExpressions": [{"key": "env", "operator": "In", "values": ["dev", "prod"]}]}, True),
        ({"matchExpressions": [{"key": "env", "operator": "In", "values": ["dev"]}]}, False),
        ({"matchExpressions": [{"key": "gone", "operator": "In", "values": ["x"]}]}, False),
        ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]}, True),
        ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}, False),
        # NotIn is also satisfied when the key is absent (as in Kubernetes).
        ({"matchExpressions": [{"key": "gone", "operator": "NotIn", "values": ["x"]}]}, True),
        ({"matchExpressions": [{"key": "team", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "gone", "operator": "Exists"}]}, False),
        ({"matchExpressions": [{"key": "gone", "operator": "DoesNotExist"}]}, True),
        ({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}, False),
        # All terms are ANDed, across matchLabels and matchExpressions.
        (
            {
                "matchLabels": {"env": "prod"},
                "matchExpressions": [
                    {"key": "team", "operator": "In", "values": ["a"]},
                    {"key": "legacy", "operator": "DoesNotExist"},
                ],
            },
            True,
        ),
        (
            {
                "matchLabels": {"env": "prod"},
                "matchExpressions": [{"key": "team", "operator": "In", "values": ["b"]}],
            },
            False,
        ),
        ({"matchLabels": {}, "matchExpressions": []}, True),
    ],
)
def test_label_selector_semantics(selector: dict[str, Any] | None, expected: bool) -> None:
    assert selector_matches(selector, LABELS) is expected


def test_label_values_compare_exactly() -> None:
    assert not selector_matches({"matchLabels": {"env": "Prod"}}, LABELS)
    assert not selector_matches({"matchLabels": {"env": ""}}, {})
    assert selector_matches({"matchLabels": {"env": ""}}, {"env": ""})


def test_unknown_operator_is_an_error_naming_it() -> None:
    with pytest.raises(SelectorError, match="'Gt'"):
        selector_matches({"matchExpressions": [{"key": "env", "operator": "Gt"}]}, LABELS)


def test_default_selector_is_the_opt_in_label() -> None:
    pol = policy()
    assert policy_selects(pol, namespace("a", {"nsbaseline.io/enabled": "true"}))
    assert not policy_selects(pol, namespace("b"))
    assert not policy_selects(pol, namespace("c", {"nsbaseline.io/enabled": "false"}))


def test_empty_selector_selects_every_namespace_but_the_default_exclusions() -> None:
    pol = policy(namespaceSelector={})
    assert policy_selects(pol, namespace("anything"))
    for system in ("kube-system", "kube-public", "kube-node-lease"):
        assert not policy_selects(pol, namespace(system))


def test_excluded_namespaces_win_over_labels() -> None:
    pol = policy(namespaceSelector={}, excludedNamespaces=["payments"])
    assert not policy_selects(pol, namespace("payments", {"nsbaseline.io/enabled": "true"}))
    # Replacing the list replaces the defaults too (it is a plain field, not a merge).
    assert policy_selects(pol, namespace("kube-system"))


def test_terminating_namespace_is_never_selected() -> None:
    pol = policy(namespaceSelector={})
    assert not policy_selects(pol, namespace("going", terminating=True))


def test_selector_can_use_the_immutable_name_label() -> None:
    pol = policy(
        namespaceSelector={
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["a", "b"]}
            ]
        }
    )
    assert [policy_selects(pol, namespace(n)) for n in ("a", "b", "c")] == [True, True, False]


def test_policies_for_returns_selecting_policies_sorted_by_name() -> None:
    policies = [
        policy("zeta", namespaceSelector={}),
        policy("alpha", namespaceSelector={"matchLabels": {"env": "prod"}}),
        policy("mid", namespaceSelector={"matchLabels": {"env": "dev"}}),
        policy("beta", namespaceSelector={}, excludedNamespaces=["team-a"]),
    ]
    ns = namespace("team-a", {"env": "prod"})
    assert [p.name for p in policies_for(policies, ns)] == ["alpha", "zeta"]
    assert policies_for(policies, namespace("team-a", terminating=True)) == []


def test_one_namespace_model_reads_manifests_and_adds_the_name_label() -> None:
    """Namespace.from_body is the one reader of Namespace manifests (render, explain, lint, the
    operator's index); with_name_label adds what the API server sets on every namespace."""
    body = {
        "kind": "Namespace",
        "metadata": {
            "name": "shop",
            "labels": {"team": "a"},
            "annotations": {"nsbaseline.io/ingress-ports": "80"},
            "deletionTimestamp": "2030-01-01T00:00:00Z",
        },
    }
    ns = Namespace.from_body(body)
    assert (ns.name, dict(ns.labels), ns.terminating) == ("shop", {"team": "a"}, True)
    assert ns.effective_labels == {"team": "a", "kubernetes.io/metadata.name": "shop"}
    assert ns.with_name_label().labels == ns.effective_labels
    assert ns.with_name_label().annotations == {"nsbaseline.io/ingress-ports": "80"}
