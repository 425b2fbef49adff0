"""The shipped resources, the sizing guide and the Kopf setting they rest on stay in step.

docs/sizing.md derives the shipped memory request and limit from bench figures; these tests
fail when someone changes the numbers in one place (kustomize, chart, guide) but not the others,
or caps Kopf's workers, which deadlocks the start-up with indexes (see ``handlers._tune``).
"""

from __future__ import annotations

from typing import Any

import kopf
import yaml

from nsbaseline import handlers
from tests.support.kube import REPO


def _deployment_resources() -> dict[str, Any]:
    for doc in yaml.safe_load_all((REPO / "deploy" / "base" / "deployment.yaml").read_text()):
        if doc and doc.get("kind") == "Deployment":
            resources: dict[str, Any] = doc["spec"]["template"]["spec"]["containers"][0][
                "resources"
            ]
            return resources
    raise AssertionError("no Deployment in deploy/base/deployment.yaml")


def test_kustomize_and_chart_ship_the_same_resources() -> None:
    values = yaml.safe_load((REPO / "charts" / "nsbaseline" / "values.yaml").read_text())
    assert values["resources"] == _deployment_resources()


def test_sizing_guide_names_the_shipped_request_and_limit() -> None:
    guide = (REPO / "docs" / "sizing.md").read_text()
    resources = _deployment_resources()
    for kind in ("requests", "limits"):
        quantity = str(resources[kind]["memory"])
        assert f"`{quantity}`" in guide, f"docs/sizing.md does not mention the shipped {quantity}"


def test_kopf_workers_stay_uncapped_because_a_cap_deadlocks_the_indexed_start_up() -> None:
    settings = kopf.OperatorSettings()
    handlers._tune(settings)
    assert settings.queueing.worker_limit is None
