"""Structural defaulting, as the API server does it, driven by the CRD schema in :mod:`api`.

Offline rendering (``nsbaseline render``) reads BaselinePolicy files that never passed through
the API server; applying the very same schema defaults here keeps its output identical to what the
operator renders in the cluster.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from nsbaseline import api


@cache
def _spec_schema() -> dict[str, Any]:
    return api.spec_schema()


def _default(value: Any, schema: dict[str, Any]) -> Any:
    if isinstance(value, dict) and schema.get("type") == "object":
        props: dict[str, Any] = schema.get("properties") or {}
        for key, sub in props.items():
            # The API server prunes nulls of non-nullable fields before defaulting, so
            # ``namespaceSelector: null`` gets the opt-in default, not "select everything".
            if key in value and value[key] is None and not sub.get("nullable"):
                del value[key]
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = _default(value[key], sub)
    elif isinstance(value, list) and "items" in schema:
        return [_default(item, schema["items"]) for item in value]
    return value


def apply_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    """Return ``spec`` with every schema default filled in (idempotent; input not mutated)."""
    result: dict[str, Any] = _default(copy.deepcopy(spec), _spec_schema())
    return result
