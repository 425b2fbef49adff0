"""The report book: reports written only when a result changes, nothing on a converged start,
deleted when a namespace leaves every selection, switched by the CRD's presence.

Driven through its public methods with :class:`tests.support.fakes.FakeApi` standing in for the
API server; the e2e suite (tests/e2e/test_reports.py) proves the same against the real CRDs.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from typing import Any

from nsbaseline.kube.errors import ApiError
from nsbaseline.reconcile import report_book
from nsbaseline.reconcile.reconciler import Reconciler, Settings
from nsbaseline.reconcile.report_book import CrdPresence, ReportBook
from nsbaseline.reports import OPEN_REPORT, POLICY_REPORT, PieceResult, ReportFormat
from tests.support.builders import NOW, opted_in, policy
from tests.support.fakes import FakeApi, FakeCluster

PASS = (PieceResult("base", "allow-dns", "nsbaseline-base-allow-dns", "pass", "in place"),)
FAIL = (PieceResult("base", "allow-dns", "nsbaseline-base-allow-dns", "fail", "conflict"),)


def crd(fmt: ReportFormat = POLICY_REPORT, established: bool = True) -> dict[str, Any]:
    """The CRD as the API server shows it once (or before) it is Established."""
    return {
        "metadata": {"name": fmt.crd_name},
        "spec": {"versions": [{"name": fmt.version, "served": True}]},
        "status": {
            "conditions": [{"type": "Established", "status": "True" if established else "False"}]
        },
    }


def book(
    api: FakeApi,
    clock: Callable[[], datetime.datetime] = lambda: NOW,
    timer: Callable[[], float] = lambda: 0.0,
) -> ReportBook:
    """A book whose CRD is installed (as the CRD watch would report it)."""
    result = ReportBook(api, POLICY_REPORT, clock, timer=timer)
    result.presence.relist_begin()
    result.presence.relist_page([crd()])
    result.presence.relist_end("1")
    return result


def writes(api: FakeApi) -> list[tuple[str, str]]:
    return [c for c in api.calls if c[0] in ("apply-report", "delete-report")]


def test_nothing_is_written_or_listed_while_the_crd_is_missing() -> None:
    async def scenario() -> None:
        api = FakeApi()
        reports = ReportBook(api, POLICY_REPORT, lambda: NOW)
        reports.record("a", PASS)
        await reports.flush()
        assert api.calls == []

    asyncio.run(scenario())


def test_a_result_change_writes_once_and_an_unchanged_one_never() -> None:
    async def scenario() -> None:
        api = FakeApi()
        reports = book(api)
        reports.record("a", PASS)
        await reports.flush()
        assert writes(api) == [("apply-report", "a")]
        assert api.calls[0] == ("list-reports", "policyreports"), "listed before comparing"
        reports.record("a", PASS)  # a sweep: same results
        await reports.flush()
        reports.record("a", FAIL)
        await reports.flush()
        assert writes(api) == [("apply-report", "a")] * 2
        assert api.reports[("policyreports", "a")]["results"][0]["result"] == "fail"

    asyncio.run(scenario())


def test_a_restart_on_a_converged_cluster_writes_nothing_and_keeps_timestamps() -> None:
    async def scenario() -> None:
        api = FakeApi()
        first = book(api)
        first.record("a", PASS)
        await first.flush()
        stored = api.reports[("policyreports", "a")]
        later = NOW + datetime.timedelta(hours=2)
        restarted = book(api, clock=lambda: later)
        restarted.record("a", PASS)
        await restarted.flush()
        assert writes(api) == [("apply-report", "a")], "only the first book wrote"
        restarted.record("a", FAIL)
        restarted.record("a", PASS)  # flapped back before any flush: the same as stored
        await restarted.flush()
        assert api.reports[("policyreports", "a")] == stored

    asyncio.run(scenario())


def test_leaving_every_selection_deletes_the_report_and_a_gone_namespace_deletes_nothing() -> None:
    async def scenario() -> None:
        api = FakeApi()
        reports = book(api)
        reports.record("a", PASS)
        reports.record("b", PASS)
        await reports.flush()
        reports.record("a", ())  # opted out
        reports.forget("b")  # namespace deleted: its reports go with it
        await reports.flush()
        assert writes(api)[2:] == [("delete-report", "a")]
        assert ("policyreports", "a") not in api.reports

    asyncio.run(scenario())


def test_a_refused_write_is_retried_later_not_on_every_flush() -> None:
    async def scenario() -> None:
        api = FakeApi()
        api.fail[("policyreports", "a")] = ApiError(403, "forbidden")
        clock = [0.0]
        reports = book(api, timer=lambda: clock[0])
        active = asyncio.Event()
        active.set()
        task = asyncio.create_task(reports.run(active, interval=0.001))
        reports.record("a", PASS)
        await asyncio.sleep(0.05)
        assert writes(api) == [("apply-report", "a")], "refused once, no tight retry loop"
        del api.fail[("policyreports", "a")]
        clock[0] = report_book.RETRY_AFTER
        await asyncio.sleep(0.05)
        task.cancel()
        assert writes(api) == [("apply-report", "a")] * 2
        assert ("policyreports", "a") in api.reports

    asyncio.run(scenario())


def test_a_busy_queue_defers_report_writes_until_it_is_idle_or_the_change_is_overdue() -> None:
    async def scenario() -> None:
        api = FakeApi()
        clock = [0.0]
        idle = asyncio.Event()  # the work queue is busy (a rollout, repairs)
        reports = ReportBook(api, POLICY_REPORT, lambda: NOW, idle, timer=lambda: clock[0])
        reports.presence.event("ADDED", crd())
        reports.record("a", PASS)
        await reports.flush()
        assert writes(api) == [], "deferred while the queue is busy"
        idle.set()
        await reports.flush()
        assert writes(api) == [("apply-report", "a")], "written once it is idle"
        idle.clear()
        reports.record("a", FAIL)
        clock[0] = report_book.MAX_DELAY
        await reports.flush()
        assert len(writes(api)) == 2, "written anyway once overdue"

    asyncio.run(scenario())


def test_the_crd_switches_reports_on_when_established_and_off_when_deleted() -> None:
    changes: list[bool] = []
    presence = CrdPresence(POLICY_REPORT, changes.append)
    presence.relist_begin()
    presence.relist_page([])
    presence.relist_end("1")
    presence.event("ADDED", crd(established=False))
    presence.event("MODIFIED", crd())
    presence.event("MODIFIED", crd())
    presence.event("DELETED", crd())
    presence.event("ADDED", crd(OPEN_REPORT))  # another CRD (a wrong selector) changes nothing
    assert changes == [True, False]
    assert presence.params == {"fieldSelector": "metadata.name=policyreports.wgpolicyk8s.io"}


def test_a_crd_that_does_not_serve_our_version_is_not_used() -> None:
    changes: list[bool] = []
    presence = CrdPresence(POLICY_REPORT, changes.append)
    other = crd()
    other["spec"]["versions"] = [{"name": "v1beta1", "served": True}]
    presence.event("ADDED", other)
    assert changes == []


def test_the_reconciler_records_results_and_off_means_no_book() -> None:
    async def scenario() -> None:
        api = FakeApi()
        cluster = FakeCluster([opted_in("a")], [policy("base")])
        reconciler = Reconciler(api, cluster)
        assert reconciler.reports is not None
        reconciler.reports.presence.event("ADDED", crd())
        await reconciler.reconcile("a")
        await reconciler.reports.flush()
        report = api.reports[("policyreports", "a")]
        assert report["summary"]["pass"] == 2 and report["summary"]["fail"] == 0
        off = Reconciler(FakeApi(), cluster, Settings(reports="off"))
        assert off.reports is None

    asyncio.run(scenario())
