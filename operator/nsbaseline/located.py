"""YAML documents with the line of every key, so lint findings can say ``file:line``.

:func:`load_with_lines` keeps the YAML marks of a file; :func:`rendered` places an object a
template rendered at its BaselinePolicy's line, or at the template line that names each key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from nsbaseline.schema import Path


@dataclass(frozen=True)
class Located:
    """A document with the line of every key and list item in it (1-based)."""

    data: Any
    file: str
    lines: Mapping[Path, int] = field(default_factory=dict)
    #: Added to every line: a rendered document reported at its BaselinePolicy's position.
    fixed_line: int | None = None
    #: What the document is when it is not the file's own text, e.g. "piece allow-dns".
    origin: str = ""

    def line(self, path: Path) -> int | None:
        if self.fixed_line is not None:
            return self.fixed_line
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None


def load_with_lines(text: str, file: str) -> list[Located]:
    """Every YAML document in ``text``, with the line of each key (for "file:line" findings)."""
    loader = yaml.SafeLoader(text)
    out = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            lines: dict[Path, int] = {}
            _marks(node, (), lines)
            out.append(Located(loader.construct_document(node), file, lines))
    finally:
        loader.dispose()
    return out


def _marks(node: yaml.Node, path: Path, lines: dict[Path, int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*path, str(key.value))
            lines[sub] = key.start_mark.line + 1
            _marks(value, sub, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _marks(item, (*path, index), lines)


def rendered(
    body: Mapping[str, Any],
    file: str,
    line: int | None,
    source_text: str | None = None,
    origin: str = "",
) -> Located:
    """A rendered NetworkPolicy reported at ``file``: at ``line``, or for a template at the line
    of the template that first mentions the offending key (``source_text``)."""
    if source_text is None:
        return Located(dict(body), file, {}, line, origin)
    return Located(dict(body), file, _template_lines(body, source_text), None, origin)


def _template_lines(body: Mapping[str, Any], text: str) -> dict[Path, int]:
    """Best effort: map each key path of a rendered object to the first template line naming its
    last key, searching forward from the line found for the parent."""
    source = text.splitlines()
    lines: dict[Path, int] = {}

    def find(key: str, start: int) -> int:
        for number in range(start, len(source) + 1):
            if f"{key}:" in source[number - 1]:
                return number
        return start

    def walk(value: Any, path: Path, start: int) -> None:
        lines[path] = start
        if isinstance(value, Mapping):
            for key, sub in value.items():
                walk(sub, (*path, str(key)), find(str(key), start))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, (*path, i), start)

    walk(body, (), 1)
    return lines


__all__ = ["Located", "Path", "load_with_lines", "rendered"]
