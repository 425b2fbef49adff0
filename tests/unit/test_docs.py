"""docs/reference.md is generated from the API module; these tests keep it from drifting.

Besides the byte-for-byte check, they walk the schema independently of the generator so that a
generator bug which silently drops fields or rules cannot pass as "up to date".
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gen_docs
import pytest

from nsbaseline import api

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _schema_nodes(schema: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield schema
    for sub in (schema.get("properties") or {}).values():
        yield from _schema_nodes(sub)
    if isinstance(schema.get("items"), dict):
        yield from _schema_nodes(schema["items"])


def _root() -> dict[str, Any]:
    schema: dict[str, Any] = api.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_committed_reference_is_up_to_date() -> None:
    assert gen_docs.main(["--check"]) == 0, "docs/reference.md is stale: run `make docs`"


def test_check_fails_on_a_stale_or_missing_file(tmp_path: Path) -> None:
    stale = tmp_path / "reference.md"
    stale.write_text(gen_docs.render().replace("Audit", "Dry-run"))
    assert gen_docs.main(["--check"], target=stale) == 1
    assert gen_docs.main(["--check"], target=tmp_path / "missing.md") == 1


def test_regenerating_writes_exactly_what_check_expects(tmp_path: Path) -> None:
    target = tmp_path / "docs" / "reference.md"
    assert gen_docs.main([], target=target) == 0
    assert gen_docs.main(["--check"], target=target) == 0


def test_every_description_and_validation_message_appears() -> None:
    text = gen_docs.render()
    for node in _schema_nodes(_root()):
        if "description" in node:
            assert node["description"] in text
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["message"] in text


def test_every_enum_value_bound_and_pattern_appears() -> None:
    text = gen_docs.render()
    for node in _schema_nodes(_root()):
        for value in node.get("enum", []):
            assert f"`{value}`" in text
        if "pattern" in node:
            assert f"pattern `{node['pattern']}`" in text
        for key in ("maximum", "maxItems", "maxLength"):
            if key in node:
                assert str(node[key]) in text


@pytest.mark.parametrize(
    "path",
    [
        "spec.namespaceSelector.matchExpressions[].operator",
        "spec.dns.ports[].protocol",
        "spec.egressCIDRs[].except",
        "spec.templates[].values",
        "status.conditions[].reason",
        "status.pendingChanges[].action",
    ],
)
def test_nested_fields_get_their_own_entry(path: str) -> None:
    assert f"### `{path}`" in gen_docs.render()


def test_printer_columns_and_condition_reasons_are_listed() -> None:
    text = gen_docs.render()
    for column in api.crd()["spec"]["versions"][0]["additionalPrinterColumns"]:
        assert column["jsonPath"] in text
    for reason in ("NoNamespacesSelected", "Compliant", "TemplateError", "Conflict", "AuditClean"):
        assert f"`{reason}`" in text
