"""The typed BaselinePolicy model: what parsing a spec as written gives, and how it fails.

The CRD and its defaults are checked against crds/ in test_api_schema.py; these tests pin what
the code relies on when it reads ``policy.spec``.
"""

from __future__ import annotations

from typing import Any

import pytest

from nsbaseline import crd, names
from nsbaseline.schema import SpecError, openapi
from nsbaseline.spec import BaselinePolicySpec, LabelSelector, Port


def test_an_empty_spec_reads_as_every_default() -> None:
    spec = BaselinePolicySpec.from_json({})
    assert spec == BaselinePolicySpec()
    assert spec.namespace_selector == LabelSelector(match_labels={names.OPT_IN_LABEL: "true"})
    assert spec.mode == "Enforce"
    assert spec.dns.ports == (Port(port=53, protocol="UDP"), Port(port=53, protocol="TCP"))
    assert spec.dns.node_local_dns is None
    assert spec.egress_cidrs is None and spec.exceptions is None and spec.templates is None


def test_irregular_json_names_map_to_snake_case_attributes() -> None:
    spec = BaselinePolicySpec.from_json(
        {
            "dns": {"nodeLocalDNS": "169.254.20.10"},
            "egressCIDRs": [{"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}],
            "ingressController": {"enabled": True, "ports": [{"port": 80, "endPort": 90}]},
        }
    )
    assert spec.dns.node_local_dns == "169.254.20.10"
    assert spec.egress_cidrs is not None and spec.egress_cidrs[0].except_ == ("10.1.0.0/16",)
    assert spec.ingress_controller.ports == (Port(port=80, end_port=90, protocol="TCP"),)
    assert spec.to_json()["egressCIDRs"] == [{"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}]


def test_unknown_fields_are_pruned_as_the_api_server_does() -> None:
    spec = BaselinePolicySpec.from_json({"namespaceSelecter": {}, "dns": {"enabeld": False}})
    assert spec == BaselinePolicySpec()
    assert "namespaceSelecter" not in spec.to_json()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"mode": "audit"}, "spec.mode: must be one of Enforce, Audit"),
        ({"dns": "yes"}, "spec.dns: must be a mapping"),
        ({"dns": {"enabled": "true"}}, "spec.dns.enabled: must be true or false"),
        ({"dns": {"ports": [{"port": 53.5}]}}, "spec.dns.ports[0].port: must be an integer or"),
        ({"dns": {"ports": [{"protocol": "UDP"}]}}, "spec.dns.ports[0].port: is required"),
        ({"excludedNamespaces": "kube-system"}, "spec.excludedNamespaces: must be a list"),
        ({"annotations": {"a": 1}}, "spec.annotations.a: must be a string"),
        ({"exceptions": [{"namespace": "a"}]}, "spec.exceptions[0].pieces: is required"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_naming_the_field(
    raw: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError) as caught:
        BaselinePolicySpec.from_json(raw)
    assert str(caught.value).startswith(message)


def test_free_form_template_values_are_kept_as_written_and_copied() -> None:
    values = {"port": None, "nested": {"list": [1, "two"]}}
    spec = BaselinePolicySpec.from_json({"templates": [{"name": "extra", "values": values}]})
    assert spec.templates is not None and spec.templates[0].values == values
    dumped = spec.to_json()
    dumped["templates"][0]["values"]["nested"]["list"].append(3)
    assert spec.templates[0].values == values


def test_defaults_are_never_shared_with_what_callers_get() -> None:
    first = BaselinePolicySpec().to_json()
    first["dns"]["ports"].append({"port": 1})
    first["namespaceSelector"]["matchLabels"]["x"] = "y"
    assert BaselinePolicySpec().to_json()["dns"]["ports"] == [
        {"port": 53, "protocol": "UDP"},
        {"port": 53, "protocol": "TCP"},
    ]
    assert BaselinePolicySpec().namespace_selector.match_labels == {names.OPT_IN_LABEL: "true"}


def test_the_crd_spec_schema_is_generated_from_the_model() -> None:
    generated = openapi(BaselinePolicySpec)
    published = crd.spec_schema()
    assert published["properties"] == generated["properties"]
    assert published["default"] == {}
    dns = published["properties"]["dns"]
    assert dns["default"] == {}  # the object's fields carry their own defaults
    assert dns["properties"]["ports"]["default"] == [
        {"port": 53, "protocol": "UDP"},
        {"port": 53, "protocol": "TCP"},
    ]
    assert dns["properties"]["ports"]["items"]["required"] == ["port"]


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("http", True),
        ("metrics-2", True),
        ("a", True),
        ("8080", False),  # all digits: a number, not a name
        ("http--alt", False),
        ("-http", False),
        ("HTTP", False),
        ("a-very-long-port-name", False),
    ],
)
def test_port_names_follow_one_rule(text: str, valid: bool) -> None:
    """names.is_port_name is the rule the CRD states in its schema and CEL (spec_blocks.Port)."""
    assert names.is_port_name(text) is valid
