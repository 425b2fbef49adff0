"""assess: how one policy stands in one namespace, and errors that say what kind they are."""

from __future__ import annotations

import datetime

from nsbaseline.assessment import Failure, assess
from nsbaseline.plan import build_plan
from nsbaseline.policy_render import render_policy
from nsbaseline.render import TemplateSet
from tests.support.builders import opted_in, policy

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
NS = opted_in("team-a")


def test_a_template_error_is_of_kind_template() -> None:
    pol = policy("base")
    broken = TemplateSet.from_sources({"allow-dns": "{{ nope }}"})
    plan = build_plan(NS, [render_policy(broken, NS, pol, NOW)], [], {"base": pol})
    row = assess(plan, pol, NOW)
    assert row.state == "error"
    [error] = row.errors
    assert (error.piece, error.kind) == ("allow-dns", "template")
    assert error.message.startswith("template 'allow-dns' for namespace 'team-a': undefined")


def test_a_refused_write_is_of_kind_write_whatever_its_message_says() -> None:
    """The kind, not the wording, tells the reconciler an ApplyFailed from a TemplateError."""
    pol = policy("base")
    plan = build_plan(NS, [render_policy(TemplateSet(), NS, pol, NOW)], [], {"base": pol})
    name = "nsbaseline-base-default-deny"
    row = assess(plan, pol, NOW, failed={name: "422 Invalid: template trouble"}, executed=True)
    assert row.errors == (
        Failure(
            "default-deny",
            "template 'default-deny' for namespace 'team-a': API server refused create of "
            f"team-a/{name}: 422 Invalid: template trouble",
            "write",
        ),
    )
    assert row.state == "error" and row.detail == row.errors[0].message
