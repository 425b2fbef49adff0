"""The evaluator against the documented NetworkPolicy semantics.

Most policies below are copied from the Kubernetes documentation ("Network Policies" concept page:
the ``test-network-policy`` example, the default deny/allow examples, the ``endPort`` example and
the namespaceSelector/podSelector AND-versus-OR example); the rest pin edge cases of the API
reference (defaulted policyTypes, empty versus absent selectors, named ports, protocols).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from nsbaseline.evaluator import (
    ContainerPort,
    Endpoint,
    NetworkPolicy,
    Pod,
    World,
    rule_ports,
)
from nsbaseline.model import Namespace
from nsbaseline.portset import PortSet

# The "test-network-policy" example of the NetworkPolicy concepts page, verbatim.
TEST_NETWORK_POLICY = {
    "podSelector": {"matchLabels": {"role": "db"}},
    "policyTypes": ["Ingress", "Egress"],
    "ingress": [
        {
            "from": [
                {"ipBlock": {"cidr": "172.17.0.0/16", "except": ["172.17.1.0/24"]}},
                {"namespaceSelector": {"matchLabels": {"project": "myproject"}}},
                {"podSelector": {"matchLabels": {"role": "frontend"}}},
            ],
            "ports": [{"protocol": "TCP", "port": 6379}],
        }
    ],
    "egress": [
        {"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}], "ports": [{"protocol": "TCP", "port": 5978}]}
    ],
}
DEFAULT_DENY_INGRESS = {"podSelector": {}, "policyTypes": ["Ingress"]}
ALLOW_ALL_INGRESS = {"podSelector": {}, "ingress": [{}], "policyTypes": ["Ingress"]}
DEFAULT_DENY_EGRESS = {"podSelector": {}, "policyTypes": ["Egress"]}
ALLOW_ALL_EGRESS = {"podSelector": {}, "egress": [{}], "policyTypes": ["Egress"]}
DEFAULT_DENY_ALL = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
# The endPort example of the concepts page.
END_PORT = {
    "podSelector": {"matchLabels": {"role": "db"}},
    "policyTypes": ["Egress"],
    "egress": [
        {
            "to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}],
            "ports": [{"protocol": "TCP", "port": 32000, "endPort": 32768}],
        }
    ],
}
# The concepts page's "behavior of to and from selectors": one peer (AND) versus two (OR).
AND_PEER = {
    "podSelector": {"matchLabels": {"role": "db"}},
    "ingress": [
        {
            "from": [
                {
                    "namespaceSelector": {"matchLabels": {"user": "alice"}},
                    "podSelector": {"matchLabels": {"role": "client"}},
                }
            ]
        }
    ],
}
OR_PEERS = {
    "podSelector": {"matchLabels": {"role": "db"}},
    "ingress": [
        {
            "from": [
                {"namespaceSelector": {"matchLabels": {"user": "alice"}}},
                {"podSelector": {"matchLabels": {"role": "client"}}},
            ]
        }
    ],
}
# The baseline nsbaseline renders: default-deny both ways plus DNS egress.
ALLOW_DNS = {
    "podSelector": {},
    "policyTypes": ["Egress"],
    "egress": [
        {
            "to": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                    },
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                }
            ],
            "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
        }
    ],
}
NAMED_PORT = {
    "podSelector": {"matchLabels": {"role": "db"}},
    "policyTypes": ["Ingress"],
    "ingress": [{"ports": [{"port": "redis", "protocol": "TCP"}]}],
}
EGRESS_RULES_NO_TYPES = {
    "podSelector": {"matchLabels": {"role": "db"}},
    "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}]}],
}
NS_SELECTOR_ALL: dict[str, Any] = {
    "podSelector": {},
    "ingress": [{"from": [{"namespaceSelector": {}}]}],
}
EMPTY_PEER_SELECTORS: dict[str, Any] = {
    "podSelector": {},
    "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {}}]}],
}
PROTOCOL_ONLY = {
    "podSelector": {},
    "policyTypes": ["Ingress"],
    "ingress": [{"ports": [{"protocol": "UDP"}]}],
}
SCTP = {
    "podSelector": {},
    "policyTypes": ["Ingress"],
    "ingress": [{"ports": [{"protocol": "SCTP", "port": 9999}]}],
}
MATCH_EXPRESSIONS = {
    "podSelector": {},
    "policyTypes": ["Ingress"],
    "ingress": [
        {
            "from": [
                {
                    "podSelector": {
                        "matchExpressions": [
                            {"key": "tier", "operator": "In", "values": ["web", "api"]},
                            {"key": "debug", "operator": "DoesNotExist"},
                        ]
                    }
                }
            ]
        }
    ],
}
EMPTY_INGRESS_LIST: dict[str, Any] = {"podSelector": {}, "ingress": []}


def world(*policies: tuple[str, dict[str, Any]]) -> World:
    """default: db (6379 'redis'), frontend, web; myproject ns 'other'; plain ns 'third'."""
    namespaces = [
        Namespace("default"),
        Namespace("other", {"project": "myproject", "user": "alice"}),
        Namespace("third"),
        Namespace("kube-system"),
    ]
    pods = [
        Pod("default", "db", {"role": "db"}, (ContainerPort(6379, "TCP", "redis"),), "10.1.0.5"),
        Pod("default", "frontend", {"role": "frontend"}, (), "172.17.1.10"),
        Pod("default", "web", {"role": "web", "tier": "web"}, (), "172.17.2.10"),
        Pod("default", "debugweb", {"tier": "web", "debug": "1"}, (), "10.1.0.9"),
        Pod("other", "client", {"role": "client"}, (), "10.1.1.5"),
        Pod("other", "any", {}, (), "10.1.1.6"),
        Pod("third", "client", {"role": "client"}, (), "10.1.2.5"),
        Pod("kube-system", "coredns", {"k8s-app": "kube-dns"}, (), "10.1.3.5"),
    ]
    return World(
        namespaces,
        pods,
        [NetworkPolicy(ns, f"p{i}", spec) for i, (ns, spec) in enumerate(policies)],
    )


def ep(ref: str, w: World) -> Endpoint:
    if ref.startswith("ip:"):
        return w.endpoint_for_ip(ref[3:])
    pod = w.pod(ref)
    assert pod is not None, ref
    return Endpoint(pod=pod)


@dataclass(frozen=True)
class Case:
    id: str
    policies: tuple[tuple[str, dict[str, Any]], ...]
    source: str
    destination: str
    port: int
    allowed: bool
    protocol: str = "TCP"


D = "default"
CASES = [
    # --- test-network-policy (documentation example) ---
    Case("doc-no-policy-allows-everything", (), "other/any", "default/db", 1234, True),
    Case(
        "doc-frontend-pod-same-ns-6379",
        ((D, TEST_NETWORK_POLICY),),
        "default/frontend",
        "default/db",
        6379,
        True,
    ),
    Case(
        "doc-frontend-other-port-denied",
        ((D, TEST_NETWORK_POLICY),),
        "default/frontend",
        "default/db",
        6380,
        False,
    ),
    Case(
        "doc-udp-6379-denied",
        ((D, TEST_NETWORK_POLICY),),
        "default/frontend",
        "default/db",
        6379,
        False,
        "UDP",
    ),
    Case(
        "doc-namespace-myproject-any-pod",
        ((D, TEST_NETWORK_POLICY),),
        "other/any",
        "default/db",
        6379,
        True,
    ),
    Case(
        "doc-frontend-label-in-other-ns-is-not-enough",
        ((D, TEST_NETWORK_POLICY),),
        "third/client",
        "default/db",
        6379,
        False,
    ),
    Case(
        "doc-ipblock-allows-external-ip",
        ((D, TEST_NETWORK_POLICY),),
        "ip:172.17.5.1",
        "default/db",
        6379,
        True,
    ),
    Case(
        "doc-ipblock-except-denies",
        ((D, TEST_NETWORK_POLICY),),
        "ip:172.17.1.99",
        "default/db",
        6379,
        False,
    ),
    Case(
        "doc-ipblock-outside-cidr-denies",
        ((D, TEST_NETWORK_POLICY),),
        "ip:192.168.0.1",
        "default/db",
        6379,
        False,
    ),
    Case(
        "doc-ipblock-matches-pod-ip",
        ((D, TEST_NETWORK_POLICY),),
        "default/web",  # 172.17.2.10, inside the block, not role=frontend
        "default/db",
        6379,
        True,
    ),
    Case(
        "doc-egress-to-cidr-5978",
        ((D, TEST_NETWORK_POLICY),),
        "default/db",
        "ip:10.0.0.7",
        5978,
        True,
    ),
    Case(
        "doc-egress-other-port-denied",
        ((D, TEST_NETWORK_POLICY),),
        "default/db",
        "ip:10.0.0.7",
        80,
        False,
    ),
    Case(
        "doc-egress-outside-cidr-denied",
        ((D, TEST_NETWORK_POLICY),),
        "default/db",
        "ip:10.0.1.7",
        5978,
        False,
    ),
    Case(
        "doc-unselected-pod-unaffected",
        ((D, TEST_NETWORK_POLICY),),
        "third/client",
        "default/web",
        9999,
        True,
    ),
    # --- default policies ---
    Case(
        "deny-ingress-blocks", ((D, DEFAULT_DENY_INGRESS),), "other/any", "default/web", 80, False
    ),
    Case(
        "deny-ingress-leaves-egress",
        ((D, DEFAULT_DENY_INGRESS),),
        "default/web",
        "other/any",
        80,
        True,
    ),
    Case(
        "deny-ingress-blocks-same-namespace",
        ((D, DEFAULT_DENY_INGRESS),),
        "default/frontend",
        "default/web",
        80,
        False,
    ),
    Case(
        "allow-all-ingress-overrides-deny",
        ((D, DEFAULT_DENY_INGRESS), (D, ALLOW_ALL_INGRESS)),
        "ip:8.8.8.8",
        "default/web",
        443,
        True,
    ),
    Case(
        "deny-egress-blocks", ((D, DEFAULT_DENY_EGRESS),), "default/web", "ip:8.8.8.8", 443, False
    ),
    Case(
        "deny-egress-leaves-ingress",
        ((D, DEFAULT_DENY_EGRESS),),
        "other/any",
        "default/web",
        443,
        True,
    ),
    Case(
        "allow-all-egress-overrides-deny",
        ((D, DEFAULT_DENY_EGRESS), (D, ALLOW_ALL_EGRESS)),
        "default/web",
        "ip:8.8.8.8",
        443,
        True,
    ),
    Case(
        "deny-all-blocks-pod-to-pod",
        ((D, DEFAULT_DENY_ALL),),
        "default/web",
        "default/frontend",
        80,
        False,
    ),
    Case(
        "egress-of-source-is-checked-too",
        (("other", DEFAULT_DENY_EGRESS),),
        "other/any",
        "default/web",
        80,
        False,
    ),
    # --- the nsbaseline baseline: only DNS egress left ---
    Case(
        "baseline-dns-udp-allowed",
        ((D, DEFAULT_DENY_ALL), (D, ALLOW_DNS)),
        "default/web",
        "kube-system/coredns",
        53,
        True,
        "UDP",
    ),
    Case(
        "baseline-dns-tcp-allowed",
        ((D, DEFAULT_DENY_ALL), (D, ALLOW_DNS)),
        "default/web",
        "kube-system/coredns",
        53,
        True,
    ),
    Case(
        "baseline-dns-other-port-denied",
        ((D, DEFAULT_DENY_ALL), (D, ALLOW_DNS)),
        "default/web",
        "kube-system/coredns",
        80,
        False,
    ),
    Case(
        "baseline-dns-to-non-dns-pod-denied",
        ((D, DEFAULT_DENY_ALL), (D, ALLOW_DNS)),
        "default/web",
        "other/any",
        53,
        False,
        "UDP",
    ),
    # --- endPort (documentation example) ---
    Case("endport-lower-bound", ((D, END_PORT),), "default/db", "ip:10.0.0.1", 32000, True),
    Case("endport-upper-bound", ((D, END_PORT),), "default/db", "ip:10.0.0.1", 32768, True),
    Case("endport-above-range", ((D, END_PORT),), "default/db", "ip:10.0.0.1", 32769, False),
    Case("endport-below-range", ((D, END_PORT),), "default/db", "ip:10.0.0.1", 31999, False),
    # --- AND inside a peer, OR across peers (documentation example) ---
    Case("and-peer-both-match", ((D, AND_PEER),), "other/client", "default/db", 80, True),
    Case("and-peer-namespace-only", ((D, AND_PEER),), "other/any", "default/db", 80, False),
    Case("and-peer-pod-only", ((D, AND_PEER),), "third/client", "default/db", 80, False),
    Case("or-peers-namespace-only", ((D, OR_PEERS),), "other/any", "default/db", 80, True),
    Case(
        "or-peers-podselector-means-own-namespace",
        ((D, OR_PEERS),),
        "third/client",
        "default/db",
        80,
        False,
    ),
    # --- edge cases of the API reference ---
    Case(
        "policytypes-defaults-to-egress-when-egress-rules",
        ((D, EGRESS_RULES_NO_TYPES),),
        "default/db",
        "ip:8.8.8.8",
        80,
        False,
    ),
    Case(
        "policytypes-defaults-to-ingress-always",
        ((D, EGRESS_RULES_NO_TYPES),),
        "default/web",
        "default/db",
        80,
        False,
    ),
    Case(
        "empty-ingress-list-isolates",
        ((D, EMPTY_INGRESS_LIST),),
        "default/web",
        "default/frontend",
        80,
        False,
    ),
    Case(
        "empty-ingress-list-does-not-isolate-egress",
        ((D, EMPTY_INGRESS_LIST),),
        "default/web",
        "ip:8.8.8.8",
        80,
        True,
    ),
    Case(
        "namespace-selector-empty-means-all-namespaces",
        ((D, NS_SELECTOR_ALL),),
        "third/client",
        "default/web",
        80,
        True,
    ),
    Case(
        "namespace-selector-never-matches-ip",
        ((D, NS_SELECTOR_ALL),),
        "ip:8.8.8.8",
        "default/web",
        80,
        False,
    ),
    Case(
        "empty-namespace-and-pod-selector-means-all-pods",
        ((D, EMPTY_PEER_SELECTORS),),
        "other/any",
        "default/web",
        80,
        True,
    ),
    Case("named-port-resolved", ((D, NAMED_PORT),), "other/any", "default/db", 6379, True),
    Case("named-port-other-number", ((D, NAMED_PORT),), "other/any", "default/db", 6380, False),
    Case(
        "named-port-missing-on-destination",
        ((D, NAMED_PORT),),
        "other/any",
        "default/db",
        6379,
        False,
        "UDP",
    ),
    Case(
        "protocol-only-port-allows-all-udp",
        ((D, PROTOCOL_ONLY),),
        "ip:1.2.3.4",
        "default/web",
        5000,
        True,
        "UDP",
    ),
    Case(
        "protocol-only-port-not-tcp",
        ((D, PROTOCOL_ONLY),),
        "ip:1.2.3.4",
        "default/web",
        5000,
        False,
    ),
    Case("sctp-port-allowed", ((D, SCTP),), "ip:1.2.3.4", "default/web", 9999, True, "SCTP"),
    Case("sctp-port-not-tcp", ((D, SCTP),), "ip:1.2.3.4", "default/web", 9999, False),
    Case("match-expressions-in", ((D, MATCH_EXPRESSIONS),), "default/web", "default/db", 80, True),
    Case(
        "match-expressions-does-not-exist",
        ((D, MATCH_EXPRESSIONS),),
        "default/debugweb",
        "default/db",
        80,
        False,
    ),
    Case(
        "policy-in-other-namespace-does-not-select",
        (("third", DEFAULT_DENY_ALL),),
        "other/any",
        "default/web",
        80,
        True,
    ),
    Case(
        "union-across-policies",
        ((D, TEST_NETWORK_POLICY), (D, NAMED_PORT)),
        "third/client",
        "default/db",
        6379,
        True,
    ),
]


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_documented_semantics(case: Case) -> None:
    w = world(*case.policies)
    verdict = w.check(ep(case.source, w), ep(case.destination, w), case.protocol, case.port)
    assert verdict.allowed is case.allowed, verdict.reasons()


def test_allowed_flow_names_the_rule_and_peer() -> None:
    w = world((D, TEST_NETWORK_POLICY))
    verdict = w.check(ep("other/any", w), ep("default/db", w), "TCP", 6379)
    [rule] = verdict.ingress.allowed_by
    assert (rule.network_policy, rule.rule, rule.peer) == ("default/p0", 0, 1)
    assert "allowed by default/p0 ingress[0]" in verdict.reasons()[1]
    assert "not isolated" in verdict.reasons()[0]


def test_denied_flow_names_the_isolating_policies() -> None:
    w = world((D, DEFAULT_DENY_ALL), (D, ALLOW_DNS))
    verdict = w.check(ep("default/web", w), ep("ip:8.8.8.8", w), "TCP", 443)
    assert verdict.egress.isolated_by == ("default/p0", "default/p1")
    assert "denied; isolated by default/p0, default/p1" in verdict.reasons()[0]
    assert "not a pod" in verdict.reasons()[1]
    as_dict = verdict.as_dict()
    assert as_dict["allowed"] is False and as_dict["egress"]["isolated"] is True


def test_connectivity_intersects_both_sides() -> None:
    w = world((D, DEFAULT_DENY_ALL), (D, ALLOW_DNS))
    c = w.connectivity(ep("default/web", w), ep("kube-system/coredns", w))
    assert str(c.ports) == "53/TCP,53/UDP"
    c = w.connectivity(ep("default/web", w), ep("default/frontend", w))
    assert c.ports.empty


def test_portset_algebra() -> None:
    a = PortSet.of([("TCP", 1, 100), ("TCP", 101, 200), ("UDP", 53, 53)])
    assert str(a) == "1-200/TCP,53/UDP"
    assert str(a.intersect(PortSet.of([("TCP", 150, 300)]))) == "150-200/TCP"
    assert str(PortSet.all()) == "all"
    assert str(PortSet.of([("TCP", 1, 65535)])) == "all/TCP"
    assert a.union(PortSet.all()) == PortSet.all()


def test_named_port_without_destination_pod_matches_nothing() -> None:
    assert rule_ports({"ports": [{"port": "http"}]}, None).empty


def test_endpoint_is_a_pod_or_an_ip() -> None:
    with pytest.raises(ValueError):
        Endpoint()


def test_invalid_query_is_refused() -> None:
    w = world()
    with pytest.raises(ValueError):
        w.check(ep("other/any", w), ep("default/db", w), "ICMP", 1)
    with pytest.raises(ValueError):
        w.check(ep("other/any", w), ep("default/db", w), "TCP", 70000)


def test_pod_from_body_reads_named_ports_and_ip() -> None:
    pod = Pod.from_body(
        {
            "metadata": {"name": "p", "namespace": "n", "labels": {"a": "b"}},
            "spec": {
                "containers": [{"ports": [{"containerPort": 80, "name": "http"}]}],
            },
            "status": {"podIP": "10.0.0.1"},
        }
    )
    assert pod.ports == (ContainerPort(80, "TCP", "http"),) and pod.ip == "10.0.0.1"
