"""The settings of the built-in pieces in a BaselinePolicy spec: default-deny, the three peers
(allow-dns, allow-monitoring, allow-ingress-controller) and the networks of allow-egress-cidrs.

Part of the typed API declared in :mod:`nsbaseline.spec`.
"""

# Every field default below is made by api(), a dataclasses.field() with API metadata.
# ruff: noqa: RUF009

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from nsbaseline import names
from nsbaseline.schema import Bounds, Rule, api
from nsbaseline.spec_blocks import LabelSelector, Port, dns_name, ports_field, selector_field


@dataclass(frozen=True, kw_only=True)
class DefaultDeny:
    ingress: bool = api("Deny all ingress not allowed by another policy.", True)
    egress: bool = api(
        "Deny all egress not allowed by another policy (keep dns enabled, or name resolution "
        "breaks).",
        True,
    )


def _enabled(piece: str, default: bool) -> Any:
    return api(f"Render the {piece} piece.", default)


def _peer_namespace(default: str) -> Any:
    return api(
        f"Namespace of the peer pods, matched by its immutable {names.NAMESPACE_NAME_LABEL} label.",
        default,
        bounds=dns_name(),
    )


def _peer_pods(default: LabelSelector) -> Any:
    return selector_field("Selects the peer pods in that namespace.", default)


def _app(name: str) -> LabelSelector:
    return LabelSelector(match_labels={"app.kubernetes.io/name": name})


@dataclass(frozen=True, kw_only=True)
class Peer:
    """A piece that allows traffic from or to pods of one namespace (the three blocks below)."""

    enabled: bool
    namespace: str
    pod_selector: LabelSelector
    ports: tuple[Port, ...]


@dataclass(frozen=True, kw_only=True)
class DnsPeer(Peer):
    enabled: bool = _enabled("allow-dns", True)
    namespace: str = _peer_namespace("kube-system")
    pod_selector: LabelSelector = _peer_pods(LabelSelector(match_labels={"k8s-app": "kube-dns"}))
    ports: tuple[Port, ...] = ports_field(
        "DNS ports.", (Port(port=53, protocol="UDP"), Port(port=53, protocol="TCP"))
    )
    node_local_dns: str | None = api(
        "Address of a node-local DNS cache (e.g. 169.254.20.10); when set, egress to it on the "
        "DNS ports is allowed too.",
        None,
        bounds=Bounds(
            max_length=39,
            rules=(Rule("isIP(self)", "must be an IPv4 or IPv6 address, e.g. 169.254.20.10"),),
        ),
        json_name="nodeLocalDNS",
    )


@dataclass(frozen=True, kw_only=True)
class MonitoringPeer(Peer):
    enabled: bool = _enabled("allow-monitoring", False)
    namespace: str = _peer_namespace("monitoring")
    pod_selector: LabelSelector = _peer_pods(_app("prometheus"))
    ports: tuple[Port, ...] = ports_field(
        "Ports Prometheus may scrape; empty means all ports. The namespace annotation "
        f"{names.ANNOTATION_PREFIX}monitoring-ports overrides it.",
        (),
    )


@dataclass(frozen=True, kw_only=True)
class IngressControllerPeer(Peer):
    enabled: bool = _enabled("allow-ingress-controller", False)
    namespace: str = _peer_namespace("ingress-nginx")
    pod_selector: LabelSelector = _peer_pods(_app("ingress-nginx"))
    ports: tuple[Port, ...] = ports_field(
        "Ports the ingress controller may reach; empty means all ports. The namespace "
        f"annotation {names.ANNOTATION_PREFIX}ingress-ports overrides it.",
        (),
    )


def _cidr(description: str) -> Bounds:
    return Bounds(
        description=description,
        max_length=43,
        rules=(
            Rule(
                "isCIDR(self) && cidr(self) == cidr(self).masked()",
                "must be a CIDR in canonical form with the host bits zero, e.g. 10.0.0.0/8 or "
                "2001:db8::/32",
            ),
        ),
    )


@dataclass(frozen=True, kw_only=True)
class EgressCIDR:
    """An external network pods may reach (allow-egress-cidrs)."""

    cidr: str = api("The network, e.g. 203.0.113.0/24.", bounds=_cidr(""))
    except_: tuple[str, ...] | None = api(
        "Sub-networks of cidr that stay denied.",
        None,
        bounds=Bounds(max_items=32, list_type="set"),
        items=_cidr("A sub-network of cidr."),
    )
    ports: tuple[Port, ...] | None = ports_field("Ports allowed; empty means all ports.")

    API_RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "!has(self.except) || !isCIDR(self.cidr) || self.except.all(e, isCIDR(e) && "
            "cidr(self.cidr).containsCIDR(e) && cidr(e).prefixLength() > "
            "cidr(self.cidr).prefixLength())",
            "every except entry must be a strictly smaller network inside cidr",
            ".except",
        ),
    )


__all__ = [
    "DefaultDeny",
    "DnsPeer",
    "EgressCIDR",
    "IngressControllerPeer",
    "MonitoringPeer",
    "Peer",
]
