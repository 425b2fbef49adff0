"""Typed API objects and their OpenAPI schema, from one declaration. Pure, no dependencies.

An API type is a frozen dataclass whose fields are declared with :func:`api`: each carries its
description, bounds, list type and CEL rules; its Python default is its API default. From that
one declaration this module derives three things, so they cannot disagree:

- :func:`openapi`: the structural OpenAPI v3 schema the CRD publishes (``crds/``, ``kubectl
  explain``, docs/reference.md);
- :func:`parse`: a spec as written (JSON/YAML data) -> the typed object, defaulted the way the
  API server's structural defaulting does it: a null of a non-nullable field counts as absent,
  absent fields take their default (recursively), unknown fields are pruned. A value of the
  wrong JSON type raises :class:`SpecError` naming the field; the finer rules (bounds, patterns,
  CEL) are the API server's to enforce and are not checked here;
- :func:`dump`: the typed object -> the JSON the API server would store.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, Union

Schema = dict[str, Any]
#: Where a value sits in a document: ``("spec", "dns", "ports", 0, "port")``.
Path = tuple[str | int, ...]
T = TypeVar("T")

#: The ``default`` of :func:`api` for a required field.
REQUIRED: Any = dataclasses.MISSING


@dataclass(frozen=True)
class Rule:
    """One CEL validation rule (``x-kubernetes-validations``)."""

    rule: str
    message: str
    field_path: str | None = None

    def schema(self) -> Schema:
        out: Schema = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


@dataclass(frozen=True, kw_only=True)
class Bounds:
    """What restricts a value, in OpenAPI terms: on a field, or on the items of a list (or the
    values of a map) of scalars, which have no field of their own to carry it."""

    description: str = ""
    format: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    minimum: int | None = None
    maximum: int | None = None
    min_items: int | None = None
    max_items: int | None = None
    max_properties: int | None = None
    list_type: Literal["atomic", "set", "map"] | None = None
    list_map_keys: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()

    def keywords(self) -> Schema:
        """The OpenAPI keywords, without ``x-kubernetes-validations`` (merged by the caller)."""
        pairs = (
            ("description", self.description or None),
            ("format", self.format),
            ("minLength", self.min_length),
            ("maxLength", self.max_length),
            ("pattern", self.pattern),
            ("minimum", self.minimum),
            ("maximum", self.maximum),
            ("minItems", self.min_items),
            ("maxItems", self.max_items),
            ("maxProperties", self.max_properties),
            ("x-kubernetes-list-type", self.list_type),
            ("x-kubernetes-list-map-keys", list(self.list_map_keys) or None),
        )
        return {key: value for key, value in pairs if value is not None}


@dataclass(frozen=True, kw_only=True)
class Meta:
    """A field's API metadata, kept in ``dataclasses.field(metadata={"api": ...})``."""

    bounds: Bounds
    json_name: str | None = None
    items: Bounds | None = None
    values: Bounds | None = None


def api(
    description: str,
    default: Any = REQUIRED,
    *,
    bounds: Bounds | None = None,
    items: Bounds | None = None,
    values: Bounds | None = None,
    json_name: str | None = None,
) -> Any:
    """Declare a field of an API type: its description, its default (omit it for a required
    field, ``None`` for an optional one without default), bounds and rules (``bounds``), those of
    the items of a list of scalars (``items``) or of the values of a map (``values``), and its
    JSON name when it is not the camelCase of the attribute (``egressCIDRs``)."""
    meta = Meta(
        bounds=dataclasses.replace(bounds or Bounds(), description=description),
        json_name=json_name,
        items=items,
        values=values,
    )
    if default is REQUIRED:
        return dataclasses.field(metadata={"api": meta})
    if default is None:
        return dataclasses.field(default=None, metadata={"api": meta})
    # Defaults are shared, never mutated (every API type is frozen; maps are read as Mapping).
    return dataclasses.field(default_factory=lambda: default, metadata={"api": meta})


class SpecError(ValueError):
    """A value of the wrong type; the message names the field, e.g. ``spec.dns.ports[0].port``."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{format_path(path)}: {reason}")
        self.path = path
        self.reason = reason


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


@dataclass(frozen=True)
class _Field:
    name: str
    json: str
    type: Any  # without ``| None``
    meta: Meta
    default: Any  # REQUIRED, None or the default value


def _camel(name: str) -> str:
    head, *rest = name.rstrip("_").split("_")
    return head + "".join(part.capitalize() for part in rest)


def _strip_none(tp: Any) -> Any:
    """``X | None`` -> ``X``: an optional field (``None`` is never a value on the wire)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (Union, types.UnionType) and type(None) in args:
        [inner] = [a for a in args if a is not type(None)]
        return inner
    return tp


def fields_of(cls: Any) -> tuple[_Field, ...]:
    """The declared fields of an API type, in declaration order (cached per class)."""
    return _fields(cls)


def _fields(cls: Any) -> tuple[_Field, ...]:
    """The API fields of a class, read once per class (type hints are slow to resolve)."""
    return _read_fields(cls)


@functools.cache
def _read_fields(cls: type) -> tuple[_Field, ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("api")
        if not isinstance(meta, Meta):
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with api()")
        tp = _strip_none(hints[f.name])
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = REQUIRED
        out.append(_Field(f.name, meta.json_name or _camel(f.name), tp, meta, default))
    return tuple(out)


# ----- schema ---------------------------------------------------------------------------------
def openapi(cls: type) -> Schema:
    """The structural schema of an API type: an object with its fields as properties."""
    fields = _fields(cls)
    out: Schema = {"type": "object"}
    required = [f.json for f in fields if f.default is REQUIRED]
    if required:
        out["required"] = required
    out["properties"] = {f.json: _field_schema(f) for f in fields}
    rules = _type_rules(cls)
    if rules:
        out["x-kubernetes-validations"] = [r.schema() for r in rules]
    return out


def _type_rules(cls: type) -> tuple[Rule, ...]:
    rules: tuple[Rule, ...] = getattr(cls, "API_RULES", ())
    return rules


def _field_schema(f: _Field) -> Schema:
    base = _type_schema(f.type, f.meta.items, f.meta.values)
    head: Schema = {k: base.pop(k) for k in ("type", "x-kubernetes-int-or-string") if k in base}
    out: Schema = {**head, **f.meta.bounds.keywords()}
    if f.default is not REQUIRED and f.default is not None:
        out["default"] = _schema_default(f.default)
    rules = [*base.pop("x-kubernetes-validations", []), *(r.schema() for r in f.meta.bounds.rules)]
    out.update(base)
    if rules:
        out["x-kubernetes-validations"] = rules
    return out


def _schema_default(value: Any) -> Any:
    """The default as the CRD states it: ``{}`` for an object whose fields all default."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        try:
            if value == type(value)():
                return {}
        except TypeError:  # a type with required fields
            pass
    return _dump_value(value)


def _type_schema(tp: Any, items: Bounds | None = None, values: Bounds | None = None) -> Schema:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is str:
        return {"type": "string"}
    if origin is Literal:
        return {"type": "string", "enum": list(args)}
    if origin in (Union, types.UnionType) and set(args) == {int, str}:
        return {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
        }
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return {"type": "array", "items": _scalar_schema(args[0], items)}
    if origin is Mapping and args[1] is Any:
        return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if origin is Mapping:
        return {"type": "object", "additionalProperties": _scalar_schema(args[1], values)}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return openapi(tp)
    raise TypeError(f"no OpenAPI schema for {tp!r}")


def _scalar_schema(tp: Any, bounds: Bounds | None) -> Schema:
    out = _type_schema(tp)
    if bounds is not None:
        out.update(bounds.keywords())
        if bounds.rules:
            out["x-kubernetes-validations"] = [r.schema() for r in bounds.rules]
    return out


def dump(obj: Any) -> dict[str, Any]:
    """An API object as the JSON the API server stores: absent optional fields left out."""
    return {
        f.json: _dump_value(getattr(obj, f.name))
        for f in _fields(type(obj))
        if getattr(obj, f.name) is not None
    }


def _dump_value(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dump(value)
    if isinstance(value, tuple):
        return [_dump_value(v) for v in value]
    if isinstance(value, Mapping):
        return copy.deepcopy(dict(value))
    return value


__all__ = [
    "REQUIRED",
    "Bounds",
    "Path",
    "Rule",
    "Schema",
    "SpecError",
    "api",
    "dump",
    "fields_of",
    "format_path",
    "openapi",
]
