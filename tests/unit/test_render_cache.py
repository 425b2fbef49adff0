"""TemplateSet.render is memoised: a repeat is free, but any changed input renders afresh."""

from __future__ import annotations

import pytest

from nsbaseline.model import BaselinePolicy, Namespace
from nsbaseline.render import RenderError, TemplateSet


def _policy(port: int, uid: str = "u1") -> BaselinePolicy:
    body = {
        "metadata": {"name": "p", "uid": uid},
        "spec": {"monitoring": {"enabled": True, "ports": [{"port": port}]}},
    }
    return BaselinePolicy.from_body(body)


def _ports(templates: TemplateSet, ns: Namespace, policy: BaselinePolicy) -> object:
    rendered = templates.render("allow-monitoring", ns, policy)
    assert rendered is not None
    return rendered.body["spec"]["ingress"][0].get("ports")


def test_a_repeated_render_returns_the_remembered_object() -> None:
    templates = TemplateSet()
    ns = Namespace("team-a", {"kubernetes.io/metadata.name": "team-a"}, {})
    first = templates.render("allow-monitoring", ns, _policy(9100))
    assert templates.render("allow-monitoring", ns, _policy(9100)) is first


def test_a_changed_policy_spec_annotation_or_uid_renders_again() -> None:
    templates = TemplateSet()
    ns = Namespace("team-a", {}, {})
    assert _ports(templates, ns, _policy(9100)) == [{"port": 9100, "protocol": "TCP"}]
    assert _ports(templates, ns, _policy(9101)) == [{"port": 9101, "protocol": "TCP"}]
    annotated = Namespace("team-a", {}, {"nsbaseline.io/monitoring-ports": "8000"})
    assert _ports(templates, annotated, _policy(9101)) == [{"port": 8000, "protocol": "TCP"}]
    other = templates.render("allow-monitoring", ns, _policy(9101, uid="u2"))
    assert other is not None
    assert other.body["metadata"]["ownerReferences"][0]["uid"] == "u2"


def test_a_remembered_failure_is_raised_again_for_the_same_inputs() -> None:
    templates = TemplateSet()
    ns = Namespace("team-a", {}, {"nsbaseline.io/monitoring-ports": "99999999"})
    for _ in range(2):
        with pytest.raises(RenderError, match="team-a"):
            templates.render("allow-monitoring", ns, _policy(9100))


def test_parsed_text_is_remembered_as_fresh_objects() -> None:
    from nsbaseline import rendered

    text = "apiVersion: v1\nkind: Thing\nspec: {ports: [1, 2]}\n"
    first = rendered.load_docs(text)
    first[0]["spec"]["ports"].append(3)  # a caller's mutation must not leak into the cache
    assert rendered.load_docs(text) == [
        {"apiVersion": "v1", "kind": "Thing", "spec": {"ports": [1, 2]}}
    ]
    assert text in rendered._PARSED


def test_documents_json_cannot_represent_are_not_remembered() -> None:
    import datetime

    from nsbaseline import rendered

    text = "when: 2024-01-02\n"
    assert rendered.load_docs(text) == [{"when": datetime.date(2024, 1, 2)}]
    assert text not in rendered._PARSED
