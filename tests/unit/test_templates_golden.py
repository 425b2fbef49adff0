"""The built-in templates, rendered for representative policies and namespaces, against golden YAML.

One golden file per case in ``tests/unit/golden/``. After an intended template change, regenerate
with ``UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_templates_golden.py`` and review the diff:
the goldens are the reviewed statement of what each piece puts in a cluster. The semantic tests
below check the NetworkPolicy meaning independently of the exact text.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from nsbaseline import canonical, names
from nsbaseline.model import Namespace
from nsbaseline.policy_render import render_policy
from nsbaseline.render import TemplateSet, builtin_template_dir
from tests.support.builders import NOW, namespace, opted_in, policy

GOLDEN = Path(__file__).parent / "golden"
NOTHING = "# renders nothing\n"
TEMPLATES = TemplateSet()
OWNER = {"nsbaseline.io/owner": "platform-team", "example.com/ticket": "SEC-101"}

#: case -> (piece, policy spec, namespace)
CASES: dict[str, tuple[str, dict[str, Any], Namespace]] = {
    "default-deny--defaults": ("default-deny", {}, opted_in()),
    "default-deny--ingress-only": ("default-deny", {"defaultDeny": {"egress": False}}, opted_in()),
    "default-deny--egress-only": ("default-deny", {"defaultDeny": {"ingress": False}}, opted_in()),
    "default-deny--both-off": (
        "default-deny",
        {"defaultDeny": {"ingress": False, "egress": False}},
        opted_in(),
    ),
    "default-deny--policy-annotations": ("default-deny", {"annotations": OWNER}, opted_in()),
    "allow-dns--defaults": ("allow-dns", {}, opted_in()),
    "allow-dns--node-local-ipv4": (
        "allow-dns",
        {"dns": {"nodeLocalDNS": "169.254.20.10"}},
        opted_in(),
    ),
    "allow-dns--node-local-ipv6": ("allow-dns", {"dns": {"nodeLocalDNS": "fd00::a"}}, opted_in()),
    "allow-dns--custom-peer": (
        "allow-dns",
        {
            "dns": {
                "namespace": "dns-system",
                "podSelector": {
                    "matchExpressions": [
                        {"key": "app", "operator": "In", "values": ["unbound", "coredns"]}
                    ]
                },
                "ports": [{"port": 5353, "protocol": "UDP"}],
            }
        },
        opted_in("team-b"),
    ),
    "allow-dns--egress-not-denied": ("allow-dns", {"defaultDeny": {"egress": False}}, opted_in()),
    "allow-dns--disabled": ("allow-dns", {"dns": {"enabled": False}}, opted_in()),
    "allow-monitoring--default-off": ("allow-monitoring", {}, opted_in()),
    "allow-monitoring--all-ports": (
        "allow-monitoring",
        {"monitoring": {"enabled": True}},
        opted_in(),
    ),
    "allow-monitoring--spec-ports": (
        "allow-monitoring",
        {"monitoring": {"enabled": True, "ports": [{"port": 9090}, {"port": "metrics"}]}},
        opted_in(),
    ),
    "allow-monitoring--annotation-ports": (
        "allow-monitoring",
        {"monitoring": {"enabled": True, "ports": [{"port": 9090}]}},
        opted_in(**{"nsbaseline.io/monitoring-ports": "9100, 8080/tcp,http-metrics"}),
    ),
    "allow-monitoring--ingress-not-denied": (
        "allow-monitoring",
        {"monitoring": {"enabled": True}, "defaultDeny": {"ingress": False}},
        opted_in(),
    ),
    "allow-ingress-controller--all-ports": (
        "allow-ingress-controller",
        {"ingressController": {"enabled": True}},
        opted_in(),
    ),
    "allow-ingress-controller--annotation-ports": (
        "allow-ingress-controller",
        {"ingressController": {"enabled": True, "ports": [{"port": 80}]}},
        opted_in("team-b", **{"nsbaseline.io/ingress-ports": "8080,8443,9000-9100/TCP"}),
    ),
    "allow-ingress-controller--custom-peer": (
        "allow-ingress-controller",
        {
            "ingressController": {
                "enabled": True,
                "namespace": "traefik",
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "traefik"}},
                "ports": [{"port": 8000, "endPort": 8100}, {"port": "web"}],
            }
        },
        opted_in(),
    ),
    "allow-ingress-controller--ingress-not-denied": (
        "allow-ingress-controller",
        {"ingressController": {"enabled": True}, "defaultDeny": {"ingress": False}},
        opted_in(),
    ),
    "allow-egress-cidrs--empty": ("allow-egress-cidrs", {}, opted_in()),
    "allow-egress-cidrs--networks": (
        "allow-egress-cidrs",
        {
            "egressCIDRs": [
                {"cidr": "203.0.113.0/24", "ports": [{"port": 443}]},
                {
                    "cidr": "10.0.0.0/8",
                    "except": ["10.96.0.0/12", "10.1.0.0/16"],
                    "ports": [{"port": 5432}, {"port": 6379, "protocol": "TCP"}],
                },
                {"cidr": "2001:db8::/32"},
            ],
            "annotations": OWNER,
        },
        opted_in(),
    ),
    "allow-egress-cidrs--egress-not-denied": (
        "allow-egress-cidrs",
        {"egressCIDRs": [{"cidr": "203.0.113.0/24"}], "defaultDeny": {"egress": False}},
        opted_in(),
    ),
}


def _render_text(case: str) -> str:
    piece, spec, ns = CASES[case]
    obj = TEMPLATES.render(piece, ns, policy("baseline", uid="0b5e1e7e-uid", **spec))
    if obj is None:
        return NOTHING
    return yaml.safe_dump(dict(obj.body), sort_keys=False, width=100)


@pytest.mark.parametrize("case", sorted(CASES))
def test_builtin_template_renders_its_golden_file(case: str) -> None:
    path = GOLDEN / f"{case}.yaml"
    text = _render_text(case)
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"missing golden {path.name}: run with UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text()


def test_every_builtin_template_has_golden_cases_and_no_golden_is_stale() -> None:
    templates = {p.name.removesuffix(".yaml.j2") for p in builtin_template_dir().glob("*.yaml.j2")}
    assert templates == set(names.BUILTIN_PIECES)
    assert {piece for piece, _, _ in CASES.values()} == templates
    assert {p.stem for p in GOLDEN.glob("*.yaml")} == set(CASES)


def test_golden_outputs_are_already_canonical() -> None:
    """Rendered specs are a fixed point of the normal form, so a read-back compares equal."""
    for case in CASES:
        text = (GOLDEN / f"{case}.yaml").read_text()
        if text == NOTHING:
            continue
        body = yaml.safe_load(text)
        assert canonical.spec(body["spec"]) == body["spec"], case


# --- NetworkPolicy meaning, independent of the golden text ---


def _pieces(spec: dict[str, Any], ns: Namespace | None = None) -> dict[str, Any]:
    result = render_policy(TEMPLATES, ns or opted_in(), policy("baseline", **spec), NOW)
    assert not result.errors
    return {o.piece: o.body for o in result.objects}


@pytest.mark.parametrize(
    ("deny_ingress", "deny_egress", "dns", "monitoring", "ingress_controller", "cidrs"),
    list(itertools.product([True, False], repeat=6)),
)
def test_allow_pieces_render_only_when_their_direction_is_denied(
    deny_ingress: bool,
    deny_egress: bool,
    dns: bool,
    monitoring: bool,
    ingress_controller: bool,
    cidrs: bool,
) -> None:
    """An allow piece on its own would isolate pods in its direction: it exists only beside
    the default-deny of that direction."""
    spec = {
        "defaultDeny": {"ingress": deny_ingress, "egress": deny_egress},
        "dns": {"enabled": dns},
        "monitoring": {"enabled": monitoring},
        "ingressController": {"enabled": ingress_controller},
        "egressCIDRs": [{"cidr": "192.0.2.0/24"}] if cidrs else [],
    }
    expected = set()
    if deny_ingress or deny_egress:
        expected.add("default-deny")
    if dns and deny_egress:
        expected.add("allow-dns")
    if cidrs and deny_egress:
        expected.add("allow-egress-cidrs")
    if monitoring and deny_ingress:
        expected.add("allow-monitoring")
    if ingress_controller and deny_ingress:
        expected.add("allow-ingress-controller")
    pieces = _pieces(spec)
    assert set(pieces) == expected
    for piece, body in pieces.items():
        direction = {"Ingress": deny_ingress, "Egress": deny_egress}
        assert all(direction[t] for t in body["spec"]["policyTypes"]), piece


def test_default_deny_selects_every_pod_and_allows_nothing() -> None:
    spec = _pieces({})["default-deny"]["spec"]
    assert spec == {"podSelector": {}, "policyTypes": ["Egress", "Ingress"]}


def test_dns_peer_is_the_dns_namespace_by_its_immutable_name_label_on_udp_and_tcp_53() -> None:
    spec = _pieces({"dns": {"nodeLocalDNS": "169.254.20.10"}})["allow-dns"]["spec"]
    assert spec["policyTypes"] == ["Egress"]
    assert spec["podSelector"] == {}
    [rule] = spec["egress"]
    assert sorted((p["protocol"], p["port"]) for p in rule["ports"]) == [("TCP", 53), ("UDP", 53)]
    pod_peer = next(p for p in rule["to"] if "podSelector" in p)
    # One peer: namespace AND pods (two list items would OR them and allow any kube-system pod).
    assert pod_peer == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }
    assert {"ipBlock": {"cidr": "169.254.20.10/32"}} in rule["to"]
    assert len(rule["to"]) == 2


def test_node_local_dns_ipv6_address_becomes_a_128_block() -> None:
    spec = _pieces({"dns": {"nodeLocalDNS": "fd00::a"}})["allow-dns"]["spec"]
    assert {"ipBlock": {"cidr": "fd00::a/128"}} in spec["egress"][0]["to"]


@pytest.mark.parametrize("piece", ["allow-monitoring", "allow-ingress-controller"])
def test_ingress_peers_use_the_immutable_namespace_name_label(piece: str) -> None:
    spec = _pieces({"monitoring": {"enabled": True}, "ingressController": {"enabled": True}})[
        piece
    ]["spec"]
    [rule] = spec["ingress"]
    [peer] = rule["from"]
    assert set(peer["namespaceSelector"]["matchLabels"]) == {names.NAMESPACE_NAME_LABEL}
    assert peer["podSelector"]["matchLabels"]
    assert "ports" not in rule  # empty list in the spec: all ports


def test_namespace_annotation_overrides_the_ingress_controller_ports() -> None:
    ns = opted_in(**{"nsbaseline.io/ingress-ports": "8443"})
    spec = _pieces({"ingressController": {"enabled": True, "ports": [{"port": 80}]}}, ns)[
        "allow-ingress-controller"
    ]["spec"]
    assert spec["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8443}]


def test_generated_objects_carry_name_labels_annotations_and_owner() -> None:
    pol = policy("baseline", uid="u-1", annotations=OWNER)
    result = render_policy(TEMPLATES, namespace("team-a"), pol, NOW)
    for obj in result.objects:
        meta = obj.body["metadata"]
        assert meta["name"] == f"nsbaseline-baseline-{obj.piece}"
        assert meta["namespace"] == "team-a"
        assert meta["labels"] == {
            "app.kubernetes.io/managed-by": "nsbaseline",
            "nsbaseline.io/policy": "baseline",
            "nsbaseline.io/piece": obj.piece,
        }
        assert OWNER.items() <= meta["annotations"].items()
        assert meta["annotations"]["nsbaseline.io/description"]
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "nsbaseline.io/v1alpha1",
                "kind": "BaselinePolicy",
                "name": "baseline",
                "uid": "u-1",
                "controller": True,
                "blockOwnerDeletion": False,
            }
        ]


def test_rendering_is_deterministic_across_template_sets() -> None:
    spec = CASES["allow-egress-cidrs--networks"][1]
    first = render_policy(TemplateSet(), opted_in(), policy("baseline", **spec), NOW)
    second = render_policy(TemplateSet(), opted_in(), policy("baseline", **spec), NOW)
    assert first.objects == second.objects
