"""The one table of guardrail cases: ``nsbaseline lint`` (unit tests) and the real guardrail
admission policy on the control plane (e2e) must both follow it, word for word.

Each case is a tenant NetworkPolicy in a namespace that a BaselinePolicy of some *profile*
selects, and the first refusal expected (rule code and field), or ``None`` when it must be
admitted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

#: BaselinePolicy specs (without namespaceSelector: each user of the table sets its own).
PROFILES: dict[str, dict[str, Any]] = {
    "full": {
        "monitoring": {"enabled": True, "ports": [{"port": 9090}]},
        "ingressController": {"enabled": True},
        "dns": {"nodeLocalDNS": "169.254.20.10"},
        "egressCIDRs": [
            {"cidr": "203.0.113.0/24", "except": ["203.0.113.128/25"], "ports": [{"port": 443}]},
            {"cidr": "198.51.100.0/24"},
        ],
    },
    "ingress-ports": {
        "ingressController": {"enabled": True, "ports": [{"port": 80}, {"port": 443}]},
    },
    "ingress-only": {"defaultDeny": {"ingress": True, "egress": False}},
    "audit": {"mode": "Audit"},
}


@dataclass(frozen=True)
class Case:
    id: str
    profile: str
    spec: dict[str, Any]
    #: (rule code, field) of the first refusal; None: admitted.
    expect: tuple[str, str] | None
    annotations: dict[str, str] = field(default_factory=dict)


def _in(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": list(rules)}


def _out(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"podSelector": {}, "policyTypes": ["Egress"], "egress": list(rules)}


def _ns(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


def _block(cidr: str, *excepts: str) -> dict[str, Any]:
    return {"ipBlock": {"cidr": cidr, **({"except": list(excepts)} if excepts else {})}}


TCP = "TCP"
CASES: list[Case] = [
    # ingress: every source, every address, every namespace
    Case(
        "ingress-rule-without-from", "full", _in({}), ("ingress-from-anywhere", "spec.ingress[0]")
    ),
    Case(
        "ingress-from-0.0.0.0/0",
        "full",
        _in({"from": [{"podSelector": {}}, _block("0.0.0.0/0")]}),
        ("ingress-from-anywhere", "spec.ingress[0].from[1].ipBlock.cidr"),
    ),
    Case(
        "ingress-from-::/0",
        "full",
        _in({"from": [_block("::/0")]}),
        ("ingress-from-anywhere", "spec.ingress[0].from[0].ipBlock.cidr"),
    ),
    Case(
        "ingress-from-every-namespace",
        "full",
        _in({"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "x"}}}]}),
        ("ingress-from-all-namespaces", "spec.ingress[0].from[0].namespaceSelector"),
    ),
    Case(
        "ingress-from-every-namespace-but-one",
        "full",
        _in(
            {"from": [_ns("team-b")]},
            {
                "from": [
                    {
                        "namespaceSelector": {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/metadata.name",
                                    "operator": "NotIn",
                                    "values": ["kube-system"],
                                }
                            ]
                        }
                    }
                ]
            },
        ),
        ("ingress-from-all-namespaces", "spec.ingress[1].from[0].namespaceSelector"),
    ),
    Case(
        "ingress-from-namespaces-that-have-a-name",
        "full",
        _in(
            {
                "from": [
                    {
                        "namespaceSelector": {
                            "matchExpressions": [
                                {"key": "kubernetes.io/metadata.name", "operator": "Exists"}
                            ]
                        }
                    }
                ]
            }
        ),
        ("ingress-from-all-namespaces", "spec.ingress[0].from[0].namespaceSelector"),
    ),
    # monitoring and ingress-controller ports
    Case(
        "monitoring-on-another-port",
        "full",
        _in({"from": [_ns("monitoring")], "ports": [{"port": 9090}, {"port": 22}]}),
        ("monitoring-ports", "spec.ingress[0].ports[1]"),
    ),
    Case(
        "monitoring-on-every-port",
        "full",
        _in({"from": [_ns("monitoring")]}),
        ("monitoring-ports", "spec.ingress[0].ports"),
    ),
    Case(
        "monitoring-on-its-port",
        "full",
        _in({"from": [_ns("monitoring")], "ports": [{"port": 9090, "protocol": TCP}]}),
        None,
    ),
    Case(
        "monitoring-on-a-port-the-namespace-annotation-allows",
        "full",
        _in({"from": [_ns("monitoring")], "ports": [{"port": 9100}]}),
        None,
        {"nsbaseline.io/monitoring-ports": "9090, 9100/tcp"},
    ),
    Case(
        "ingress-controller-on-another-port",
        "ingress-ports",
        _in({"from": [_ns("ingress-nginx")], "ports": [{"port": 8080}]}),
        ("ingress-controller-ports", "spec.ingress[0].ports[0]"),
    ),
    Case(
        "ingress-controller-on-a-range-the-annotation-allows",
        "ingress-ports",
        _in({"from": [_ns("ingress-nginx")], "ports": [{"port": 8080, "endPort": 8090}]}),
        None,
        {"nsbaseline.io/ingress-ports": "8000-9000"},
    ),
    Case(
        "ingress-controller-on-a-range-beyond-the-annotation",
        "ingress-ports",
        _in({"from": [_ns("ingress-nginx")], "ports": [{"port": 8080, "endPort": 9090}]}),
        ("ingress-controller-ports", "spec.ingress[0].ports[0]"),
        {"nsbaseline.io/ingress-ports": "8000-9000"},
    ),
    Case(
        "ingress-controller-on-every-udp-port",
        "ingress-ports",
        _in({"from": [_ns("ingress-nginx")], "ports": [{"protocol": "UDP"}]}),
        ("ingress-controller-ports", "spec.ingress[0].ports[0]"),
    ),
    # ingress that stays admitted
    Case("same-namespace-ingress", "full", _in({"from": [{"podSelector": {}}]}), None),
    Case(
        "ingress-from-a-named-namespace",
        "full",
        _in({"from": [{**_ns("team-b"), "podSelector": {"matchLabels": {"app": "web"}}}]}),
        None,
    ),
    Case("ingress-from-a-network", "full", _in({"from": [_block("192.0.2.0/24")]}), None),
    Case(
        "narrowing-deny-all",
        "full",
        {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress", "Egress"]},
        None,
    ),
    # egress: every destination, every namespace, networks and ports
    Case("egress-rule-without-to", "full", _out({}), ("egress-to-anywhere", "spec.egress[0]")),
    Case(
        "egress-to-every-namespace",
        "full",
        _out({"to": [{"podSelector": {}}, {"namespaceSelector": {}}]}),
        ("egress-to-all-namespaces", "spec.egress[0].to[1].namespaceSelector"),
    ),
    Case(
        "egress-to-0.0.0.0/0",
        "full",
        _out({"to": [_block("0.0.0.0/0")], "ports": [{"port": 443}]}),
        ("egress-ipblock-outside-policy", "spec.egress[0].to[0].ipBlock.cidr"),
    ),
    Case(
        "egress-to-a-network-outside-the-policy",
        "full",
        _out({"to": [_block("192.0.2.0/24")]}),
        ("egress-ipblock-outside-policy", "spec.egress[0].to[0].ipBlock.cidr"),
    ),
    Case(
        "egress-into-the-policy-except",
        "full",
        _out({"to": [_block("203.0.113.0/24")], "ports": [{"port": 443}]}),
        ("egress-ipblock-outside-policy", "spec.egress[0].to[0].ipBlock.cidr"),
    ),
    Case(
        "egress-to-the-policy-network-minus-its-except",
        "full",
        _out({"to": [_block("203.0.113.0/24", "203.0.113.128/25")], "ports": [{"port": 443}]}),
        None,
    ),
    Case(
        "egress-to-a-subnet-on-the-policy-port",
        "full",
        _out({"to": [_block("203.0.113.0/25")], "ports": [{"port": 443}]}),
        None,
    ),
    Case(
        "egress-to-a-subnet-on-another-port",
        "full",
        _out({"to": [_block("203.0.113.0/25")], "ports": [{"port": 443}, {"port": 80}]}),
        ("egress-ipblock-ports", "spec.egress[0].ports[1]"),
    ),
    Case(
        "egress-to-a-subnet-on-every-port",
        "full",
        _out({"to": [_block("203.0.113.0/26")]}),
        ("egress-ipblock-ports", "spec.egress[0].ports"),
    ),
    Case(
        "egress-to-a-network-the-policy-opens-on-every-port",
        "full",
        _out({"to": [_block("198.51.100.0/25")], "ports": [{"port": 22}]}),
        None,
    ),
    Case(
        "egress-to-node-local-dns",
        "full",
        _out({"to": [_block("169.254.20.10/32")], "ports": [{"port": 53, "protocol": "UDP"}]}),
        None,
    ),
    Case(
        "egress-to-node-local-dns-on-another-port",
        "full",
        _out({"to": [_block("169.254.20.10/32")], "ports": [{"port": 80}]}),
        ("egress-ipblock-ports", "spec.egress[0].ports[0]"),
    ),
    Case(
        "egress-to-the-dns-pods",
        "full",
        _out(
            {
                "to": [
                    {**_ns("kube-system"), "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
                ],
                "ports": [{"port": 53, "protocol": "UDP"}],
            }
        ),
        None,
    ),
    Case("same-namespace-egress", "full", _out({"to": [{"podSelector": {}}]}), None),
    # what the policy does not deny is not guarded
    Case("egress-anywhere-when-only-ingress-is-denied", "ingress-only", _out({}), None),
    Case(
        "ingress-anywhere-when-only-ingress-is-denied",
        "ingress-only",
        _in({}),
        ("ingress-from-anywhere", "spec.ingress[0]"),
    ),
    Case("anything-under-an-audit-policy", "audit", _in({}), None),
    Case(
        "ingress-rules-ignored-by-policy-types",
        "full",
        {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "ingress": [{}],
            "egress": [{"to": [{"podSelector": {}}]}],
        },
        None,
    ),
    # several problems: the first one is the message
    Case(
        "first-problem-wins",
        "full",
        {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"namespaceSelector": {}}]}, {}],
            "egress": [{}],
        },
        ("ingress-from-anywhere", "spec.ingress[1]"),
    ),
]


def object_name(case: Case) -> str:
    """A NetworkPolicy name for the case (its id, as a DNS label)."""
    return re.sub(r"[^a-z0-9-]+", "-", case.id.lower()).strip("-")[:63]


def netpol(case: Case, namespace: str) -> dict[str, Any]:
    """The case's NetworkPolicy object in ``namespace``."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": object_name(case), "namespace": namespace},
        "spec": case.spec,
    }


def policy(profile: str, name: str, selector: dict[str, Any]) -> dict[str, Any]:
    """The BaselinePolicy of ``profile``, selecting namespaces by ``selector``."""
    return {
        "apiVersion": "nsbaseline.io/v1alpha1",
        "kind": "BaselinePolicy",
        "metadata": {"name": name},
        "spec": {**PROFILES[profile], "namespaceSelector": selector},
    }
