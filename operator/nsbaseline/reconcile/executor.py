"""Sending a plan's writes, phase by phase, and learning from the answers.

- Create is a POST (the API server's cheapest way in). 409 AlreadyExists means someone holds the
  name: if the object is ours after all (our labels were stripped, so the label-selected watch
  stopped showing it) it is repaired by server-side apply; if it is foreign it is a conflict and
  is left untouched — remembered for a while so every reconcile does not knock again.
- Update is a server-side apply under our field manager (force: we own our fields), followed by
  a spec replace guarded by resourceVersion when another manager's fields survive the apply.
- Delete carries a UID precondition: never a same-named object that replaced ours.

A policy whose write fails gets no later phase (a failed allow-dns never leaves a new
default-deny behind it); other policies go on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from nsbaseline import metrics
from nsbaseline.kube.errors import ApiError
from nsbaseline.observed import ManagedObject, spec_digest
from nsbaseline.plan import Action, Conflict, Plan
from nsbaseline.reconcile.written import WriteCache

logger = logging.getLogger("nsbaseline")

#: What a write that turned out unnecessary returns (a delete whose object was replaced).
SKIPPED = object()
#: How long a foreign holder of one of our names is believed without asking the API again.
FOREIGN_RECHECK = 30.0


class Writer(Protocol):
    """The writes the executor needs (``nsbaseline.kube.KubeClient`` in the operator)."""

    async def create(self, body: Mapping[str, Any]) -> dict[str, Any]: ...
    async def apply(self, body: Mapping[str, Any]) -> dict[str, Any]: ...
    async def replace_spec(
        self, namespace: str, name: str, spec: Mapping[str, Any], resource_version: str
    ) -> dict[str, Any]: ...
    async def delete(self, namespace: str, name: str, uid: str | None) -> bool: ...
    async def get(self, namespace: str, name: str) -> dict[str, Any] | None: ...


@dataclass
class Result:
    """What happened to a plan's writes."""

    #: object name -> why its write failed (or was not attempted)
    failed: dict[str, str] = field(default_factory=dict)
    #: names found held by a foreign object when we tried to create them
    conflicts: list[Conflict] = field(default_factory=list)
    #: writes that took effect
    done: list[Action] = field(default_factory=list)


class ForeignHolders:
    """Names in use by NetworkPolicies that are not ours, as learned from 409s.

    The watch only shows our objects, so this is how a reconcile knows, without a request, that
    creating the name would fail. Entries expire so a foreign object deleted meanwhile is
    noticed on a later reconcile.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._held: dict[tuple[str, str], tuple[ManagedObject, float]] = {}
        self._clock = clock

    def remember(self, obj: ManagedObject) -> None:
        self._held[(obj.namespace, obj.name)] = (obj, self._clock() + FOREIGN_RECHECK)

    def in_namespace(self, namespace: str) -> list[ManagedObject]:
        now = self._clock()
        out = []
        for key, (obj, until) in list(self._held.items()):
            if key[0] != namespace:
                continue
            if now >= until:
                del self._held[key]
            else:
                out.append(obj)
        return out

    def namespaces(self) -> set[str]:
        return {ns for ns, _ in self._held}

    def forget_namespace(self, namespace: str) -> None:
        for key in [k for k in self._held if k[0] == namespace]:
            del self._held[key]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        return f"{exc.status} {exc.reason}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


class WriteExecutor:
    def __init__(
        self,
        writer: Writer,
        cache: WriteCache,
        foreign: ForeignHolders,
        on_done: Callable[[Action, ManagedObject | None, float], None] | None = None,
    ) -> None:
        self._writer = writer
        self._cache = cache
        self._foreign = foreign
        self._on_done = on_done or (lambda *_: None)

    async def execute(self, plan: Plan, watched: list[ManagedObject], started: float) -> Result:
        """Run the plan's phases in order; see the module docstring for the rules."""
        result = Result()
        stopped: set[str] = set()
        for phase in plan.phases:
            runnable = []
            for action in phase:
                if action.policy_name in stopped:
                    result.failed.setdefault(action.name, "not attempted: an earlier step failed")
                else:
                    runnable.append(action)
            answers = await asyncio.gather(
                *(self._write(a, watched, started) for a in runnable), return_exceptions=True
            )
            for action, answer in zip(runnable, answers, strict=True):
                if isinstance(answer, BaseException):
                    result.failed[action.name] = _describe(answer)
                    stopped.add(action.policy_name)
                    logger.warning(
                        "%s of NetworkPolicy %s/%s failed: %s",
                        action.verb,
                        action.namespace,
                        action.name,
                        result.failed[action.name],
                    )
                elif isinstance(answer, Conflict):
                    result.conflicts.append(answer)
                elif answer is not SKIPPED:
                    result.done.append(action)
        return result

    async def _write(
        self, action: Action, watched: list[ManagedObject], started: float
    ) -> Conflict | object | None:
        """One action; the write cache holds the object's watch events while it is on its way."""
        self._cache.sending(action.namespace, action.name)
        try:
            return await self._send(action, watched, started)
        finally:
            # After a write that took effect the cache has settled the held events already;
            # after any other outcome they are news.
            self._cache.unsent(action.namespace, action.name)

    async def _send(
        self, action: Action, watched: list[ManagedObject], started: float
    ) -> Conflict | object | None:
        if action.verb == "Delete":
            try:
                await self._writer.delete(action.namespace, action.name, action.uid)
            except ApiError as exc:
                if exc.conflict:  # uid precondition: not our object any more; re-plan
                    return SKIPPED
                raise
            self._cache.deleted(action.namespace, action.name, watched)
            metrics.WRITES.labels("delete", "NetworkPolicy").inc()
            self._on_done(action, None, started)
            return None
        assert action.body is not None
        desired = spec_digest(action.body["spec"])
        if action.verb == "Create":
            try:
                stored = await self._writer.create(action.body)
                metrics.WRITES.labels("create", "NetworkPolicy").inc()
            except ApiError as exc:
                if not exc.already_exists:
                    raise
                holder = await self._writer.get(action.namespace, action.name)
                if holder is None:
                    raise  # gone again already: the retry creates it
                found = ManagedObject.from_body(holder)
                if not found.ours:
                    self._foreign.remember(found)
                    return Conflict(action.policy_name, action.namespace, action.name)
                stored = await self._apply(action, desired)  # ours, but unlabelled: repair it
        else:
            stored = await self._apply(action, desired)
        # What the API server stores is our spec with its defaults: the same canonical digest.
        written = ManagedObject.from_body(stored, desired)
        self._cache.wrote(written, action.digest)
        self._on_done(action, written, started)
        return None

    async def _apply(self, action: Action, desired: str) -> dict[str, Any]:
        assert action.body is not None
        stored = await self._writer.apply(action.body)
        metrics.WRITES.labels("apply", "NetworkPolicy").inc()
        if spec_digest(stored.get("spec") or {}) != desired:
            # Another field manager added fields that apply cannot take away: replace the spec.
            stored = await self._writer.replace_spec(
                action.namespace,
                action.name,
                action.body["spec"],
                stored["metadata"]["resourceVersion"],
            )
            metrics.WRITES.labels("replace", "NetworkPolicy").inc()
        return stored


__all__ = ["FOREIGN_RECHECK", "ForeignHolders", "Result", "WriteExecutor", "Writer"]
