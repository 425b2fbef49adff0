"""Bad input is refused by the real API server, with a message that names the offending field.

Every case is a BaselinePolicy applied with ``kubectl apply --validate=strict`` exactly the way a
cluster admin would. The CRD's OpenAPI schema and its CEL rules (``operator/nsbaseline/spec.py``)
must refuse it before anything is stored, so the operator never sees a policy it cannot
enforce. A few valid edge cases pin that the schema is not stricter than the API it mirrors.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import yaml

from tests.support.kube import Cluster

pytestmark = pytest.mark.e2e

_names = itertools.count()


def _doc(spec: Any, name: str | None = None, **top: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "nsbaseline.io/v1alpha1",
        "kind": "BaselinePolicy",
        "metadata": {"name": name or f"invalid-{next(_names)}"},
        "spec": spec,
    }
    body.update(top)
    return body


def _port(**item: Any) -> dict[str, Any]:
    """A spec whose DNS ports hold one entry (the most common place to get ports wrong)."""
    return {"dns": {"ports": [item]}}


def _egress(*items: Any) -> dict[str, Any]:
    return {"egressCIDRs": list(items)}


def _selector_expr(**expr: Any) -> dict[str, Any]:
    return {"namespaceSelector": {"matchExpressions": [expr]}}


# (id, policy document, fragment the API server's message must contain)
INVALID: list[tuple[str, dict[str, Any], str]] = [
    # --- label selectors --------------------------------------------------------------------
    (
        "selector-unknown-operator",
        _doc(_selector_expr(key="team", operator="Matches", values=["a"])),
        'spec.namespaceSelector.matchExpressions[0].operator: Unsupported value: "Matches"',
    ),
    (
        "selector-in-without-values",
        _doc(_selector_expr(key="team", operator="In")),
        "spec.namespaceSelector.matchExpressions[0]: Invalid value: values must be "
        "non-empty for operators In and NotIn",
    ),
    (
        "selector-notin-with-empty-values",
        _doc(_selector_expr(key="team", operator="NotIn", values=[])),
        "spec.namespaceSelector.matchExpressions[0]: Invalid value: values must be non-empty",
    ),
    (
        "selector-exists-with-values",
        _doc(_selector_expr(key="team", operator="Exists", values=["a"])),
        "spec.namespaceSelector.matchExpressions[0]: Invalid value: values must be "
        "non-empty for operators In and NotIn, and empty for Exists and DoesNotExist",
    ),
    (
        "selector-missing-operator",
        _doc(_selector_expr(key="team")),
        "spec.namespaceSelector.matchExpressions[0].operator: Required value",
    ),
    (
        "selector-expression-invalid-key",
        _doc(_selector_expr(key="a/b/c", operator="Exists")),
        "spec.namespaceSelector.matchExpressions[0].key: Invalid value",
    ),
    (
        "selector-invalid-label-key",
        _doc({"namespaceSelector": {"matchLabels": {"bad key!": "x"}}}),
        "spec.namespaceSelector.matchLabels: Invalid value: keys must be valid label keys",
    ),
    (
        "selector-invalid-label-value",
        _doc({"namespaceSelector": {"matchLabels": {"team": "-payments"}}}),
        "spec.namespaceSelector.matchLabels: Invalid value: values must be valid label values",
    ),
    (
        "selector-label-value-too-long",
        _doc({"namespaceSelector": {"matchLabels": {"team": "a" * 64}}}),
        "spec.namespaceSelector.matchLabels.team: Too long",
    ),
    (
        "dns-pod-selector-unknown-operator",
        _doc({"dns": {"podSelector": {"matchExpressions": [{"key": "k", "operator": "Is"}]}}}),
        'spec.dns.podSelector.matchExpressions[0].operator: Unsupported value: "Is"',
    ),
    # --- ports ------------------------------------------------------------------------------
    (
        "port-zero",
        _doc(_port(port=0, protocol="UDP")),
        "spec.dns.ports[0].port: Invalid value: 0: spec.dns.ports[0].port in body should be "
        "greater than or equal to 1",
    ),
    (
        "port-above-65535",
        _doc(_port(port=65536)),
        "spec.dns.ports[0].port: Invalid value: 65536",
    ),
    (
        "port-negative",
        _doc({"monitoring": {"ports": [{"port": -80}]}}),
        "spec.monitoring.ports[0].port: Invalid value: -80",
    ),
    (
        "port-wrong-type-boolean",
        _doc(_port(port=True)),
        "spec.dns.ports[0].port",
    ),
    (
        "port-wrong-type-list",
        _doc({"ingressController": {"ports": [{"port": [80]}]}}),
        "spec.ingressController.ports[0].port",
    ),
    (
        "port-name-uppercase",
        _doc({"monitoring": {"ports": [{"port": "Metrics"}]}}),
        'spec.monitoring.ports[0].port: Invalid value: "Metrics"',
    ),
    (
        "port-name-too-long",
        _doc({"monitoring": {"ports": [{"port": "metrics-exporter"}]}}),
        "spec.monitoring.ports[0].port: Too long",
    ),
    (
        "port-name-without-letter",
        _doc({"monitoring": {"ports": [{"port": "8080"}]}}),
        "spec.monitoring.ports[0].port: Invalid value: a named port must contain at "
        "least one letter",
    ),
    (
        "port-name-double-hyphen",
        _doc({"monitoring": {"ports": [{"port": "web--metrics"}]}}),
        "spec.monitoring.ports[0].port: Invalid value: a named port must contain at "
        "least one letter and no '--'",
    ),
    (
        "end-port-below-port",
        _doc({"ingressController": {"ports": [{"port": 8080, "endPort": 8000}]}}),
        "spec.ingressController.ports[0].endPort: Invalid value: endPort needs a "
        "numeric port and must not be below it",
    ),
    (
        "end-port-with-named-port",
        _doc({"ingressController": {"ports": [{"port": "http", "endPort": 8000}]}}),
        "spec.ingressController.ports[0].endPort: Invalid value: endPort needs a numeric port",
    ),
    (
        "end-port-above-65535",
        _doc({"ingressController": {"ports": [{"port": 8080, "endPort": 70000}]}}),
        "spec.ingressController.ports[0].endPort: Invalid value: 70000",
    ),
    (
        "unknown-protocol",
        _doc(_port(port=53, protocol="ICMP")),
        'spec.dns.ports[0].protocol: Unsupported value: "ICMP"',
    ),
    (
        "duplicate-port-and-protocol",
        _doc(
            {"dns": {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "UDP"}]}}
        ),
        "spec.dns.ports: Invalid value: each port and protocol pair may appear only once",
    ),
    (
        "duplicate-port-with-defaulted-protocol",
        _doc({"monitoring": {"ports": [{"port": 9090}, {"port": 9090, "protocol": "TCP"}]}}),
        "spec.monitoring.ports: Invalid value: each port and protocol pair",
    ),
    (
        "port-missing",
        _doc(_port(protocol="UDP")),
        "spec.dns.ports[0].port: Required value",
    ),
    # --- CIDRs ------------------------------------------------------------------------------
    (
        "cidr-not-an-address",
        _doc(_egress({"cidr": "300.0.0.0/8"})),
        'spec.egressCIDRs[0].cidr: Invalid value: "300.0.0.0/8": must be a CIDR in canonical form',
    ),
    (
        "cidr-non-canonical-host-bits",
        _doc(_egress({"cidr": "10.0.0.1/8"})),
        'spec.egressCIDRs[0].cidr: Invalid value: "10.0.0.1/8": must be a CIDR in canonical '
        "form with the host bits zero",
    ),
    (
        "cidr-without-prefix-length",
        _doc(_egress({"cidr": "10.0.0.0"})),
        'spec.egressCIDRs[0].cidr: Invalid value: "10.0.0.0": must be a CIDR',
    ),
    (
        "cidr-ipv6-non-canonical",
        _doc(_egress({"cidr": "2001:db8::1/32"})),
        'spec.egressCIDRs[0].cidr: Invalid value: "2001:db8::1/32": must be a CIDR in canonical',
    ),
    (
        "cidr-ipv4-mapped-ipv6",
        _doc(_egress({"cidr": "::ffff:10.0.0.0/104"})),
        "spec.egressCIDRs[0].cidr: Invalid value",
    ),
    (
        "except-outside-cidr",
        _doc(_egress({"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16"]})),
        "spec.egressCIDRs[0].except: Invalid value: every except entry must be a "
        "strictly smaller network inside cidr",
    ),
    (
        "except-equal-to-cidr",
        _doc(_egress({"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]})),
        "spec.egressCIDRs[0].except: Invalid value: every except entry must be a "
        "strictly smaller network inside cidr",
    ),
    (
        "except-other-address-family",
        _doc(_egress({"cidr": "10.0.0.0/8", "except": ["2001:db8::/64"]})),
        "spec.egressCIDRs[0].except: Invalid value: every except entry",
    ),
    (
        "except-non-canonical",
        _doc(_egress({"cidr": "10.0.0.0/8", "except": ["10.1.2.3/16"]})),
        'spec.egressCIDRs[0].except[0]: Invalid value: "10.1.2.3/16": must be a CIDR in canonical',
    ),
    (
        "except-duplicate-entries",
        _doc(_egress({"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.1.0.0/16"]})),
        'spec.egressCIDRs[0].except[1]: Duplicate value: "10.1.0.0/16"',
    ),
    (
        "egress-cidrs-duplicate-entries",
        _doc(_egress({"cidr": "203.0.113.0/24"}, {"cidr": "203.0.113.0/24", "ports": []})),
        'spec.egressCIDRs[1]: Duplicate value: {"cidr":"203.0.113.0/24"}',
    ),
    (
        "egress-cidr-missing",
        _doc(_egress({"ports": [{"port": 443}]})),
        "spec.egressCIDRs[0].cidr: Required value",
    ),
    (
        "egress-port-invalid",
        _doc(_egress({"cidr": "203.0.113.0/24", "ports": [{"port": 0}]})),
        "spec.egressCIDRs[0].ports[0].port: Invalid value: 0",
    ),
    # --- namespaces -------------------------------------------------------------------------
    (
        "excluded-namespaces-duplicate",
        _doc({"excludedNamespaces": ["kube-system", "kube-system"]}),
        'spec.excludedNamespaces[1]: Duplicate value: "kube-system"',
    ),
    (
        "excluded-namespace-invalid-name",
        _doc({"excludedNamespaces": ["Kube_System"]}),
        'spec.excludedNamespaces[0]: Invalid value: "Kube_System"',
    ),
    (
        "excluded-namespace-too-long",
        _doc({"excludedNamespaces": ["n" * 64]}),
        "spec.excludedNamespaces[0]: Too long",
    ),
    (
        "dns-namespace-invalid-name",
        _doc({"dns": {"namespace": "kube.system"}}),
        'spec.dns.namespace: Invalid value: "kube.system"',
    ),
    (
        "monitoring-namespace-empty",
        _doc({"monitoring": {"enabled": True, "namespace": ""}}),
        "spec.monitoring.namespace: Invalid value",
    ),
    # --- mode and names ---------------------------------------------------------------------
    (
        "mode-unknown",
        _doc({"mode": "DryRun"}),
        'spec.mode: Unsupported value: "DryRun": supported values: "Enforce", "Audit"',
    ),
    (
        "mode-wrong-case",
        _doc({"mode": "enforce"}),
        'spec.mode: Unsupported value: "enforce"',
    ),
    (
        "policy-name-too-long",
        _doc({}, name="p" * 64),
        "metadata.name must be at most 63 characters",
    ),
    (
        "policy-name-invalid",
        _doc({}, name="Baseline_Policy"),
        'metadata.name: Invalid value: "Baseline_Policy"',
    ),
    (
        "template-name-is-builtin-piece",
        _doc({"templates": [{"name": "default-deny"}]}),
        "spec.templates[0].name: Invalid value: built-in pieces are always rendered",
    ),
    (
        "template-name-invalid",
        _doc({"templates": [{"name": "Allow_Backup"}]}),
        'spec.templates[0].name: Invalid value: "Allow_Backup"',
    ),
    (
        "template-name-path-traversal",
        _doc({"templates": [{"name": "../../etc/passwd"}]}),
        'spec.templates[0].name: Invalid value: "../../etc/passwd"',
    ),
    (
        "template-name-too-long",
        _doc({"templates": [{"name": "t" * 41}]}),
        "spec.templates[0].name: Too long",
    ),
    (
        "template-name-missing",
        _doc({"templates": [{"values": {"port": 8080}}]}),
        "spec.templates[0].name: Required value",
    ),
    (
        "template-name-duplicate",
        _doc({"templates": [{"name": "allow-backup"}, {"name": "allow-backup"}]}),
        'spec.templates[1]: Duplicate value: {"name":"allow-backup"}',
    ),
    (
        "template-values-not-an-object",
        _doc({"templates": [{"name": "allow-backup", "values": ["port", 8080]}]}),
        'spec.templates[0].values: Invalid value: "array": spec.templates[0].values in body '
        "must be of type object",
    ),
    # --- node-local DNS and annotations -----------------------------------------------------
    (
        "node-local-dns-not-an-ip",
        _doc({"dns": {"nodeLocalDNS": "node-local-dns.kube-system"}}),
        'spec.dns.nodeLocalDNS: Invalid value: "node-local-dns.kube-system": must be an IPv4 or '
        "IPv6 address",
    ),
    (
        "node-local-dns-is-a-cidr",
        _doc({"dns": {"nodeLocalDNS": "169.254.20.10/32"}}),
        'spec.dns.nodeLocalDNS: Invalid value: "169.254.20.10/32": must be an IPv4 or IPv6',
    ),
    (
        "annotation-argocd-tracking",
        _doc({"annotations": {"argocd.argoproj.io/tracking-id": "app:/Namespace:x"}}),
        "spec.annotations: Invalid value: GitOps tracking annotations",
    ),
    (
        "annotation-flux-tracking",
        _doc({"annotations": {"kustomize.toolkit.fluxcd.io/name": "apps"}}),
        "spec.annotations: Invalid value: GitOps tracking annotations",
    ),
    (
        "annotation-kubectl-last-applied",
        _doc({"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}}),
        "spec.annotations: Invalid value: GitOps tracking annotations",
    ),
    (
        "annotation-invalid-key",
        _doc({"annotations": {"owner email": "net@example.com"}}),
        "spec.annotations: Invalid value: keys must be valid annotation keys",
    ),
    # --- wrong types ------------------------------------------------------------------------
    (
        "boolean-given-as-string",
        _doc({"defaultDeny": {"egress": "yes"}}),
        'spec.defaultDeny.egress: Invalid value: "string": spec.defaultDeny.egress in body must '
        "be of type boolean",
    ),
    (
        "enabled-given-as-quoted-true",
        _doc({"monitoring": {"enabled": "true"}}),
        'spec.monitoring.enabled: Invalid value: "string"',
    ),
    (
        "object-given-as-list",
        _doc({"dns": []}),
        'spec.dns: Invalid value: "array": spec.dns in body must be of type object',
    ),
    (
        "object-given-as-list-of-objects",
        _doc({"dns": [{"enabled": True}]}),
        'unknown field "spec.dns[0].enabled"',
    ),
    (
        "list-given-as-string",
        _doc({"excludedNamespaces": "kube-system"}),
        'spec.excludedNamespaces: Invalid value: "string": spec.excludedNamespaces in body must '
        "be of type array",
    ),
    (
        "spec-given-as-string",
        _doc("enforce everything"),
        'spec: Invalid value: "string": spec in body must be of type object',
    ),
    # --- unknown fields (strict field validation) -------------------------------------------
    (
        "unknown-field-typo-in-dns",
        _doc({"dns": {"enabeld": False}}),
        'unknown field "spec.dns.enabeld"',
    ),
    (
        "unknown-field-in-spec",
        _doc({"defaultDeny": {"ingress": True}, "egress": {"cidrs": ["0.0.0.0/0"]}}),
        'unknown field "spec.egress"',
    ),
    (
        "unknown-field-in-port",
        _doc(_port(port=53, proto="UDP")),
        'unknown field "spec.dns.ports[0].proto"',
    ),
    (
        "unknown-top-level-field",
        _doc({}, extra={"enforce": True}),
        'unknown field "extra"',
    ),
    # --- too many items ---------------------------------------------------------------------
    (
        "too-many-ports",
        _doc({"monitoring": {"ports": [{"port": p} for p in range(9000, 9017)]}}),
        "spec.monitoring.ports: Too many: 17: must have at most 16 items",
    ),
    (
        "too-many-egress-cidrs",
        _doc(_egress(*({"cidr": f"10.{i}.0.0/16"} for i in range(65)))),
        "spec.egressCIDRs: Too many: 65: must have at most 64 items",
    ),
    (
        "too-many-excluded-namespaces",
        _doc({"excludedNamespaces": [f"ns-{i}" for i in range(257)]}),
        "spec.excludedNamespaces: Too many: 257: must have at most 256 items",
    ),
    (
        "too-many-match-labels",
        _doc({"namespaceSelector": {"matchLabels": {f"k{i}": "v" for i in range(33)}}}),
        "spec.namespaceSelector.matchLabels: Too many: 33: must have at most 32 items",
    ),
    (
        "too-many-templates",
        _doc({"templates": [{"name": f"extra-{i}"} for i in range(17)]}),
        "spec.templates: Too many: 17: must have at most 16 items",
    ),
]

# Valid edge cases: accepted, so the schema is not stricter than the API it mirrors.
VALID: list[tuple[str, dict[str, Any]]] = [
    ("empty-spec-takes-defaults", {}),
    ("empty-selector-matches-everything", {"namespaceSelector": {}}),
    (
        "port-bounds-and-ranges",
        {
            "dns": {"ports": [{"port": 1, "protocol": "UDP"}, {"port": 1, "protocol": "TCP"}]},
            "ingressController": {
                "enabled": True,
                "ports": [{"port": 65535, "endPort": 65535}, {"port": 1024, "endPort": 2048}],
            },
            "monitoring": {"enabled": True, "ports": [{"port": "metrics"}, {"port": "h2c"}]},
        },
    ),
    (
        "selector-operators",
        {
            "namespaceSelector": {
                "matchLabels": {"example.com/team": "payments", "empty": ""},
                "matchExpressions": [
                    {"key": "tier", "operator": "Exists"},
                    {"key": "legacy", "operator": "DoesNotExist", "values": []},
                    {"key": "env", "operator": "NotIn", "values": ["dev", "test"]},
                ],
            }
        },
    ),
    (
        "ipv4-and-ipv6-networks",
        {
            "egressCIDRs": [
                {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "169.254.169.254/32"]},
                {"cidr": "2001:db8::/32", "except": ["2001:db8:1::/48"]},
                {"cidr": "203.0.113.7/32", "ports": [{"port": 443}]},
            ],
            "dns": {"nodeLocalDNS": "fd00::a"},
        },
    ),
    (
        "extra-template-with-nested-values",
        {
            "templates": [
                {"name": "allow-backup", "values": {"ports": [8443], "peer": {"app": "velero"}}}
            ],
            "annotations": {"example.com/owner": "netsec", "description": "baseline"},
        },
    ),
]


def _apply(cluster: Cluster, doc: dict[str, Any]) -> Any:
    return cluster.kubectl(
        "apply", "--validate=strict", "-f", "-", input=yaml.safe_dump(doc), check=False
    )


@pytest.mark.parametrize(("doc", "fragment"), [pytest.param(d, f, id=i) for i, d, f in INVALID])
def test_malformed_policy_is_refused_naming_the_field(
    cluster: Cluster, doc: dict[str, Any], fragment: str
) -> None:
    proc = _apply(cluster, doc)
    message = proc.stderr + proc.stdout
    if proc.returncode == 0:  # do not leave an accepted case behind for the next tests
        cluster.kubectl("delete", "baselinepolicy", doc["metadata"]["name"], check=False)
    assert proc.returncode != 0, f"accepted a malformed policy:\n{yaml.safe_dump(doc)}{message}"
    assert fragment in message, f"message does not name the field ({fragment!r}):\n{message}"
    name = doc["metadata"]["name"]
    if name.islower() and len(name) <= 253:
        assert cluster.get("baselinepolicy", name) is None


def test_suite_covers_at_least_35_malformed_policies() -> None:
    assert len(INVALID) >= 35
    assert len({case_id for case_id, _, _ in INVALID}) == len(INVALID)


@pytest.mark.parametrize("spec", [pytest.param(s, id=i) for i, s in VALID])
def test_valid_edge_case_is_accepted(cluster: Cluster, spec: dict[str, Any]) -> None:
    name = f"valid-{next(_names)}"
    try:
        proc = _apply(cluster, _doc(spec, name=name))
        assert proc.returncode == 0, proc.stderr
        stored = cluster.get("baselinepolicy", name)
        assert stored is not None
        assert stored["spec"]["mode"] == "Enforce"  # defaults were filled in
    finally:
        cluster.kubectl("delete", "baselinepolicy", name, "--ignore-not-found", check=False)


def test_policy_name_of_63_characters_is_accepted(cluster: Cluster) -> None:
    name = "p" * 63
    try:
        assert _apply(cluster, _doc({}, name=name)).returncode == 0
        assert cluster.get("baselinepolicy", name) is not None
    finally:
        cluster.kubectl("delete", "baselinepolicy", name, "--ignore-not-found", check=False)
