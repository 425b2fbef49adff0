"""The image installs its dependencies at pinned versions: every runtime dependency is pinned."""

from __future__ import annotations

import re
import tomllib

from tests.support.kube import REPO


def test_every_runtime_dependency_is_pinned_in_constraints_txt() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {re.split(r"[<>=!~ \[]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}
    pinned = {
        line.split("==")[0].strip().lower().replace("_", "-")
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    assert wanted - pinned == set(), "run `make constraints` after changing dependencies"
