"""The reconcile loop: a deduplicating per-namespace work queue, the writes, status and Events.

Kopf's watches feed in-memory views (see :mod:`handlers`); every trigger just enqueues a
namespace name. A worker takes a namespace, reads the whole current state from memory (no GETs),
asks the pure core for a plan, and executes it phase by phase. A namespace is never reconciled by
two workers at once; a trigger that arrives meanwhile re-queues it once.

Our own writes come back through the watch a moment later. Until they do, the result of each
write is kept as an overlay over the watched state, so a reconcile in between does not mistake
the old state for drift and write twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from nsbaseline import canonical, exemptions, metrics, names
from nsbaseline.assessment import Assessment, assess
from nsbaseline.kube import ApiError, KubeClient
from nsbaseline.model import BaselinePolicy, ManagedObject, Namespace
from nsbaseline.plan import Action, Plan, build_plan
from nsbaseline.render import TemplateSet, render_policy
from nsbaseline.selection import policies_for
from nsbaseline.status import policy_status

logger = logging.getLogger("nsbaseline")

OVERLAY_TTL = 30.0
#: Seconds to wait after a relist starts before checking the watched state against a listing.
RELIST_SETTLE = 3.0


class StateView(Protocol):
    """Read access to the watched state (Kopf indexes in the operator, dicts in tests)."""

    def namespace(self, name: str) -> Namespace | None: ...
    def namespace_names(self) -> Iterable[str]: ...
    def objects_in(self, namespace: str) -> list[ManagedObject]: ...
    def policies(self) -> dict[str, BaselinePolicy]: ...


@dataclass
class Settings:
    workers: int = 16
    sweep_interval: float = 300.0
    status_interval: float = 0.5
    event_workers: int = 2
    templates_dir: Path | None = None
    max_backoff: float = 60.0


@dataclass
class _Overlay:
    obj: ManagedObject | None  # None: a tombstone for an object we deleted
    resource_version: int
    since: float = field(default_factory=time.monotonic)


def _rv(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return -1


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reconciler:
    def __init__(
        self,
        client: KubeClient,
        state: StateView,
        settings: Settings | None = None,
        templates: TemplateSet | None = None,
    ) -> None:
        self.client = client
        self.state = state
        self.settings = settings or Settings()
        self.templates = templates or TemplateSet(self.settings.templates_dir)
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._running: set[str] = set()
        self._again: set[str] = set()
        self._enqueued_at: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._overlay: dict[tuple[str, str], _Overlay] = {}
        #: uids of watched objects the API server no longer has (see :meth:`forget_ghosts`).
        self._ghosts: set[str] = set()
        self._relisted = asyncio.Event()
        self.applied_hashes: dict[tuple[str, str], str] = {}
        self.outcomes: dict[str, dict[str, Assessment]] = {}  # namespace -> policy -> outcome
        self._dirty_policies: set[str] = set()
        self._status_written: dict[str, dict[str, Any]] = {}
        self._seen_generations: dict[str, tuple[str, int]] = {}
        self._reported: set[tuple[str, ...]] = set()
        self._events: asyncio.Queue[tuple[Mapping[str, Any], str, str, str]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        #: (namespace, policy, expiresAt) -> the timer that re-reconciles when an exception ends.
        self._expiry_timers: dict[tuple[str, str, datetime.datetime], asyncio.TimerHandle] = {}
        self.ready = asyncio.Event()
        self.idle = asyncio.Event()

    # ----- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        loop_tasks: list[Callable[[], Any]] = [self._worker] * self.settings.workers
        loop_tasks += [self._event_worker] * self.settings.event_workers
        loop_tasks += [self._status_loop, self._sweep_loop]
        self._tasks = [asyncio.create_task(fn()) for fn in loop_tasks]

    async def stop(self) -> None:
        for timer in self._expiry_timers.values():
            timer.cancel()
        self._expiry_timers.clear()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.client.close()

    # ----- triggers -------------------------------------------------------------------------
    def enqueue(self, namespace: str) -> None:
        """Ask for ``namespace`` to be reconciled soon; repeated asks collapse into one."""
        self.ready.set()
        if namespace in self._running:
            self._again.add(namespace)
            return
        if namespace in self._queued:
            return
        self._queued.add(namespace)
        self._enqueued_at.setdefault(namespace, time.monotonic())
        self._queue.put_nowait(namespace)
        self.idle.clear()
        metrics.QUEUE_DEPTH.set(len(self._queued))

    def enqueue_all(self) -> None:
        names_ = set(self.state.namespace_names()) | set(self.outcomes)
        for ns in sorted(names_):
            self.enqueue(ns)

    def policy_changed(self, policy: BaselinePolicy | None, name: str) -> None:
        """A BaselinePolicy event: re-reconcile everything only when its spec really changed.

        Our own status writes come back as events too; reacting to those would start a sweep
        after every status update.
        """
        self.ready.set()
        key = (policy.uid, policy.generation) if policy else None
        if policy is not None and self._seen_generations.get(name) == key:
            return
        if policy is None:
            self._seen_generations.pop(name, None)
            self._status_written.pop(name, None)
        else:
            self._seen_generations[name] = (policy.uid, policy.generation)
        self._dirty_policies.add(name)
        self.enqueue_all()

    def relisted(self) -> None:
        """Kopf is listing a resource again (start-up, resume after a peering pause, 410 Gone).

        A relist reports what exists, never what vanished since the last watch, so the watched
        state may keep objects deleted meanwhile; check for them soon.
        """
        self._relisted.set()

    def observed(self, namespace: str, name: str, resource_version: str, deleted: bool) -> bool:
        """A NetworkPolicy event: drop our overlay once the watch has caught up with it.

        Returns True when the event is just the echo of our own last write (the very version we
        wrote, or the deletion we sent): the namespace's state already accounts for it, so it
        needs no reconcile. Any other change to the object arrives with a newer version.
        """
        key = (namespace, name)
        overlay = self._overlay.get(key)
        if overlay is None:
            return False
        if overlay.obj is None:
            if deleted:
                del self._overlay[key]
                return True
            return False
        version = _rv(resource_version)
        if version >= overlay.resource_version:
            del self._overlay[key]
            return version == overlay.resource_version and not deleted
        return False

    # ----- state ----------------------------------------------------------------------------
    def actual_objects(self, namespace: str) -> list[ManagedObject]:
        """Watched objects, corrected by the results of writes the watch has not shown yet."""
        by_name = {o.name: o for o in self.state.objects_in(namespace) if o.uid not in self._ghosts}
        now = time.monotonic()
        for (ns, name), overlay in list(self._overlay.items()):
            if ns != namespace:
                continue
            if now - overlay.since > OVERLAY_TTL:
                del self._overlay[(ns, name)]
                continue
            current = by_name.get(name)
            if current is not None and _rv(current.resource_version) >= overlay.resource_version:
                continue
            if overlay.obj is None:
                by_name.pop(name, None)
            else:
                by_name[name] = overlay.obj
        return list(by_name.values())

    # ----- workers --------------------------------------------------------------------------
    async def _worker(self) -> None:
        await self.ready.wait()
        while True:
            namespace = await self._queue.get()
            self._queued.discard(namespace)
            self._running.add(namespace)
            metrics.QUEUE_DEPTH.set(len(self._queued))
            started = self._enqueued_at.pop(namespace, time.monotonic())
            try:
                ok = await self.reconcile(namespace, started)
                self._failures.pop(namespace, None) if ok else self._retry_later(namespace)
            except Exception:
                logger.exception("reconcile of namespace %s failed", namespace)
                metrics.RECONCILES.labels("exception").inc()
                self._retry_later(namespace)
            finally:
                self._running.discard(namespace)
                if namespace in self._again:
                    self._again.discard(namespace)
                    self.enqueue(namespace)
                if not self._queued and not self._running:
                    self.idle.set()

    def _retry_later(self, namespace: str) -> None:
        count = self._failures.get(namespace, 0) + 1
        self._failures[namespace] = count
        delay = min(self.settings.max_backoff, 0.5 * 2 ** min(count, 10))
        asyncio.get_running_loop().call_later(delay, self.enqueue, namespace)

    async def reconcile(self, namespace: str, started: float | None = None) -> bool:
        """Bring one namespace to its desired state. Returns False when a retry is needed."""
        t0 = time.monotonic()
        info = self.state.namespace(namespace)
        if info is None or info.terminating:
            # Gone or going: its objects go with it, and writing there would only race the
            # namespace controller. Forget it so status stops counting it.
            self._forget_namespace(namespace)
            metrics.RECONCILES.labels("unchanged").inc()
            return True
        policies = self.state.policies()
        selecting = policies_for(list(policies.values()), info)
        now = exemptions.now()
        renders = [render_policy(self.templates, info, p, now) for p in selecting]
        self._schedule_expiries(namespace, selecting, now)
        plan = build_plan(
            info, renders, self.actual_objects(namespace), policies, self.applied_hashes
        )
        failed = await self._execute(plan, started or t0)
        self._record(plan, selecting, failed)
        metrics.RECONCILE_SECONDS.observe(time.monotonic() - t0)
        result = "error" if failed else ("changed" if plan.writes else "unchanged")
        metrics.RECONCILES.labels(result).inc()
        return not failed

    def _schedule_expiries(
        self, namespace: str, selecting: Iterable[BaselinePolicy], now: datetime.datetime
    ) -> None:
        """Re-reconcile ``namespace`` exactly when an active exception ends (no sweep delay)."""
        loop = asyncio.get_running_loop()
        for policy in selecting:
            when = exemptions.next_expiry(policy.spec, namespace, now)
            if when is None:
                continue
            key = (namespace, policy.name, when)
            if key in self._expiry_timers:
                continue
            # A hair late rather than early: the reconcile then already sees the exception over.
            delay = (when - now).total_seconds() + 0.05
            self._expiry_timers[key] = loop.call_later(delay, self._exception_expired, key)

    def _exception_expired(self, key: tuple[str, str, datetime.datetime]) -> None:
        self._expiry_timers.pop(key, None)
        self._dirty_policies.add(key[1])  # its status lists the exception as Expired now
        self.enqueue(key[0])

    async def _execute(self, plan: Plan, started: float) -> dict[str, str]:
        """Run the phases in order; a policy with a failure gets no later phase.

        Returns failures as {object name: message}. Once a write of a policy fails, that
        policy's actions in later phases are not attempted (so a failed allow-dns never leaves a
        new default-deny behind it). Other policies go on: one policy's refused write must not
        stop another policy's baseline from being repaired in the same namespace.
        """
        failed: dict[str, str] = {}
        stopped: set[str] = set()
        for phase in plan.phases:
            runnable = []
            for action in phase:
                if action.policy_name in stopped:
                    failed.setdefault(action.name, "not attempted: an earlier step failed")
                else:
                    runnable.append(action)
            results = await asyncio.gather(
                *(self._write(a, started) for a in runnable), return_exceptions=True
            )
            for action, result in zip(runnable, results, strict=True):
                if isinstance(result, BaseException):
                    failed[action.name] = _describe(result)
                    stopped.add(action.policy_name)
                    logger.warning(
                        "%s of NetworkPolicy %s/%s failed: %s",
                        action.verb,
                        action.namespace,
                        action.name,
                        failed[action.name],
                    )
        return failed

    async def _write(self, action: Action, started: float) -> None:
        key = (action.namespace, action.name)
        if action.verb == "Delete":
            try:
                await self.client.delete(action.namespace, action.name, action.uid)
            except ApiError as exc:
                if exc.status == 409:  # uid precondition: not our object any more; re-plan
                    return
                raise
            # The tombstone must hide every version of the object we knew, including the one our
            # own last apply produced (still only in the overlay when the watch lags): a stale
            # allow-dns taken for present would let default-deny isolate egress without DNS.
            # Only the DELETED event or a newer version (a re-creation) retires it.
            previous = self.state.objects_in(action.namespace)
            known = [_rv(o.resource_version) for o in previous if o.name == action.name]
            earlier = self._overlay.get(key)
            if earlier is not None:
                known.append(earlier.resource_version)
            self._overlay[key] = _Overlay(None, max(known, default=0) + 1)
            self.applied_hashes.pop(key, None)
            metrics.WRITES.labels("delete", "NetworkPolicy").inc()
            self._event_namespace(
                action.namespace,
                "Removed",
                f"Removed NetworkPolicy {action.name} ({action.piece}) of BaselinePolicy "
                f"{action.policy_name}: no longer selected",
            )
            return
        assert action.body is not None
        result = await self.client.apply(action.body)
        metrics.WRITES.labels("apply", "NetworkPolicy").inc()
        if canonical.spec(result.get("spec") or {}) != action.body["spec"]:
            # Another field manager added fields that apply cannot take away: replace the spec.
            result = await self.client.replace_spec(
                action.namespace,
                action.name,
                action.body["spec"],
                result["metadata"]["resourceVersion"],
            )
            metrics.WRITES.labels("replace", "NetworkPolicy").inc()
        written = ManagedObject.from_body(result)
        self._overlay[key] = _Overlay(written, _rv(written.resource_version))
        self.applied_hashes[key] = action.digest
        if action.repair:
            metrics.DRIFT_REPAIRS.labels(action.piece).inc()
            metrics.REPAIR_SECONDS.observe(time.monotonic() - started)
            self._event(
                {
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy",
                    "name": action.name,
                    "namespace": action.namespace,
                    "uid": written.uid,
                },
                "Repaired",
                f"Restored NetworkPolicy {action.name} of BaselinePolicy {action.policy_name} "
                f"after it was {'deleted' if action.verb == 'Create' else 'changed'}",
                "Warning",
            )

    # ----- bookkeeping, status and events ---------------------------------------------------
    def _forget_namespace(self, namespace: str) -> None:
        for policy in self.outcomes.pop(namespace, {}):
            self._dirty_policies.add(policy)
        for key in [k for k in self.applied_hashes if k[0] == namespace]:
            del self.applied_hashes[key]

    def _record(
        self, plan: Plan, selecting: list[BaselinePolicy], failed: Mapping[str, str]
    ) -> None:
        ns = plan.namespace
        previous = self.outcomes.get(ns, {})
        current: dict[str, Assessment] = {}
        now = exemptions.now()
        for policy in selecting:
            current[policy.name] = assess(plan, policy, now, failed=failed, executed=True)
        for name in set(previous) | set(current):
            if previous.get(name) != current.get(name):
                self._dirty_policies.add(name)
        if current:
            self.outcomes[ns] = current
        else:
            self.outcomes.pop(ns, None)
        self._report(plan, current, failed)

    def _report(
        self, plan: Plan, outcomes: Mapping[str, Assessment], failed: Mapping[str, str]
    ) -> None:
        ns = plan.namespace
        created = [
            a for a in plan.writes if a.verb != "Delete" and not a.repair and a.name not in failed
        ]
        if created:
            by_policy: dict[str, list[str]] = {}
            for a in created:
                by_policy.setdefault(a.policy_name, []).append(a.piece)
            for policy, pieces in sorted(by_policy.items()):
                self._event_namespace(
                    ns, "Applied", f"Applied BaselinePolicy {policy}: {', '.join(sorted(pieces))}"
                )
        live: set[tuple[str, ...]] = set()
        key: tuple[str, ...]
        for policy, outcome in outcomes.items():
            for name in outcome.conflicts:
                key = ("conflict", ns, policy, name)
                live.add(key)
                if key not in self._reported:
                    message = (
                        f"NetworkPolicy {ns}/{name} exists and is not managed by nsbaseline; "
                        f"BaselinePolicy {policy} leaves it untouched"
                    )
                    self._event_policy(policy, "Conflict", message)
                    self._event_namespace(ns, "Conflict", message, "Warning")
            for template, message, kind in outcome.errors:
                key = ("error", ns, policy, template, message)
                live.add(key)
                if key not in self._reported:
                    metrics.TEMPLATE_ERRORS.labels(template).inc()
                    self._event_policy(
                        policy,
                        "TemplateError" if kind == "template" else "ApplyFailed",
                        message,
                    )
        stale = {k for k in self._reported if k[1] == ns} - live
        self._reported -= stale
        self._reported |= live

    def _event(
        self, involved: Mapping[str, Any], reason: str, message: str, type_: str = "Normal"
    ) -> None:
        self._events.put_nowait((involved, reason, message, type_))

    def _event_namespace(
        self, namespace: str, reason: str, message: str, type_: str = "Normal"
    ) -> None:
        self._event(
            {"apiVersion": "v1", "kind": "Namespace", "name": namespace, "namespace": namespace},
            reason,
            message,
            type_,
        )

    def _event_policy(self, policy: str, reason: str, message: str) -> None:
        info = self.state.policies().get(policy)
        involved = {"apiVersion": names.API_VERSION, "kind": names.KIND, "name": policy}
        if info is not None:
            involved["uid"] = info.uid
        self._event(involved, reason, message, "Warning")

    async def _event_worker(self) -> None:
        while True:
            involved, reason, message, type_ = await self._events.get()
            try:
                await self.client.post_event(involved, reason=reason, message=message, type_=type_)
                metrics.WRITES.labels("create", "Event").inc()
            except Exception as exc:  # events are best effort; never block reconciling
                logger.debug("could not post event %s: %s", reason, exc)

    async def _status_loop(self) -> None:
        await self.ready.wait()
        while True:
            await asyncio.sleep(self.settings.status_interval)
            if self._dirty_policies:
                await self.flush_status()

    async def flush_status(self) -> None:
        """Write the status of every policy whose outcomes changed, if its status differs."""
        dirty, self._dirty_policies = self._dirty_policies, set()
        policies = self.state.policies()
        total_managed = 0
        for ns_outcomes in self.outcomes.values():
            total_managed += sum(o.managed for o in ns_outcomes.values())
        metrics.MANAGED_OBJECTS.set(total_managed)
        for name in sorted(dirty):
            policy = policies.get(name)
            if policy is None:
                for gauge in (metrics.MATCHED, metrics.COMPLIANT):
                    with contextlib.suppress(KeyError):
                        gauge.remove(name)
                continue
            outcomes = [o[name] for o in self.outcomes.values() if name in o]
            previous = self._status_written.get(name) or dict(policy.status)
            status = policy_status(policy.generation, policy.audit, outcomes, previous, _now())
            status["exceptions"] = exemptions.status_entries(policy.spec, exemptions.now())
            metrics.MATCHED.labels(name).set(status["matchedNamespaces"])
            metrics.COMPLIANT.labels(name).set(status["compliantNamespaces"])
            if _comparable(status) == _comparable(dict(policy.status)):
                self._status_written[name] = status
                continue
            if self._status_written.get(name) == status:
                continue  # written already; the watch has not shown it yet
            try:
                await self.client.patch_policy_status(name, status)
                metrics.WRITES.labels("patch", "BaselinePolicyStatus").inc()
                self._status_written[name] = status
            except Exception as exc:
                # Refusals and lost connections (an API server restart) alike: keep the policy
                # dirty for the next tick. Letting it escape would end the status loop for good.
                if not (isinstance(exc, ApiError) and exc.status == 404):
                    logger.warning("status of BaselinePolicy %s not written: %s", name, exc)
                    self._dirty_policies.add(name)

    async def _sweep_loop(self) -> None:
        """The backstop: every namespace is re-checked periodically, whatever the watches said,
        and soon after a relist, once the watched state is checked for ghosts.

        Ghosts are looked for only after a relist, never on the timer: a replica paused by
        peering keeps its timer but no longer watches, and must not act on a listing newer than
        what it watched (it would undo the active replica's deletions).
        """
        await self.ready.wait()
        while True:
            relisted = False
            with contextlib.suppress(TimeoutError):
                relisted = await asyncio.wait_for(
                    self._relisted.wait(), self.settings.sweep_interval
                )
            if relisted:
                await asyncio.sleep(RELIST_SETTLE)  # let the listing finish arriving
                self._relisted.clear()
                try:
                    await self.forget_ghosts()
                except Exception as exc:
                    logger.warning("could not list NetworkPolicies after a relist: %s", exc)
                    self._relisted.set()  # try again
            self.enqueue_all()

    async def forget_ghosts(self) -> int:
        """Hide watched objects that a fresh listing proves gone; return how many were found.

        Kopf's watch never reports objects deleted while it was not watching (a paused replica,
        a relist after 410 Gone): they stay in the index. Taken for present, a deleted allow-dns
        would never be restored. An object older than the listing and absent from it is gone;
        uids are never reused, so hiding it for good is safe.
        """
        items, version = await self.client.list_network_policies()
        alive = {str(i.get("metadata", {}).get("uid")) for i in items}
        found = 0
        for ns in list(self.state.namespace_names()):
            for obj in self.state.objects_in(ns):
                if obj.uid in alive or obj.uid in self._ghosts:
                    continue
                if _rv(obj.resource_version) < _rv(version):
                    self._ghosts.add(obj.uid)
                    found += 1
                    logger.warning(
                        "NetworkPolicy %s/%s is gone but was never reported deleted; forgetting it",
                        ns,
                        obj.name,
                    )
                    self.enqueue(ns)
        return found


def _comparable(status: Mapping[str, Any]) -> Any:
    return canonical.fingerprint(status)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        return f"{exc.status} {exc.reason}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


__all__ = ["Reconciler", "Settings", "StateView"]
