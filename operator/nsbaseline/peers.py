"""Syntactic reasoning about NetworkPolicy peers, for lint: which selector matches everything,
which is weaker than another, which peer covers another (peers are OR'd). Pure.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from typing import Any


def is_all(selector: Mapping[str, Any] | None) -> bool:
    return not selector or (
        not selector.get("matchLabels") and not selector.get("matchExpressions")
    )


def weaker(broad: Mapping[str, Any] | None, narrow: Mapping[str, Any] | None) -> bool:
    """Syntactically: every object ``narrow`` matches is matched by ``broad``."""
    if is_all(broad):
        return True
    if is_all(narrow):
        return False
    assert broad is not None and narrow is not None
    narrow_labels = narrow.get("matchLabels") or {}
    narrow_exprs = [json.dumps(e, sort_keys=True) for e in narrow.get("matchExpressions") or []]
    for key, value in (broad.get("matchLabels") or {}).items():
        if narrow_labels.get(key) != value:
            return False
    for expr in broad.get("matchExpressions") or []:
        if json.dumps(expr, sort_keys=True) in narrow_exprs:
            continue
        key, op = expr.get("key"), expr.get("operator")
        if op == "Exists" and key in narrow_labels:
            continue
        if op == "In" and narrow_labels.get(key) in (expr.get("values") or []):
            continue
        return False
    return True


def networks(block: Mapping[str, Any]) -> tuple[Any, list[Any]] | None:
    try:
        net = ipaddress.ip_network(block["cidr"], strict=False)
        excepts = [ipaddress.ip_network(e, strict=False) for e in block.get("except") or []]
    except (ValueError, KeyError, TypeError):
        return None
    return net, excepts


def peer_covers(broad: Mapping[str, Any], narrow: Mapping[str, Any]) -> bool:
    if "ipBlock" in broad or "ipBlock" in narrow:
        if not ("ipBlock" in broad and "ipBlock" in narrow):
            return False
        b, n = networks(broad["ipBlock"]), networks(narrow["ipBlock"])
        if b is None or n is None or b[0].version != n[0].version:
            return False
        return bool(n[0].subnet_of(b[0])) and not any(e.overlaps(n[0]) for e in b[1])
    b_ns, n_ns = broad.get("namespaceSelector"), narrow.get("namespaceSelector")
    if b_ns is None and n_ns is not None:
        return False
    if b_ns is not None and n_ns is None and not is_all(b_ns):
        return False
    if b_ns is not None and n_ns is not None and not weaker(b_ns, n_ns):
        return False
    return weaker(broad.get("podSelector"), narrow.get("podSelector"))


__all__ = ["is_all", "networks", "peer_covers", "weaker"]
