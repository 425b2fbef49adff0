"""An object that merely copies our managed-by label is not ours to delete."""

from __future__ import annotations

from nsbaseline.plan import build_plan
from tests.support.builders import foreign, opted_in

NS = opted_in("team-a")


def test_object_with_only_a_copied_managed_by_label_is_never_deleted() -> None:
    # No policy label and no ownerReference: we always set both, so someone else made this.
    copied = foreign(NS.name, "my-own-policy", **{"app.kubernetes.io/managed-by": "nsbaseline"})
    assert copied.ours  # it looks like ours by label...
    plan = build_plan(NS, [], [copied], {})
    assert plan.writes == [] and plan.audit == []  # ...but no policy owns it, so it stays
