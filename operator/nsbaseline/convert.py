"""API objects to and from the JSON the API server stores, with its defaulting. Pure.

:func:`parse` reads JSON as written (a file, a watch event) into the typed model, filling in the
schema's defaults and pruning nulls exactly as the API server's structural defaulting does, and
refusing a value of the wrong type with :class:`~nsbaseline.schema.SpecError`, which names the
field. (Writing a model back as JSON is :func:`nsbaseline.schema.dump`: the CRD's defaults need it.)
"""

from __future__ import annotations

import copy
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

from nsbaseline.schema import REQUIRED, Path, SpecError, fields_of

T = TypeVar("T")


def parse(cls: type[T], data: Any, path: Path) -> T:
    """``data`` (JSON as written) as an instance of ``cls``, defaulted as the API server does."""
    if not isinstance(data, Mapping):
        raise SpecError(path, "must be a mapping")
    kwargs: dict[str, Any] = {}
    for f in fields_of(cls):
        value = data.get(f.json)
        if value is None:  # absent, or a null the API server would prune
            if f.default is REQUIRED:
                raise SpecError((*path, f.json), "is required")
            kwargs[f.name] = f.default
        else:
            kwargs[f.name] = _convert(f.type, value, (*path, f.json))
    made: T = typing.cast(Any, cls)(**kwargs)
    return made


def _convert(tp: Any, value: Any, path: Path) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if tp is bool:
        if not isinstance(value, bool):
            raise SpecError(path, "must be true or false")
        return value
    if tp is int:
        if not is_int:
            raise SpecError(path, "must be an integer")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise SpecError(path, "must be a string")
        return value
    if origin is Literal:
        if value not in args:
            raise SpecError(path, "must be one of " + ", ".join(args))
        return value
    if origin in (Union, types.UnionType):  # int | str: an int-or-string
        if not (is_int or isinstance(value, str)):
            raise SpecError(path, "must be an integer or a string")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise SpecError(path, "must be a list")
        return tuple(_convert(args[0], item, (*path, i)) for i, item in enumerate(value))
    if origin is Mapping:
        if not isinstance(value, Mapping):
            raise SpecError(path, "must be a mapping")
        for key in value:
            if not isinstance(key, str):
                raise SpecError(path, f"key {key!r} must be a string")
        if args[1] is Any:
            return copy.deepcopy(dict(value))
        return {k: _convert(args[1], v, (*path, k)) for k, v in value.items()}
    return parse(tp, value, path)


__all__ = ["parse"]
