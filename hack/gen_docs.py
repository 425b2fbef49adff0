"""Write docs/reference.md from the typed BaselinePolicy API in operator/nsbaseline/spec.py.

The reference is generated (``make docs``) rather than written so that it cannot disagree with
what the API server enforces: every field, default, bound, enum, pattern and CEL message comes
from the same classes that generate crds/. ``--check`` exits non-zero when the committed file
is stale; tests/unit/test_docs.py runs it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from nsbaseline import crd, names
from nsbaseline.assessment import Assessment, Failure
from nsbaseline.spec import BaselinePolicySpec
from nsbaseline.status import policy_status

Schema = dict[str, Any]
TARGET = Path(__file__).resolve().parent.parent / "docs" / "reference.md"

HEADER = f"""\
<!-- Generated from operator/nsbaseline/spec.py by `make docs`; do not edit by hand. -->
# BaselinePolicy reference

`{names.API_VERSION}`, kind `{names.KIND}`: cluster-scoped, plural `{names.PLURAL}`, short name
`bp`, category `nsbaseline` (so `kubectl get nsbaseline` lists policies). The API server enforces
everything below; `kubectl explain baselinepolicy.spec` shows the same descriptions. Concepts are
in [concepts.md](concepts.md); per-namespace annotations in [parameters.md](parameters.md).
"""


def _code(value: Any) -> str:
    return f"`{json.dumps(value, separators=(', ', ': '))}`"


def type_of(schema: Schema) -> str:
    """A short, Go-like type name: ``string``, ``[]object``, ``map[string]string``."""
    if schema.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    kind = str(schema.get("type", "any"))
    if kind == "array":
        return "[]" + type_of(schema.get("items") or {})
    if kind == "object" and "additionalProperties" in schema:
        return "map[string]" + type_of(schema["additionalProperties"])
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return "object (free-form)"
    if "format" in schema:
        return f"{kind} ({schema['format']})"
    return kind


def constraints(schema: Schema) -> list[str]:
    """The schema keywords that restrict values, in words."""
    out: list[str] = []
    if "enum" in schema:
        out.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    for key, word in (
        ("minimum", "minimum"),
        ("maximum", "maximum"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("maxItems", "max items"),
        ("maxProperties", "max entries"),
    ):
        if key in schema:
            out.append(f"{word} {schema[key]}")
    if "pattern" in schema:
        out.append(f"pattern `{schema['pattern']}`")
    values = schema.get("additionalProperties") or {}
    if "maxLength" in values:
        out.append(f"values at most {values['maxLength']} characters")
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set":
        out.append("items unique")
    elif list_type == "map":
        keys = ", ".join(f"`{k}`" for k in schema.get("x-kubernetes-list-map-keys", []))
        out.append(f"items unique by {keys}")
    items = schema.get("items") or {}
    if items.get("type") not in (None, "object") and constraints(items):
        out.append("each item: " + ", ".join(constraints(items)))
    return out


def walk(path: str, schema: Schema, required: bool) -> Iterator[tuple[str, Schema, bool]]:
    """Every field below ``path`` (depth first, in declaration order), with its schema."""
    yield path, schema, required
    if schema.get("type") == "array" and "items" in schema:
        path, schema = path + "[]", schema["items"]
    must = set(schema.get("required") or ())
    for key, sub in (schema.get("properties") or {}).items():
        yield from walk(f"{path}.{key}", sub, key in must)


def field_block(path: str, schema: Schema, required: bool) -> str:
    facts = [f"`{type_of(schema)}`"]
    if required:
        facts.append("**required**")
    if "default" in schema:
        facts.append("default " + _code(schema["default"]))
    facts += constraints(schema)
    lines = [f"### `{path}`", "", " · ".join(facts), ""]
    if schema.get("description"):
        lines += [schema["description"], ""]
    items = schema.get("items") or {}
    if items.get("type") not in (None, "object") and items.get("description"):
        lines += [f"Each item: {items['description']}", ""]
    rules = [(r, "") for r in schema.get("x-kubernetes-validations", [])]
    rules += [(r, "each item") for r in items.get("x-kubernetes-validations", [])]
    for rule, scope in rules:
        where = [scope] if scope else []
        if "fieldPath" in rule:
            where.append(f"on `{rule['fieldPath'].lstrip('.')}`")
        label = f" ({', '.join(where)})" if where else ""
        lines.append(f"- validation{label}: {rule['message']}")
    if rules:
        lines.append("")
    return "\n".join(lines)


def printer_columns(version: Schema) -> str:
    lines = [
        "## `kubectl get bp` columns",
        "",
        "Columns marked *wide* appear with `kubectl get bp -o wide`.",
        "",
        "| Column | Type | JSONPath |",
        "| --- | --- | --- |",
    ]
    for col in version["additionalPrinterColumns"]:
        name = col["name"] + (" (*wide*)" if col.get("priority") else "")
        lines.append(f"| {name} | {col['type']} | `{col['jsonPath']}` |")
    return "\n".join(lines) + "\n"


#: Situations the reconciler reports; the table below is computed by the real status code.
SITUATIONS: tuple[tuple[str, bool, tuple[Assessment, ...]], ...] = (
    ("No namespace is selected", False, ()),
    (
        "Every selected namespace has its baseline",
        False,
        (Assessment("p", "team-a", "compliant", ""),),
    ),
    (
        "A template failed or the API server refused a write",
        False,
        (
            Assessment(
                "p",
                "team-a",
                "error",
                "",
                errors=(Failure("allow-dns", "template 'allow-dns' ...", "template"),),
            ),
        ),
    ),
    (
        "A foreign NetworkPolicy holds a name the policy needs",
        False,
        (Assessment("p", "team-a", "conflict", "", conflicts=("nsbaseline-p-default-deny",)),),
    ),
    ("Audit mode, nothing would change", True, (Assessment("p", "team-a", "compliant", ""),)),
    (
        "Audit mode, changes pending",
        True,
        (
            Assessment(
                "p", "team-a", "audit-pending", "", pending=(("nsbaseline-p-allow-dns", "Create"),)
            ),
        ),
    ),
)


def conditions_table() -> str:
    lines = [
        "## Conditions",
        "",
        "The operator sets both conditions on every policy. "
        "`lastTransitionTime` changes only when `status` flips. Messages for one namespace "
        "`team-a` and a policy `p`:",
        "",
        "| Situation | Ready | Degraded | Ready message |",
        "| --- | --- | --- | --- |",
    ]
    for title, audit, outcomes in SITUATIONS:
        found = policy_status(1, audit, outcomes, {}, "")["conditions"]
        cond = {c["type"]: c for c in found}
        ready, degraded = cond["Ready"], cond["Degraded"]
        lines.append(
            f"| {title} | {ready['status']} `{ready['reason']}` | "
            f"{degraded['status']} `{degraded['reason']}` | {ready['message']} |"
        )
    return "\n".join(lines) + "\n"


def section(title: str, intro: str, fields: Sequence[tuple[str, Schema, bool]]) -> str:
    return "\n".join([f"## {title}", "", intro, "", *(field_block(*f) for f in fields)])


def render() -> str:
    definition = crd.crd()
    version = definition["spec"]["versions"][0]
    root = version["schema"]["openAPIV3Schema"]
    spec_fields = list(walk("spec", root["properties"]["spec"], True))
    top_level = [p for p, _, _ in spec_fields if p.count(".") == 1]
    index = "\n".join(f"- [`{p}`](#{p.replace('.', '').lower()})" for p in top_level)
    defaults = yaml.safe_dump({"spec": BaselinePolicySpec().to_json()}, sort_keys=False, width=100)
    parts = [
        HEADER,
        root["description"],
        "",
        *(
            f"- validation (on the object): {r['message']}"
            for r in root["x-kubernetes-validations"]
        ),
        "",
        "## An empty spec, with the defaults the API server fills in",
        "",
        "`spec: {}` is a complete policy: it gives every namespace labelled "
        f'`{names.OPT_IN_LABEL}: "true"` default-deny for ingress and egress plus DNS.',
        "",
        "```yaml",
        defaults.rstrip(),
        "```",
        "",
        "## Top-level fields",
        "",
        *(
            field_block(key, sub, key in root.get("required", ()))
            for key, sub in root["properties"].items()
            if key not in ("spec", "status")
        ),
        "## Spec fields",
        "",
        root["properties"]["spec"]["description"],
        "",
        index,
        "",
        *(field_block(*f) for f in spec_fields[1:]),
        section(
            "Status",
            "Set by the operator through the status subresource; do not set it yourself.",
            list(walk("status", root["properties"]["status"], False)),
        ),
        conditions_table(),
        printer_columns(version),
    ]
    return "\n".join(parts).rstrip() + "\n"


def main(argv: Sequence[str], target: Path = TARGET) -> int:
    text = render()
    if "--check" in argv:
        if not target.is_file() or target.read_text() != text:
            print(f"{target} is out of date: run `make docs`", file=sys.stderr)
            return 1
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
