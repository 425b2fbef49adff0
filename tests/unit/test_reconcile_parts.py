"""The reconcile machinery, part by part, through public methods and fake API answers.

Each rule here was found the hard way by the fault tests (crash safety, HA, hostile writers):
a lagging watch must not make the operator write twice or trust a deleted allow-dns; a relist
must reveal what vanished unseen; a name held by somebody else is never touched.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

from nsbaseline import names
from nsbaseline.kube.errors import ApiError
from nsbaseline.observed import ManagedObject
from nsbaseline.plan import Action, build_plan, with_hash
from nsbaseline.policy_render import render_policy
from nsbaseline.reconcile.executor import ForeignHolders, WriteExecutor
from nsbaseline.reconcile.gate import blocking_peers
from nsbaseline.reconcile.objects import ObservedObjects
from nsbaseline.reconcile.queue import WorkQueue
from nsbaseline.reconcile.reconciler import NEW_NAMESPACE_GRACE, Reconciler
from nsbaseline.reconcile.written import WriteCache
from nsbaseline.render import TemplateSet
from tests.support.builders import NOW, namespace, opted_in, policy
from tests.support.fakes import FakeApi, FakeCluster

NS = "team-a"
DNS = names.object_name("base", "allow-dns")
DENY = names.object_name("base", "default-deny")


def managed(name: str, uid: str, rv: int, namespace: str = NS) -> ManagedObject:
    return ManagedObject.from_body(
        {
            "metadata": {
                "namespace": namespace,
                "name": name,
                "uid": uid,
                "resourceVersion": str(rv),
                "labels": {names.MANAGED_BY_LABEL: names.MANAGED_BY_VALUE},
            },
            "spec": {"podSelector": {}},
        }
    )


# ----- WriteCache -------------------------------------------------------------------------------
def test_a_deleted_object_stays_hidden_while_the_watch_still_shows_its_last_version() -> None:
    cache = WriteCache()
    old = managed(DNS, "u1", 10)
    cache.deleted(NS, DNS, [old])
    assert cache.correct(NS, [old]) == []
    assert not cache.seen(old, deleted=False)  # a late MODIFIED of the old version
    assert cache.correct(NS, [old]) == []
    assert cache.seen(managed(DNS, "u1", 11), deleted=True)  # the DELETED: our echo
    recreated = managed(DNS, "u2", 12)
    assert cache.correct(NS, [recreated]) == [recreated]


def test_our_write_overlays_the_watch_until_the_watch_shows_that_version() -> None:
    cache = WriteCache()
    before = managed(DNS, "u1", 10)
    after = managed(DNS, "u1", 20)
    cache.wrote(after, "digest")
    assert cache.correct(NS, [before]) == [after]
    assert cache.applied() == {(NS, DNS): "digest"}
    assert cache.seen(after, deleted=False)  # exactly our version: an echo
    assert cache.correct(NS, [after]) == [after]
    assert not cache.seen(managed(DNS, "u1", 21), deleted=False)  # someone else's change


def test_overlays_the_watch_never_confirms_expire() -> None:
    now = [0.0]
    cache = WriteCache(clock=lambda: now[0])
    before = managed(DNS, "u1", 10)
    cache.wrote(managed(DNS, "u1", 20), "d")
    now[0] = 31.0
    assert cache.correct(NS, [before]) == [before]
    assert cache.pending() == 0


def test_an_echo_that_beats_the_write_s_answer_needs_no_second_look() -> None:
    rechecked: list[str] = []
    cache = WriteCache(recheck=rechecked.append)
    ours = managed(DNS, "u1", 20)
    cache.sending(NS, DNS)
    assert cache.seen(ours, deleted=False)  # held: the answer has not come yet
    cache.wrote(ours, "digest")
    cache.unsent(NS, DNS)  # what the executor always calls last: settled already
    assert rechecked == []
    assert cache.pending() == 0  # the watch holds our version: nothing to lay over it
    assert cache.applied() == {(NS, DNS): "digest"}


def test_a_change_after_our_write_seen_before_its_answer_is_checked_again() -> None:
    rechecked: list[str] = []
    cache = WriteCache(recheck=rechecked.append)
    cache.sending(NS, DNS)
    assert cache.seen(managed(DNS, "u1", 20), deleted=False)  # our echo
    assert cache.seen(managed(DNS, "u1", 21), deleted=False)  # somebody else, right after
    cache.wrote(managed(DNS, "u1", 20), "digest")
    assert rechecked == [NS]


def test_an_older_event_held_during_a_write_leaves_the_overlay_to_the_echo() -> None:
    rechecked: list[str] = []
    cache = WriteCache(recheck=rechecked.append)
    before, after = managed(DNS, "u1", 10), managed(DNS, "u1", 20)
    cache.sending(NS, DNS)
    assert cache.seen(before, deleted=False)
    cache.wrote(after, "digest")
    assert rechecked == []
    assert cache.correct(NS, [before]) == [after]  # until the watch shows version 20


def test_events_held_for_a_write_that_failed_are_news() -> None:
    rechecked: list[str] = []
    cache = WriteCache(recheck=rechecked.append)
    cache.sending(NS, DNS)
    cache.unsent(NS, DNS)
    assert rechecked == []  # nothing was held
    cache.sending(NS, DNS)
    assert cache.seen(managed(DNS, "u1", 21), deleted=False)
    cache.unsent(NS, DNS)
    assert rechecked == [NS]
    assert not cache.seen(managed(DNS, "u1", 22), deleted=False)  # no longer held


def test_a_deletion_echo_before_the_answer_leaves_no_tombstone() -> None:
    cache = WriteCache()
    old = managed(DNS, "u1", 10)
    cache.sending(NS, DNS)
    assert cache.seen(managed(DNS, "u1", 11), deleted=True)
    cache.deleted(NS, DNS, [old])
    assert cache.pending() == 0
    recreated = managed(DNS, "u2", 12)
    assert cache.correct(NS, [recreated]) == [recreated]


def test_an_earlier_write_never_brings_back_an_object_whose_deletion_echo_came_early() -> None:
    cache = WriteCache()
    updated = managed(DNS, "u1", 20)
    cache.wrote(updated, "digest")  # its echo has not come yet
    cache.sending(NS, DNS)
    assert cache.seen(managed(DNS, "u1", 21), deleted=True)
    cache.deleted(NS, DNS, [updated])
    assert cache.correct(NS, []) == []
    assert cache.pending() == 0


def test_a_modification_before_our_delete_s_answer_is_hidden_by_the_tombstone() -> None:
    cache = WriteCache()
    old, touched = managed(DNS, "u1", 10), managed(DNS, "u1", 11)
    cache.sending(NS, DNS)
    assert cache.seen(touched, deleted=False)
    cache.deleted(NS, DNS, [old])
    assert cache.correct(NS, [touched]) == []  # the watch still shows 11: we deleted it


# ----- WorkQueue --------------------------------------------------------------------------------
def test_the_queue_never_hands_one_namespace_to_two_workers_and_requeues_it_once() -> None:
    async def scenario() -> None:
        queue = WorkQueue()
        queue.add("a")
        queue.add("a")
        assert len(queue) == 1
        key, _ = await queue.get()
        queue.add("a")  # while running: once more, after
        queue.add("a")
        assert len(queue) == 0
        queue.done(key, ok=True)
        assert len(queue) == 1
        await queue.get()
        queue.done("a", ok=True)
        assert queue.idle.is_set()

    asyncio.run(scenario())


def test_a_failed_namespace_comes_back_after_a_backoff() -> None:
    async def scenario() -> None:
        queue = WorkQueue(max_backoff=0.05)
        queue.add("a")
        await queue.get()
        queue.done("a", ok=False)
        assert (len(queue), queue.retries("a")) == (0, 1)
        key, _ = await asyncio.wait_for(queue.get(), 1)
        assert key == "a"

    asyncio.run(scenario())


# ----- ObservedObjects --------------------------------------------------------------------------
def test_a_relist_reports_objects_that_vanished_while_nobody_watched() -> None:
    changes: list[tuple[str, bool, bool]] = []
    objects = ObservedObjects(
        lambda o, deleted, relisted: changes.append((o.name, deleted, relisted))
    )

    def body(name: str, rv: int) -> dict[str, Any]:
        return {
            "metadata": {"namespace": NS, "name": name, "uid": name, "resourceVersion": str(rv)}
        }

    objects.relist_begin()
    objects.relist_page([body("a", 1), body("b", 1)])
    objects.relist_end("5")
    assert objects.ready.is_set() and changes == []  # the start-up sweep covers the first listing
    objects.relist_begin()
    objects.relist_page([body("a", 1), body("c", 7)])
    objects.relist_end("9")
    assert sorted(changes) == [("b", True, True), ("c", False, True)]
    assert sorted(o.name for o in objects.in_namespace(NS)) == ["a", "c"]


# ----- WriteExecutor ----------------------------------------------------------------------------
def _plan_for_new_namespace() -> Any:
    ns = opted_in(NS)
    base = policy("base")
    render = render_policy(TemplateSet(), ns, base, NOW)
    return build_plan(ns, [render], [], {"base": base})


def test_creates_are_posts_and_allow_pieces_go_before_default_deny() -> None:
    async def scenario() -> None:
        api = FakeApi()
        executor = WriteExecutor(api, WriteCache(), ForeignHolders())
        result = await executor.execute(_plan_for_new_namespace(), [], 0.0)
        assert not result.failed and not result.conflicts
        verbs = api.writes()
        assert {v for v, _ in verbs} == {"create"}
        assert verbs[-1] == ("create", DENY)

    asyncio.run(scenario())


def test_a_name_held_by_a_foreign_object_is_a_conflict_and_is_never_written() -> None:
    async def scenario() -> None:
        api = FakeApi()
        api.put_foreign(NS, DENY)
        foreign = ForeignHolders()
        executor = WriteExecutor(api, WriteCache(), foreign)
        result = await executor.execute(_plan_for_new_namespace(), [], 0.0)
        assert [c.name for c in result.conflicts] == [DENY]
        assert ("apply", DENY) not in api.calls and ("delete", DENY) not in api.calls
        assert [o.name for o in foreign.in_namespace(NS)] == [DENY]

    asyncio.run(scenario())


def test_our_object_with_its_labels_stripped_is_found_by_the_create_and_repaired() -> None:
    async def scenario() -> None:
        api = FakeApi()
        plan = _plan_for_new_namespace()
        deny = next(a for p in plan.phases for a in p if a.name == DENY)
        assert deny.body is not None
        stripped = with_hash(deny.body)
        stripped = {**stripped, "metadata": {**stripped["metadata"], "labels": {}}}
        api._store(stripped)  # still ours through its controller ownerReference
        result = await WriteExecutor(api, WriteCache(), ForeignHolders()).execute(plan, [], 0.0)
        assert not result.conflicts and not result.failed
        assert ("apply", DENY) in api.calls
        assert api.stored[(NS, DENY)]["metadata"]["labels"][names.MANAGED_BY_LABEL] == "nsbaseline"

    asyncio.run(scenario())


def test_a_failed_allow_piece_stops_its_policy_before_default_deny() -> None:
    async def scenario() -> None:
        api = FakeApi()
        api.fail[(NS, DNS)] = ApiError(422, "refused", "Invalid")
        result = await WriteExecutor(api, WriteCache(), ForeignHolders()).execute(
            _plan_for_new_namespace(), [], 0.0
        )
        assert DNS in result.failed
        assert result.failed[DENY] == "not attempted: an earlier step failed"
        assert ("create", DENY) not in api.calls

    asyncio.run(scenario())


def test_a_delete_carries_the_uid_so_a_replacement_is_never_deleted() -> None:
    async def scenario() -> None:
        api = FakeApi()
        replacement = api.put_foreign(NS, DNS)
        action = Action("Delete", NS, DNS, "base", "allow-dns", uid="the-old-uid")
        plan = build_plan(opted_in(NS), [], [], {})
        plan.phases = [[action]]
        result = await WriteExecutor(api, WriteCache(), ForeignHolders()).execute(plan, [], 0.0)
        assert not result.failed and not result.done
        assert api.stored[(NS, DNS)] == replacement

    asyncio.run(scenario())


# ----- the whole story --------------------------------------------------------------------------
def test_a_second_reconcile_after_convergence_sends_nothing() -> None:
    async def scenario() -> None:
        api = FakeApi()
        cluster = FakeCluster([opted_in(NS)], [policy("base")])
        reconciler = Reconciler(api, cluster)
        assert await reconciler.reconcile(NS)
        first = len(api.writes())
        assert first == 2  # what the defaults render: allow-dns and default-deny
        for obj in api.observed(NS):  # the watch catches up: echoes only
            reconciler.objects.event("ADDED", api.stored[(NS, obj.name)])
        assert await reconciler.reconcile(NS)
        assert len(api.writes()) == first
        assert reconciler.status.assessments(NS)["base"].state == "compliant"

    asyncio.run(scenario())


def test_a_namespace_created_while_we_watch_is_reconciled_after_a_grace_not_at_once() -> None:
    """The API server's own admission would hold a create sent at once for 50 ms."""

    async def scenario() -> None:
        reconciler = Reconciler(FakeApi(), FakeCluster([opted_in(NS)], [policy("base")]))
        reconciler.enqueue_new(NS)
        assert len(reconciler.queue) == 0
        await asyncio.sleep(NEW_NAMESPACE_GRACE * 2)
        assert len(reconciler.queue) == 1
        key, _ = await reconciler.queue.get()
        assert key == NS

    asyncio.run(scenario())


def test_a_namespace_that_is_gone_is_forgotten_by_the_status() -> None:
    async def scenario() -> None:
        api = FakeApi()
        cluster = FakeCluster([opted_in(NS)], [policy("base")])
        reconciler = Reconciler(api, cluster)
        await reconciler.reconcile(NS)
        del cluster.namespaces[NS]
        await reconciler.reconcile(NS)
        assert reconciler.status.assessments(NS) == {}

    asyncio.run(scenario())


# ----- ActiveGate -------------------------------------------------------------------------------
def test_peering_pauses_for_live_peers_of_higher_or_equal_priority_only() -> None:
    now = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    fresh = "2030-01-01T00:00:00+00:00"
    stale = "2029-12-31T23:58:00+00:00"
    status = {
        "me": {"priority": 5, "lifetime": 60, "lastseen": fresh},
        "lower": {"priority": 1, "lifetime": 60, "lastseen": fresh},
        "higher-but-dead": {"priority": 9, "lifetime": 60, "lastseen": stale},
    }
    assert blocking_peers(status, "me", 5, now) == []
    status["equal"] = {"priority": 5, "lifetime": 60, "lastseen": fresh}
    assert [p for p, _ in blocking_peers(status, "me", 5, now)] == ["equal"]


# ----- StatusBook -------------------------------------------------------------------------------
def test_a_new_generation_s_status_waits_for_its_namespaces() -> None:
    async def scenario() -> None:
        api = FakeApi()
        base = policy("base")
        cluster = FakeCluster([opted_in(NS)], [base])
        reconciler = Reconciler(api, cluster)
        reconciler.policy_changed(base, "base")  # enqueues every namespace, expects them
        await reconciler.status.flush()
        assert "base" not in api.statuses  # no premature "NoNamespacesSelected"
        await reconciler.reconcile(NS)
        await reconciler.status.flush()
        ready = {c["type"]: c for c in api.statuses["base"]["conditions"]}["Ready"]
        assert (ready["reason"], api.statuses["base"]["matchedNamespaces"]) == ("Compliant", 1)

    asyncio.run(scenario())


def test_a_spec_change_reconciles_what_the_policy_selected_or_selects_and_nothing_else() -> None:
    async def scenario() -> None:
        api = FakeApi()
        old = policy("base")
        cluster = FakeCluster(
            [opted_in("was-in"), opted_in("still-in"), namespace("never-in")], [old]
        )
        reconciler = Reconciler(api, cluster)
        for name in ("was-in", "still-in", "never-in"):
            await reconciler.reconcile(name)
        # "was-in" opts out and "joins" opts in: the new generation must visit both.
        cluster.namespaces["was-in"] = namespace("was-in")
        cluster.namespaces["joins"] = opted_in("joins")
        new = policy("base", generation=2)
        cluster.policy_map["base"] = new
        assert reconciler.touched_by(new) == {"was-in", "still-in", "joins"}
        reconciler.policy_changed(new, "base")
        assert len(reconciler.queue) == 3

    asyncio.run(scenario())
