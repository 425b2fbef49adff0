"""What ``nsbaseline lint`` reports: one :class:`Finding` per problem, printed or as JSON. Pure.

Kept apart from :mod:`nsbaseline.lint` (the checks) because findings are made in two places: the
checks, and the ``lint`` command itself for what stops a file from being checked at all (YAML it
cannot read, templates that do not render).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """One thing lint reports: how bad, which check, and where (file, line, field)."""

    severity: Severity
    code: str
    message: str
    file: str
    line: int | None = None
    path: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        at = f" ({self.path})" if self.path else ""
        return f"{where}: {self.severity}: {self.message}{at} [{self.code}]"

    def as_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "path": self.path,
        }


__all__ = ["Finding", "Severity"]
