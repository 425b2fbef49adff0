"""The login is backed by the official ``kubernetes`` client's configuration loader (issue 10):
it must be a declared dependency of the package, not something that happens to be installed."""

from __future__ import annotations

import re
import tomllib

from tests.support.kube import REPO


def _declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {
        re.split(r"[\s<>=!~;\[]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]
    }


def test_the_kubernetes_client_is_a_declared_dependency() -> None:
    assert "kubernetes" in _declared()
