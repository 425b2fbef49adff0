"""Per-namespace parameters, read from namespace annotations under ``nsbaseline.io/``.

Namespace owners often know things the platform team does not (which ports their ingress
controller must reach). Annotations let them say so without editing the cluster-wide policy; a
malformed value is a render error for that namespace only, and the baseline already in place stays.

Documented annotations:

``nsbaseline.io/ingress-ports``
    Ports the ingress controller may reach in this namespace, overriding
    ``spec.ingressController.ports``. Comma-separated: ``80``, ``443/TCP``, ``8000-8080``, ``http``.
``nsbaseline.io/monitoring-ports``
    Ports Prometheus may scrape in this namespace, overriding ``spec.monitoring.ports``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nsbaseline import names

INGRESS_PORTS = names.ANNOTATION_PREFIX + "ingress-ports"
MONITORING_PORTS = names.ANNOTATION_PREFIX + "monitoring-ports"


class ParamError(ValueError):
    """A namespace annotation that cannot be understood."""


def parse_ports(annotation: str, text: str) -> list[dict[str, Any]]:
    """Parse ``80,443/TCP,8000-8080/UDP,http`` into NetworkPolicy port entries."""
    result: list[dict[str, Any]] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        port_part, _, protocol = item.partition("/")
        protocol = protocol.upper() or "TCP"
        if protocol not in names.PROTOCOLS:
            raise ParamError(f"annotation {annotation}: unknown protocol in {item!r}")
        entry: dict[str, Any] = {"protocol": protocol}
        low, dash, high = port_part.partition("-")
        if low.isdigit() and (not dash or high.isdigit()):
            entry["port"] = int(low)
            if dash:
                entry["endPort"] = int(high)
                if entry["endPort"] < entry["port"]:
                    raise ParamError(
                        f"annotation {annotation}: range {item!r} ends before it starts"
                    )
            for value in (entry["port"], entry.get("endPort", 1)):
                if not 1 <= value <= names.MAX_PORT:
                    raise ParamError(
                        f"annotation {annotation}: port {value} is not in 1-{names.MAX_PORT}"
                    )
        elif names.is_port_name(port_part):
            entry["port"] = port_part
        else:
            raise ParamError(
                f"annotation {annotation}: {item!r} is not a port, a range like 8000-8080, "
                "or a port name"
            )
        result.append(entry)
    return result


def namespace_params(annotations: Mapping[str, str]) -> dict[str, Any]:
    """The parameters templates see as ``params``; ``None`` where the namespace sets nothing."""
    out: dict[str, Any] = {"ingressPorts": None, "monitoringPorts": None}
    if INGRESS_PORTS in annotations:
        out["ingressPorts"] = parse_ports(INGRESS_PORTS, annotations[INGRESS_PORTS])
    if MONITORING_PORTS in annotations:
        out["monitoringPorts"] = parse_ports(MONITORING_PORTS, annotations[MONITORING_PORTS])
    return out
