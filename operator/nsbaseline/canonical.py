"""Canonical form of a NetworkPolicy spec, so desired and actual compare exactly.

The API server defaults ``protocol`` to TCP and drops empty lists; order carries no meaning in
rules, peers, ports, policyTypes and selector expressions. Putting both sides through the same
normal form means "different" always means a real change, and a write is sent only then.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


def _sort_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _selector(selector: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if selector.get("matchLabels"):
        out["matchLabels"] = {str(k): str(v) for k, v in sorted(selector["matchLabels"].items())}
    exprs = []
    for expr in selector.get("matchExpressions") or []:
        e: dict[str, Any] = {"key": expr["key"], "operator": expr["operator"]}
        if expr.get("values"):
            e["values"] = sorted(str(v) for v in expr["values"])
        exprs.append(e)
    if exprs:
        out["matchExpressions"] = sorted(exprs, key=_sort_key)
    return out


def _port(port: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"protocol": port.get("protocol") or "TCP"}
    if port.get("port") is not None:
        value = port["port"]
        out["port"] = int(value) if isinstance(value, str) and value.isdigit() else value
    if port.get("endPort") is not None:
        out["endPort"] = int(port["endPort"])
    return out


def _peer(peer: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # A present-but-empty selector means "all", an absent one "none/this namespace": keep {}.
    for key in ("podSelector", "namespaceSelector"):
        if key in peer and peer[key] is not None:
            out[key] = _selector(peer[key])
    if peer.get("ipBlock"):
        block: dict[str, Any] = {"cidr": peer["ipBlock"]["cidr"]}
        if peer["ipBlock"].get("except"):
            block["except"] = sorted(peer["ipBlock"]["except"])
        out["ipBlock"] = block
    return out


def _rule(rule: Mapping[str, Any], peers_key: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    peers = [_peer(p) for p in rule.get(peers_key) or []]
    if peers:
        out[peers_key] = _dedupe_sorted(peers)
    port_list = [_port(p) for p in rule.get("ports") or []]
    if port_list:
        out["ports"] = _dedupe_sorted(port_list)
    return out


def _dedupe_sorted(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    unique = {_sort_key(i): i for i in items}
    return [unique[k] for k in sorted(unique)]


def policy_types(spec: Mapping[str, Any]) -> list[str]:
    """``policyTypes`` as the API server defaults it: as written, else Ingress, plus Egress when
    the policy has egress rules."""
    written: list[str] = list(spec.get("policyTypes") or ())
    if written:
        return written
    return ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]


def spec(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Return the canonical form of a NetworkPolicy ``spec``."""
    out: dict[str, Any] = {"podSelector": _selector(raw.get("podSelector") or {})}
    out["policyTypes"] = sorted(set(policy_types(raw)))
    ingress = [_rule(r, "from") for r in raw.get("ingress") or []]
    if ingress:
        out["ingress"] = _dedupe_sorted(ingress)
    egress = [_rule(r, "to") for r in raw.get("egress") or []]
    if egress:
        out["egress"] = _dedupe_sorted(egress)
    return out


def fingerprint(value: Any) -> str:
    """A stable text form of any JSON-like value, for equality checks and caching."""
    return _sort_key(value)
