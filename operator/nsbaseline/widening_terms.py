"""The terms the guardrail's rules are written in: selectors, ports and networks. Pure.

Kept apart from :mod:`nsbaseline.widening` (the rules and their messages) so each reads on its
own; the CEL of the guardrail admission policy mirrors these definitions one for one.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any

from nsbaseline import names

_RANGE = re.compile(r"^[0-9]+-[0-9]+$")
_NUMBER = re.compile(r"^[0-9]+$")


# ----- selectors ------------------------------------------------------------------------------
def open_selector(selector: Mapping[str, Any] | None) -> bool:
    """Matches every namespace: no positive term (labels, In, Exists on a label other than the
    name label every namespace has)."""
    selector = selector or {}
    if selector.get("matchLabels"):
        return False
    for expr in selector.get("matchExpressions") or []:
        op, key = expr.get("operator"), expr.get("key")
        if op in ("NotIn", "DoesNotExist"):
            continue
        if op == "Exists" and key == names.NAMESPACE_NAME_LABEL:
            continue
        return False
    return True


def names_namespace(selector: Mapping[str, Any] | None, namespace: str) -> bool:
    """The selector names ``namespace`` by its immutable name label."""
    if selector is None:
        return False
    if (selector.get("matchLabels") or {}).get(names.NAMESPACE_NAME_LABEL) == namespace:
        return True
    return any(
        e.get("key") == names.NAMESPACE_NAME_LABEL
        and e.get("operator") == "In"
        and namespace in (e.get("values") or [])
        for e in selector.get("matchExpressions") or []
    )


# ----- ports: ("TCP", lo, hi), lo == hi for one port or a name, as the CEL keeps them ---------
Port = tuple[str, str, str]


def from_spec(port: Mapping[str, Any]) -> Port:
    lo = str(port["port"])
    hi = str(port["endPort"]) if port.get("endPort") is not None else lo
    return (str(port.get("protocol") or "TCP"), lo, hi)


def from_annotation(text: str) -> list[Port]:
    """``80,443/TCP,8000-8080,http``; parsed exactly like the admission policy's CEL does."""
    out: list[Port] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        parts = item.split("/")
        protocol = parts[1].upper() if len(parts) > 1 else "TCP"
        port = parts[0]
        lo, hi = port.split("-")[:2] if _RANGE.match(port) else (port, port)
        out.append((protocol, lo, hi))
    return out


def allowed_ports(
    spec_ports: Sequence[Mapping[str, Any]], annotation: str, annotations: Mapping[str, str] | None
) -> list[Port]:
    """The ports a peer may reach: the namespace's annotation overrides the policy's list."""
    if annotations and annotation in annotations:
        return from_annotation(annotations[annotation])
    return [from_spec(p) for p in spec_ports]


def covered(port: Mapping[str, Any], allowed: Sequence[Port]) -> bool:
    protocol = str(port.get("protocol") or "TCP")
    value = port.get("port")
    if value is None:
        return False
    for a_protocol, lo, hi in allowed:
        if a_protocol != protocol:
            continue
        if isinstance(value, str):
            if lo == value:
                return True
        elif _NUMBER.match(lo) and _NUMBER.match(hi):
            end = port.get("endPort")
            if int(lo) <= int(value) and int(end if end is not None else value) <= int(hi):
                return True
    return False


def first_uncovered(rule: Mapping[str, Any], allowed: Sequence[Port]) -> tuple[int, str] | None:
    """(index, words) of the first port of ``rule`` outside ``allowed``; index -1 when the rule
    has no ports (every port)."""
    ports = rule.get("ports") or []
    if not ports:
        return -1, "every port"
    for k, port in enumerate(ports):
        if not covered(port, allowed):
            return k, words(port)
    return None


def words(port: Mapping[str, Any]) -> str:
    """``port 8080/TCP``, ``port 8000-8080/TCP`` or ``every UDP port``."""
    protocol = str(port.get("protocol") or "TCP")
    value = port.get("port")
    if value is None:
        return f"every {protocol} port"
    end = port.get("endPort")
    return f"port {value}{'-' + str(end) if end is not None else ''}/{protocol}"


def show(allowed: Sequence[Port]) -> str:
    return ", ".join(
        f"{lo}{'' if lo == hi else '-' + hi}/{protocol}" for protocol, lo, hi in allowed
    )


# ----- networks -------------------------------------------------------------------------------
def prefix(cidr: Any) -> int | None:
    try:
        return ipaddress.ip_network(str(cidr), strict=False).prefixlen
    except ValueError:
        return None


def allowed_networks(bp: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``egressCIDRs`` entries, plus the node-local DNS address on the DNS ports."""
    out = [
        {
            "cidr": str(e["cidr"]),
            "except": [str(x) for x in e.get("except") or []],
            "ports": [from_spec(p) for p in e.get("ports") or []],
        }
        for e in bp.get("egressCIDRs") or []
    ]
    dns = bp.get("dns") or {}
    local = dns.get("nodeLocalDNS")
    if dns.get("enabled") and local:
        cidr = f"{local}/{128 if ':' in str(local) else 32}"
        out.append(
            {"cidr": cidr, "except": [], "ports": [from_spec(p) for p in dns.get("ports") or []]}
        )
    return out


def show_network(network: Mapping[str, Any]) -> str:
    excepts = network["except"]
    return str(network["cidr"]) + (" except " + ", ".join(excepts) if excepts else "")


def contains(outer: str, inner: str) -> bool:
    try:
        a = ipaddress.ip_network(outer, strict=False)
        b = ipaddress.ip_network(inner, strict=False)
    except ValueError:
        return False
    return a.version == b.version and b.subnet_of(a)  # type: ignore[arg-type]


def inside(block: Mapping[str, Any], network: Mapping[str, Any]) -> bool:
    """Every address ``block`` allows is one ``network`` allows."""
    cidr = str(block.get("cidr"))
    if not contains(network["cidr"], cidr):
        return False
    own = [str(x) for x in block.get("except") or []]
    for excluded in network["except"]:
        if contains(excluded, cidr):
            return False  # the whole block is excluded
        if contains(cidr, excluded) and not any(contains(x, excluded) for x in own):
            return False  # part of the block is excluded, and the block does not exclude it
    return True


__all__ = [
    "allowed_networks",
    "allowed_ports",
    "contains",
    "covered",
    "first_uncovered",
    "from_annotation",
    "from_spec",
    "inside",
    "names_namespace",
    "open_selector",
    "prefix",
    "show",
    "show_network",
    "words",
]
