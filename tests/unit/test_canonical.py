"""The NetworkPolicy normal form: what the API server defaults, and what order cannot change."""

from __future__ import annotations

import random
from typing import Any

from nsbaseline import canonical

FULL: dict[str, Any] = {
    "podSelector": {
        "matchExpressions": [
            {"key": "tier", "operator": "NotIn", "values": ["db", "cache"]},
            {"key": "app", "operator": "Exists"},
        ]
    },
    "policyTypes": ["Ingress", "Egress"],
    "ingress": [
        {
            "from": [
                {"namespaceSelector": {}},
                {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.2.0.0/16", "10.1.0.0/16"]}},
                {
                    "namespaceSelector": {"matchLabels": {"b": "2", "a": "1"}},
                    "podSelector": {"matchLabels": {"app": "web"}},
                },
            ],
            "ports": [
                {"port": 443},
                {"port": "http", "protocol": "TCP"},
                {"port": 53, "protocol": "UDP"},
            ],
        },
        {"ports": [{"port": 8000, "endPort": 8080}]},
    ],
    "egress": [{"to": [{"podSelector": {}}]}, {}],
}


def _shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        items = [_shuffled(v, rng) for v in value]
        rng.shuffle(items)
        return items
    return value


def test_protocol_defaults_to_tcp() -> None:
    out = canonical.spec({"ingress": [{"ports": [{"port": 80}, {"port": 81, "protocol": None}]}]})
    assert out["ingress"][0]["ports"] == [
        {"protocol": "TCP", "port": 80},
        {"protocol": "TCP", "port": 81},
    ]


def test_explicit_tcp_and_defaulted_tcp_are_the_same_port() -> None:
    a = canonical.spec({"ingress": [{"ports": [{"port": 80}]}]})
    b = canonical.spec({"ingress": [{"ports": [{"port": 80, "protocol": "TCP"}]}]})
    assert a == b


def test_numeric_string_ports_become_numbers_and_names_stay_names() -> None:
    out = canonical.spec({"ingress": [{"ports": [{"port": "8080"}, {"port": "http"}]}]})
    assert {p["port"] for p in out["ingress"][0]["ports"]} == {8080, "http"}


def test_order_carries_no_meaning_anywhere() -> None:
    expected = canonical.spec(FULL)
    rng = random.Random(7)
    for _ in range(25):
        assert canonical.spec(_shuffled(FULL, rng)) == expected


def test_canonical_form_is_a_fixed_point() -> None:
    once = canonical.spec(FULL)
    assert canonical.spec(once) == once


def test_empty_selectors_are_kept_apart_from_absent_ones() -> None:
    """``namespaceSelector: {}`` means every namespace; without it the peer means this namespace.
    Dropping the empty one would silently narrow (or, the other way, widen) the rule."""
    out = canonical.spec(FULL)
    peers = out["ingress"][0]["from"]
    assert {"namespaceSelector": {}} in peers
    egress_peers = next(r for r in out["egress"] if "to" in r)["to"]
    assert egress_peers == [{"podSelector": {}}]
    assert canonical.spec({"ingress": [{"from": [{"namespaceSelector": {}}]}]}) != canonical.spec(
        {"ingress": [{"from": [{"podSelector": {}}]}]}
    )


def test_null_selector_in_a_peer_counts_as_absent() -> None:
    a = canonical.spec({"ingress": [{"from": [{"podSelector": {}, "namespaceSelector": None}]}]})
    b = canonical.spec({"ingress": [{"from": [{"podSelector": {}}]}]})
    assert a == b


def test_empty_rule_allows_all_and_is_kept() -> None:
    out = canonical.spec({"policyTypes": ["Egress"], "egress": [{}]})
    assert out["egress"] == [{}]
    assert canonical.spec({"policyTypes": ["Egress"], "egress": []}) == {
        "podSelector": {},
        "policyTypes": ["Egress"],
    }


def test_duplicates_collapse() -> None:
    out = canonical.spec(
        {
            "policyTypes": ["Ingress", "Ingress"],
            "ingress": [
                {"ports": [{"port": 80}, {"port": 80, "protocol": "TCP"}]},
                {"ports": [{"port": 80, "protocol": "TCP"}]},
            ],
        }
    )
    assert out == {
        "podSelector": {},
        "policyTypes": ["Ingress"],
        "ingress": [{"ports": [{"protocol": "TCP", "port": 80}]}],
    }


def test_policy_types_default_like_the_api_server() -> None:
    assert canonical.spec({})["policyTypes"] == ["Ingress"]
    assert canonical.spec({"egress": [{}]})["policyTypes"] == ["Egress", "Ingress"]
    assert canonical.spec({"policyTypes": [], "ingress": [{}]})["policyTypes"] == ["Ingress"]
    assert canonical.spec({"policyTypes": ["Egress"]})["policyTypes"] == ["Egress"]


def test_absent_pod_selector_is_the_empty_selector() -> None:
    assert canonical.spec({})["podSelector"] == {}
    assert canonical.spec({"podSelector": {"matchLabels": {}}})["podSelector"] == {}


def test_expression_values_are_a_set_and_label_values_strings() -> None:
    out = canonical.spec(
        {
            "podSelector": {
                "matchLabels": {"n": 1},
                "matchExpressions": [{"key": "k", "operator": "In", "values": ["b", "a"]}],
            }
        }
    )
    assert out["podSelector"] == {
        "matchLabels": {"n": "1"},
        "matchExpressions": [{"key": "k", "operator": "In", "values": ["a", "b"]}],
    }


def test_real_differences_stay_different() -> None:
    base = {"ingress": [{"ports": [{"port": 80}]}]}
    for other in (
        {"ingress": [{"ports": [{"port": 81}]}]},
        {"ingress": [{"ports": [{"port": 80, "protocol": "UDP"}]}]},
        {"ingress": [{"ports": [{"port": 80, "endPort": 90}]}]},
        {"ingress": [{"ports": [{"port": 80}], "from": [{"podSelector": {}}]}]},
        {"policyTypes": ["Ingress", "Egress"], "ingress": [{"ports": [{"port": 80}]}]},
    ):
        assert canonical.spec(other) != canonical.spec(base), other


def test_fingerprint_is_insensitive_to_key_order() -> None:
    assert canonical.fingerprint({"a": 1, "b": [1, 2]}) == canonical.fingerprint(
        {"b": [1, 2], "a": 1}
    )
    assert canonical.fingerprint([1, 2]) != canonical.fingerprint([2, 1])
