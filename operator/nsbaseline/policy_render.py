"""Every piece of one BaselinePolicy for one namespace, with what exceptions hold back. Pure.

:mod:`nsbaseline.render` renders one template for one namespace (the sandbox, the caches, the
validation of its output); this module is the step above it that the reconciler, the CLI
commands and the tests share: which pieces a policy has, which of them an active exception leaves
out, and every error collected rather than the first one raised, so one broken template does
not hide what the others render.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from nsbaseline import exemptions, names
from nsbaseline.model import BaselinePolicy, Namespace
from nsbaseline.render import RenderError, TemplateSet
from nsbaseline.rendered import RenderedObject


def pieces_of(policy: BaselinePolicy) -> list[str]:
    """Every template a policy renders: the built-ins, then its extra templates by name."""
    extra = sorted(t.name for t in policy.spec.templates or ())
    return [*names.BUILTIN_PIECES, *(e for e in extra if e not in names.BUILTIN_PIECES)]


@dataclass(frozen=True)
class PolicyRender:
    """Everything one policy wants in one namespace, or the errors that stopped it."""

    policy: BaselinePolicy
    objects: tuple[RenderedObject, ...]
    errors: tuple[RenderError, ...]


def render_policy(
    templates: TemplateSet,
    namespace: Namespace,
    policy: BaselinePolicy,
    now: datetime.datetime,
) -> PolicyRender:
    """Render all pieces of ``policy`` for ``namespace``, collecting every error.

    Pieces held back by an exception active at ``now`` are left out, so the plan removes them
    like any piece the policy no longer wants. Time is an argument: this module reads no clock.
    """
    objects: list[RenderedObject] = []
    errors: list[RenderError] = []
    held_back = exemptions.held_back(policy.spec, namespace.name, now)
    for piece in pieces_of(policy):
        if piece in held_back:
            continue
        try:
            rendered = templates.render(piece, namespace, policy)
        except RenderError as exc:
            exc.policy_name = policy.name
            errors.append(exc)
            continue
        if rendered is not None:
            objects.append(rendered)
    return PolicyRender(policy, tuple(objects), tuple(errors))


__all__ = ["PolicyRender", "pieces_of", "render_policy"]
