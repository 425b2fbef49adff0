"""The BaselinePolicy API: crds/ is generated from the typed model (spec.py), documented, and
defaulted identically offline (``nsbaseline render``) and by the API server (structural
defaulting from crds/)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hack import gen_crd
from nsbaseline import crd
from nsbaseline.model import BaselinePolicy
from nsbaseline.spec import BaselinePolicySpec, LabelSelector

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "baselinepolicies.nsbaseline.io.yaml"


def _crd_from_file() -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(CRD_FILE.read_text())
    return crd


def _root_schema(crd: dict[str, Any]) -> dict[str, Any]:
    [version] = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def apply_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    """What offline rendering makes of a spec: parsed into the typed model, dumped back."""
    return BaselinePolicySpec.from_json(spec).to_json()


def _server_default(value: Any, schema: dict[str, Any]) -> Any:
    """Structural defaulting as the API server documents it, written independently of
    the typed model: prune nulls of non-nullable fields, fill missing defaulted properties,
    then recurse into properties, array items and additionalProperties."""
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key in list(value):
            if value[key] is None and key in props and not props[key].get("nullable"):
                del value[key]
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = _server_default(value[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                if key not in props:
                    value[key] = _server_default(value[key], extra)
    elif isinstance(value, list) and "items" in schema:
        return [_server_default(v, schema["items"]) for v in value]
    return value


SPECS: list[dict[str, Any]] = [
    {},
    {"mode": "Audit", "defaultDeny": {"egress": False}},
    {"dns": {"nodeLocalDNS": "169.254.20.10", "ports": [{"port": 53}]}},
    {"monitoring": {"enabled": True, "ports": [{"port": 9090}, {"port": "metrics"}]}},
    {"ingressController": {"enabled": True, "podSelector": {}}},
    {"egressCIDRs": [{"cidr": "10.0.0.0/8", "ports": [{"port": 443}, {"port": 53}]}]},
    {"namespaceSelector": {}, "excludedNamespaces": []},
    {"namespaceSelector": None, "dns": None, "mode": None},
    {"templates": [{"name": "extra", "values": {"port": None, "x": {"y": 1}}}]},
    {
        "namespaceSelector": {
            "matchLabels": {"team": "a"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod"]},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        },
        "annotations": {"nsbaseline.io/owner": "platform"},
        "exceptions": [
            {
                "namespace": "team-a",
                "pieces": ["default-deny"],
                "reason": "INC-1",
                "expiresAt": "2030-01-01T00:00:00Z",
            }
        ],
        "egressCIDRs": [
            {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"], "ports": [{"port": 1, "endPort": 9}]}
        ],
        "monitoring": {"ports": [{"port": "metrics", "protocol": "SCTP"}], "podSelector": None},
    },
]


@pytest.mark.parametrize("spec", SPECS, ids=[str(i) for i in range(len(SPECS))])
def test_offline_defaults_equal_the_crd_structural_defaults(spec: dict[str, Any]) -> None:
    crd_spec_schema = _root_schema(_crd_from_file())["properties"]["spec"]
    expected = _server_default(copy.deepcopy(spec), crd_spec_schema)
    assert apply_defaults(spec) == expected


def test_defaults_of_an_empty_spec() -> None:
    assert apply_defaults({}) == {
        "namespaceSelector": {"matchLabels": {"nsbaseline.io/enabled": "true"}},
        "excludedNamespaces": ["kube-system", "kube-public", "kube-node-lease"],
        "mode": "Enforce",
        "defaultDeny": {"ingress": True, "egress": True},
        "dns": {
            "enabled": True,
            "namespace": "kube-system",
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
        },
        "monitoring": {
            "enabled": False,
            "namespace": "monitoring",
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
            "ports": [],
        },
        "ingressController": {
            "enabled": False,
            "namespace": "ingress-nginx",
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
            "ports": [],
        },
    }


def test_null_selector_gets_the_opt_in_default_not_everything() -> None:
    """``namespaceSelector:`` left empty in YAML is null; the API server prunes it and defaults
    it, so offline rendering must not read it as "no selector, select every namespace"."""
    policy = BaselinePolicy.from_body(
        {"metadata": {"name": "p"}, "spec": {"namespaceSelector": None}}
    )
    assert policy.spec.namespace_selector == LabelSelector(
        match_labels={"nsbaseline.io/enabled": "true"}
    )


def test_explicit_values_win_and_nested_defaults_fill_in() -> None:
    out = apply_defaults({"dns": {"namespace": "dns"}, "egressCIDRs": [{"cidr": "192.0.2.0/24"}]})
    assert out["dns"]["namespace"] == "dns"
    assert out["dns"]["enabled"] is True
    assert out["egressCIDRs"] == [{"cidr": "192.0.2.0/24"}]
    ports = apply_defaults({"egressCIDRs": [{"cidr": "192.0.2.0/24", "ports": [{"port": 1}]}]})
    assert ports["egressCIDRs"][0]["ports"] == [{"port": 1, "protocol": "TCP"}]


def test_apply_defaults_is_idempotent_and_leaves_its_input_alone() -> None:
    spec = {"monitoring": {"enabled": True}}
    once = apply_defaults(spec)
    assert spec == {"monitoring": {"enabled": True}}
    assert apply_defaults(once) == once
    once["dns"]["ports"].append({"port": 1})
    assert len(apply_defaults({})["dns"]["ports"]) == 2  # defaults are copied, never shared


def test_crds_file_is_what_gen_crd_writes() -> None:
    assert gen_crd.TARGET == CRD_FILE
    assert CRD_FILE.read_text() == gen_crd.render(), "crds/ is stale: run `make crds`"
    assert _crd_from_file() == crd.crd()


def _properties(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for key, sub in (schema.get("properties") or {}).items():
        yield f"{path}.{key}", sub
        yield from _properties(sub, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        yield from _properties(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _properties(schema["additionalProperties"], f"{path}{{}}")


def test_every_schema_property_has_a_description() -> None:
    """``kubectl explain`` shows these; an undocumented field is an unusable field."""
    root = _root_schema(_crd_from_file())
    assert root.get("description")
    paths = dict(_properties(root))
    assert ".spec.dns.nodeLocalDNS" in paths and ".status.conditions[].status" in paths
    missing = [path for path, sub in paths.items() if not str(sub.get("description", "")).strip()]
    # metadata may only carry its type: the API server refuses a CRD that describes it.
    assert missing == [".metadata"]


def test_crd_identity_and_printer_columns() -> None:
    crd = _crd_from_file()
    assert crd["metadata"]["name"] == "baselinepolicies.nsbaseline.io"
    spec = crd["spec"]
    assert (spec["group"], spec["scope"]) == ("nsbaseline.io", "Cluster")
    assert spec["names"]["kind"] == "BaselinePolicy"
    assert spec["names"]["shortNames"] == ["bp"]
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Mode", "Matched", "Compliant", "Ready", "Age"} <= columns


def test_schema_is_structural_enough_for_defaults_to_apply() -> None:
    """Every defaulted property sits under typed objects all the way up (no defaults hidden
    under x-kubernetes-preserve-unknown-fields, where the API server would not apply them)."""
    root = _root_schema(_crd_from_file())
    for path, sub in _properties(root):
        if "default" in sub:
            assert "x-kubernetes-preserve-unknown-fields" not in sub, path
            assert sub.get("type") or "anyOf" in sub or sub.get("x-kubernetes-int-or-string"), path
