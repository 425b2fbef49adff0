"""The reconciler must not trust watched state the API server has moved past.

Two ways a lagging or incomplete watch made allow-dns look present when it was gone, both found by
the fault tests (tests/e2e/test_crash_safety.py, tests/e2e/test_high_availability.py):
- right after our own delete, the index still holds the object's last version;
- after a relist (peering pause, 410 Gone), objects deleted meanwhile are never reported.

And the echo of our own write needs no reconcile; any other change to the object does:
Every write comes back through the watch. Reconciling on each echo cost about four reconciles per
namespace during a rollout (measured by the bench), all of which found nothing to do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from nsbaseline import names
from nsbaseline.model import BaselinePolicy, ManagedObject, Namespace
from nsbaseline.plan import Action
from nsbaseline.reconciler import Reconciler, Settings

NS = "team-a"
DNS = names.object_name("base", "allow-dns")


def managed(name: str, uid: str, rv: int) -> ManagedObject:
    return ManagedObject(
        namespace=NS,
        name=name,
        uid=uid,
        resource_version=str(rv),
        labels={names.MANAGED_BY_LABEL: names.MANAGED_BY_VALUE},
        annotations={},
        owner_references=(),
        spec={"podSelector": {}},
    )


class FakeState:
    def __init__(self, objects: list[ManagedObject]) -> None:
        self.objects = objects

    def namespace(self, name: str) -> Namespace | None:
        return Namespace(name) if name == NS else None

    def namespace_names(self) -> Iterable[str]:
        return [NS]

    def objects_in(self, namespace: str) -> list[ManagedObject]:
        return [o for o in self.objects if o.namespace == namespace]

    def policies(self) -> dict[str, BaselinePolicy]:
        return {}


class FakeClient:
    def __init__(self, listing: list[dict[str, Any]], version: str) -> None:
        self.listing = listing
        self.version = version

    async def delete(self, namespace: str, name: str, uid: str | None) -> bool:
        return True

    async def list_network_policies(self) -> tuple[list[dict[str, Any]], str]:
        return self.listing, self.version


def reconciler(state: FakeState, client: FakeClient) -> Reconciler:
    return Reconciler(client, state, Settings())  # type: ignore[arg-type]


def test_a_deleted_object_stays_hidden_while_the_watch_still_shows_its_last_version() -> None:
    async def scenario() -> None:
        state = FakeState([managed(DNS, "u1", 10)])
        rec = reconciler(state, FakeClient([], "0"))
        await rec._write(Action("Delete", NS, DNS, "base", "allow-dns", uid="u1"), 0.0)
        assert rec.actual_objects(NS) == []
        rec.observed(NS, DNS, "10", deleted=False)  # a late MODIFIED of the old version
        assert rec.actual_objects(NS) == []
        state.objects = []
        rec.observed(NS, DNS, "11", deleted=True)  # the DELETED event retires the tombstone
        state.objects = [managed(DNS, "u2", 12)]  # a re-creation is visible again
        assert [o.uid for o in rec.actual_objects(NS)] == ["u2"]

    asyncio.run(scenario())


def test_objects_missing_from_a_fresh_listing_are_forgotten_but_newer_ones_are_kept() -> None:
    async def scenario() -> None:
        gone = managed(DNS, "u1", 10)
        newer = managed(names.object_name("base", "default-deny"), "u3", 30)
        present = managed(names.object_name("base", "allow-monitoring"), "u4", 5)
        listing = [{"metadata": {"uid": "u4"}}]
        rec = reconciler(FakeState([gone, newer, present]), FakeClient(listing, "20"))
        assert await rec.forget_ghosts() == 1
        assert {o.uid for o in rec.actual_objects(NS)} == {"u3", "u4"}

    asyncio.run(scenario())


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
