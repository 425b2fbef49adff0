"""Per-namespace parameters from ``nsbaseline.io/`` annotations: port lists and their errors."""

from __future__ import annotations

import pytest

from nsbaseline.params import (
    INGRESS_PORTS,
    MONITORING_PORTS,
    ParamError,
    namespace_params,
    parse_ports,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("80", [{"protocol": "TCP", "port": 80}]),
        (" 80 , 443/TCP ", [{"protocol": "TCP", "port": 80}, {"protocol": "TCP", "port": 443}]),
        ("53/udp", [{"protocol": "UDP", "port": 53}]),
        ("3868/SCTP", [{"protocol": "SCTP", "port": 3868}]),
        ("8000-8080", [{"protocol": "TCP", "port": 8000, "endPort": 8080}]),
        ("8000-8000/UDP", [{"protocol": "UDP", "port": 8000, "endPort": 8000}]),
        ("http", [{"protocol": "TCP", "port": "http"}]),
        ("http-metrics/TCP", [{"protocol": "TCP", "port": "http-metrics"}]),
        ("1,65535", [{"protocol": "TCP", "port": 1}, {"protocol": "TCP", "port": 65535}]),
        ("", []),
        (" , ,", []),
    ],
)
def test_port_lists_parse(text: str, expected: list[dict[str, object]]) -> None:
    assert parse_ports(INGRESS_PORTS, text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("80/ICMP", "unknown protocol"),
        ("0", "not in 1-65535"),
        ("65536", "not in 1-65535"),
        ("8080-8000", "ends before it starts"),
        ("1-70000", "not in 1-65535"),
        ("80-", "is not a port"),
        ("-80", "is not a port"),
        ("HTTP", "is not a port"),
        ("web_server", "is not a port"),
        ("a-very-long-port-name", "is not a port"),
        ("-http", "is not a port"),
        # The API server refuses these on a NetworkPolicy (IANA service names), as the CRD does.
        ("http--alt", "is not a port"),
        ("80 443", "is not a port"),
        ("80/TCP/UDP", "unknown protocol"),
    ],
)
def test_bad_port_lists_are_errors_naming_the_annotation(text: str, reason: str) -> None:
    with pytest.raises(ParamError) as caught:
        parse_ports(MONITORING_PORTS, text)
    assert "nsbaseline.io/monitoring-ports" in str(caught.value)
    assert reason in str(caught.value)


def test_one_bad_item_fails_the_whole_list() -> None:
    with pytest.raises(ParamError, match="'nope!'"):
        parse_ports(INGRESS_PORTS, "80,nope!,443")


def test_namespace_params_are_none_when_unset() -> None:
    assert namespace_params({}) == {"ingressPorts": None, "monitoringPorts": None}
    assert namespace_params({"other.io/ingress-ports": "80"})["ingressPorts"] is None


def test_namespace_params_read_both_annotations() -> None:
    params = namespace_params({INGRESS_PORTS: "443", MONITORING_PORTS: "9090/TCP"})
    assert params == {
        "ingressPorts": [{"protocol": "TCP", "port": 443}],
        "monitoringPorts": [{"protocol": "TCP", "port": 9090}],
    }


def test_namespace_params_error_names_the_offending_annotation() -> None:
    with pytest.raises(ParamError, match=r"nsbaseline\.io/ingress-ports"):
        namespace_params({INGRESS_PORTS: "99999", MONITORING_PORTS: "9090"})
