"""The echo of our own write needs no reconcile; any other change to the object does.

Every write comes back through the watch. Reconciling on each echo cost about four reconciles per
namespace during a rollout (measured by the bench), all of which found nothing to do.
"""

from __future__ import annotations

import asyncio
from typing import Any

from test_reconciler_stale_state import DNS, NS, FakeClient, FakeState, managed, reconciler

from nsbaseline.plan import Action


class ApplyingClient(FakeClient):
    """Answers an apply with the object as stored at resourceVersion 20."""

    async def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "metadata": {**body["metadata"], "uid": "u1", "resourceVersion": "20"}}


def _apply_action() -> Action:
    body = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": DNS, "namespace": NS},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"]},
    }
    return Action("Create", NS, DNS, "base", "allow-dns", body=body)


def test_the_version_we_wrote_is_an_echo_and_a_newer_one_is_not() -> None:
    async def scenario() -> None:
        rec = reconciler(FakeState([]), ApplyingClient([], "0"))
        await rec._write(_apply_action(), 0.0)
        assert rec.observed(NS, DNS, "20", deleted=False) is True
        # The overlay is gone once echoed: a later tamper is a change like any other.
        assert rec.observed(NS, DNS, "21", deleted=False) is False

    asyncio.run(scenario())


def test_a_change_that_overtook_our_echo_is_not_taken_for_it() -> None:
    async def scenario() -> None:
        rec = reconciler(FakeState([]), ApplyingClient([], "0"))
        await rec._write(_apply_action(), 0.0)
        assert rec.observed(NS, DNS, "23", deleted=False) is False  # someone edited after us
        assert rec.observed(NS, DNS, "19", deleted=False) is False  # an older version is no echo

    asyncio.run(scenario())


def test_the_deletion_we_sent_is_an_echo_but_a_deletion_of_something_we_wrote_is_not() -> None:
    async def scenario() -> None:
        rec = reconciler(FakeState([managed(DNS, "u1", 10)]), FakeClient([], "0"))
        await rec._write(Action("Delete", NS, DNS, "base", "allow-dns", uid="u1"), 0.0)
        assert rec.observed(NS, DNS, "12", deleted=True) is True

        applied = reconciler(FakeState([]), ApplyingClient([], "0"))
        await applied._write(_apply_action(), 0.0)
        assert applied.observed(NS, DNS, "25", deleted=True) is False  # a tenant deleted it

    asyncio.run(scenario())
