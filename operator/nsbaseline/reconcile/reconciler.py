"""The reconcile of one namespace, top to bottom, and the loops that drive it.

Every trigger — a namespace or BaselinePolicy event from Kopf, a change to one of our
NetworkPolicies from our own watch, an exception ending, the periodic sweep — only puts the
namespace's name in the :class:`~nsbaseline.reconcile.queue.WorkQueue`. A worker then tells the
whole story of that namespace (:meth:`Reconciler.reconcile`):

1. read the namespace and the BaselinePolicies from memory (no GET);
2. pick the policies that select it and render their pieces (pure);
3. take what exists: our watched objects, corrected by our own writes the watch has not shown
   yet, plus foreign holders of our names learned from earlier answers;
4. plan (pure): the writes, in a safe order, or nothing when all is in place;
5. send the writes (the executor);
6. assess how each policy stands (pure) and hand that to the status book and the Events (and,
   when a report CRD is installed, the results per piece to the report book).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from nsbaseline import exemptions, metrics
from nsbaseline.assessment import Assessment, assess
from nsbaseline.model import BaselinePolicy, Namespace
from nsbaseline.observed import ManagedObject
from nsbaseline.plan import Action, Plan, build_plan
from nsbaseline.policy_render import render_policy
from nsbaseline.reconcile.events import EventRecorder, EventSink
from nsbaseline.reconcile.executor import ForeignHolders, WriteExecutor, Writer
from nsbaseline.reconcile.gate import ActiveGate
from nsbaseline.reconcile.objects import ObservedObjects
from nsbaseline.reconcile.queue import WorkQueue
from nsbaseline.reconcile.report_book import ReportBook, ReportWriter
from nsbaseline.reconcile.status_book import StatusBook, StatusWriter
from nsbaseline.reconcile.written import WriteCache
from nsbaseline.render import TemplateSet
from nsbaseline.reports import FORMATS, namespace_results
from nsbaseline.selection import policies_for, policy_selects

logger = logging.getLogger("nsbaseline")

#: How long a namespace created while we watch waits before its first reconcile. kube-apiserver's
#: NamespaceLifecycle admission looks a namespace up in its own informer, which sees a creation a
#: millisecond or three after our watch does; a create that arrives before that sleeps 50 ms in
#: admission (``missingNamespaceWait``). Writing at once, 15-20 % of new namespaces took those
#: 50 ms (the bench's p99); a few milliseconds' wait avoided all of them in 200 trials
#: (bench/README.md).
NEW_NAMESPACE_GRACE = 0.005


class ClusterView(Protocol):
    """Namespaces and BaselinePolicies as watched (our mirror and Kopf's index in the operator)."""

    def namespace(self, name: str) -> Namespace | None: ...
    def namespace_names(self) -> Iterable[str]: ...
    def policies(self) -> dict[str, BaselinePolicy]: ...


class Api(Writer, StatusWriter, EventSink, ReportWriter, Protocol):
    """Everything the reconciler asks of the API server."""


@dataclass
class Settings:
    workers: int = 16
    sweep_interval: float = 300.0
    status_interval: float = 0.5
    event_workers: int = 2
    templates_dir: Path | None = None
    max_backoff: float = 60.0
    #: Compliance reports: "wgpolicyk8s" (PolicyReport), "openreports" (Report) or "off".
    reports: str = "wgpolicyk8s"
    reports_interval: float = 1.0


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Reconciler:
    def __init__(
        self,
        api: Api,
        cluster: ClusterView,
        settings: Settings | None = None,
        templates: TemplateSet | None = None,
        gate: ActiveGate | None = None,
        clock: Callable[[], datetime.datetime] = _utcnow,
    ) -> None:
        self.cluster = cluster
        self.settings = settings or Settings()
        self.templates = templates or TemplateSet(self.settings.templates_dir)
        self.clock = clock
        self.queue = WorkQueue(self.settings.max_backoff, metrics.QUEUE_DEPTH.set)
        self.written = WriteCache(recheck=self.enqueue)
        self.objects = ObservedObjects(self._object_changed, self.written.known)
        self.foreign = ForeignHolders()
        self.executor = WriteExecutor(api, self.written, self.foreign, self._written)
        self.status = StatusBook(api, self.cluster.policies, clock)
        self.events = EventRecorder(
            api, self._policy_uid, self.queue.idle.wait, metrics.EVENTS_PENDING.set
        )
        fmt = FORMATS.get(self.settings.reports)
        self.reports: ReportBook | None = None
        if fmt is not None:
            self.reports = ReportBook(api, fmt, clock, self.queue.idle)
        self.gate = gate or ActiveGate(None)
        #: Set once the namespaces are listed and Kopf has indexed every policy (see handlers).
        self.cluster_ready = asyncio.Event()
        self._expiry_timers: dict[tuple[str, str, datetime.datetime], asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # ----- the story of one namespace -------------------------------------------------------
    async def reconcile(self, namespace: str, started: float | None = None) -> bool:
        """Bring one namespace to its desired state. Returns False when a retry is needed."""
        t0 = time.monotonic()
        info = self.cluster.namespace(namespace)
        if info is None or info.terminating:
            # Gone or going: its objects go with it, and writing there would only race the
            # namespace controller. Forget it so status stops counting it.
            self._forget(namespace)
            metrics.RECONCILES.labels("unchanged").inc()
            return True
        policies = self.cluster.policies()
        selecting = policies_for(list(policies.values()), info)
        now = self.clock()
        renders = [render_policy(self.templates, info, p, now) for p in selecting]
        self._schedule_expiries(namespace, selecting, now)
        watched = self.written.correct(namespace, self.objects.in_namespace(namespace))
        actual = watched + self.foreign.in_namespace(namespace)
        plan = build_plan(info, renders, actual, policies, self.written.applied())
        result = await self.executor.execute(plan, watched, started or t0)
        plan.conflicts.extend(result.conflicts)
        assessments = {
            p.name: assess(plan, p, now, failed=result.failed, executed=True) for p in selecting
        }
        self.status.record(namespace, assessments)
        if self.reports is not None:
            in_place = {o.name for o in watched}
            results = namespace_results(plan, selecting, assessments, now, in_place)
            self.reports.record(namespace, results)
        self._announce(plan, result.done, assessments)
        metrics.RECONCILE_SECONDS.observe(time.monotonic() - t0)
        outcome = "error" if result.failed else ("changed" if result.done else "unchanged")
        metrics.RECONCILES.labels(outcome).inc()
        if result.conflicts:
            # Knock again when the memory of the foreign holder expires: it may be gone by then.
            self._later(namespace, 31.0)
        return not result.failed

    def _announce(
        self, plan: Plan, done: list[Action], assessments: Mapping[str, Assessment]
    ) -> None:
        created: dict[str, list[str]] = {}
        for action in done:
            if action.verb != "Delete" and not action.repair:
                created.setdefault(action.policy_name, []).append(action.piece)
        if created:
            self.events.applied(plan.namespace, created)
        self.events.problems(plan.namespace, assessments)

    def _written(self, action: Action, stored: ManagedObject | None, started: float) -> None:
        """One write took effect: Events and metrics for it."""
        if action.verb == "Delete":
            self.events.on_namespace(
                action.namespace,
                "Removed",
                f"Removed NetworkPolicy {action.name} ({action.piece}) of BaselinePolicy "
                f"{action.policy_name}: no longer selected",
            )
        elif action.repair and stored is not None:
            metrics.DRIFT_REPAIRS.labels(action.piece).inc()
            metrics.REPAIR_SECONDS.observe(time.monotonic() - started)
            self.events.on_object(
                action.namespace,
                action.name,
                stored.uid,
                "Repaired",
                f"Restored NetworkPolicy {action.name} of BaselinePolicy {action.policy_name} "
                f"after it was {'deleted' if action.verb == 'Create' else 'changed'}",
            )

    def _forget(self, namespace: str) -> None:
        self.status.forget(namespace)
        self.written.forget_namespace(namespace)
        self.foreign.forget_namespace(namespace)
        self.events.forget_namespace(namespace)
        if self.reports is not None:
            self.reports.forget(namespace)

    def _policy_uid(self, name: str) -> str | None:
        policy = self.cluster.policies().get(name)
        return policy.uid if policy is not None else None

    # ----- triggers -------------------------------------------------------------------------
    def enqueue(self, namespace: str) -> None:
        self.queue.add(namespace)

    def enqueue_new(self, namespace: str) -> None:
        """A namespace created while we watch: reconcile it after :data:`NEW_NAMESPACE_GRACE`."""
        self._later(namespace, NEW_NAMESPACE_GRACE)

    def enqueue_all(self) -> set[str]:
        """Reconcile every namespace we know of; returns their names."""
        names_ = set(self.cluster.namespace_names()) | self._holding_ours()
        self.queue.add_all(names_)
        return names_

    def _holding_ours(self) -> set[str]:
        """Namespaces with something of ours: objects, an assessment, a foreign holder of a name."""
        return (
            set(self.status.namespaces())
            | set(self.objects.namespaces())
            | self.foreign.namespaces()
        )

    def policy_changed(self, policy: BaselinePolicy | None, name: str) -> None:
        """A BaselinePolicy event: when its spec really changed, re-reconcile what it touches."""
        if self.status.policy_changed(policy, name):
            enqueued = self.touched_by(policy)
            self.queue.add_all(enqueued)
            if policy is not None:
                self.status.expect(name, enqueued, time.monotonic())

    def touched_by(self, policy: BaselinePolicy | None) -> set[str]:
        """The namespaces a policy's change can alter: those its new spec selects, and every
        namespace where something of ours already is (objects, an assessment, a foreign holder
        of one of our names) — which covers all the old spec selected.

        Not every namespace of the cluster: on a spec change that was a reconcile of each
        unselected namespace too, as many again as the selected ones in a typical cluster.
        """
        touched = self._holding_ours()
        if policy is not None:
            for name in self.cluster.namespace_names():
                info = self.cluster.namespace(name)
                if info is not None and policy_selects(policy, info):
                    touched.add(name)
        return touched

    def _object_changed(self, obj: ManagedObject, deleted: bool, relisted: bool) -> None:
        """Our watch saw one of our NetworkPolicies change (or vanish in a relist)."""
        echo = self.written.seen(obj, deleted)
        if echo and not relisted:
            return  # the echo of our own write: nothing new to reconcile
        self.enqueue(obj.namespace)

    def _later(self, namespace: str, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self.enqueue, namespace)

    def _schedule_expiries(
        self, namespace: str, selecting: Iterable[BaselinePolicy], now: datetime.datetime
    ) -> None:
        """Re-reconcile ``namespace`` exactly when an active exception ends (no sweep delay)."""
        loop = asyncio.get_running_loop()
        for policy in selecting:
            when = exemptions.next_expiry(policy.spec, namespace, now)
            key = (namespace, policy.name, when) if when else None
            if key is None or key in self._expiry_timers:
                continue
            # A hair late rather than early: the reconcile then already sees the exception over.
            delay = (when - now).total_seconds() + 0.05 if when else 0.0
            self._expiry_timers[key] = loop.call_later(delay, self._exception_expired, key)

    def _exception_expired(self, key: tuple[str, str, datetime.datetime]) -> None:
        self._expiry_timers.pop(key, None)
        self.status.touch(key[1])  # its status lists the exception as Expired now
        self.enqueue(key[0])

    # ----- loops ----------------------------------------------------------------------------
    def start(self, watch: Callable[[], Any] | None = None) -> None:
        """Start the workers and loops; ``watch`` is the coroutine feeding :attr:`objects`."""
        coros: list[Any] = [self._worker() for _ in range(self.settings.workers)]
        coros += [self.events.run() for _ in range(self.settings.event_workers)]
        coros += [self._status_loop(), self._sweep_loop()]
        if self.reports is not None:
            coros.append(self.reports.run(self.gate.active, self.settings.reports_interval))
        if watch is not None:
            coros.append(watch())
        self._tasks = [asyncio.create_task(c) for c in coros]

    async def stop(self) -> None:
        for timer in self._expiry_timers.values():
            timer.cancel()
        self._expiry_timers.clear()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def ready(self) -> None:
        """Until everything is listed and this replica is the active one."""
        await self.cluster_ready.wait()
        await self.objects.ready.wait()
        await self.gate.active.wait()

    async def _worker(self) -> None:
        while True:
            await self.ready()
            namespace, started = await self.queue.get()
            ok = False
            try:
                if self.gate.active.is_set():
                    ok = await self.reconcile(namespace, started)
                else:
                    ok = True  # paused meanwhile: the active replica owns it now
            except Exception:
                logger.exception("reconcile of namespace %s failed", namespace)
                metrics.RECONCILES.labels("exception").inc()
            finally:
                self.queue.done(namespace, ok)

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.status_interval)
            if self.status.dirty and self.gate.active.is_set():
                await self.status.flush()

    async def _sweep_loop(self) -> None:
        """The backstop: every namespace is re-checked periodically, whatever the watches said."""
        while True:
            await self.ready()
            self.enqueue_all()
            await asyncio.sleep(self.settings.sweep_interval)


__all__ = ["Api", "ClusterView", "Reconciler", "Settings"]
