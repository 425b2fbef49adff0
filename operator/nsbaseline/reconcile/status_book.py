"""BaselinePolicy status from the latest assessment of every namespace, written only on change.

Reconciles record assessments here; a flush every half second turns the policies whose
assessments changed into status objects (:func:`nsbaseline.status.policy_status`) and writes
only those that differ from what the API server holds — so a converged cluster, or a restart,
writes nothing.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from nsbaseline import canonical, exemptions, metrics
from nsbaseline.assessment import Assessment
from nsbaseline.kube.errors import ApiError
from nsbaseline.model import BaselinePolicy
from nsbaseline.status import policy_status

logger = logging.getLogger("nsbaseline")
#: The longest a new generation's status waits for its namespaces (then it is written anyway).
SETTLE_LIMIT = 120.0


class StatusWriter(Protocol):
    async def patch_policy_status(self, name: str, status: Mapping[str, Any]) -> None: ...


def _timestamp(now: datetime.datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


class StatusBook:
    def __init__(
        self,
        writer: StatusWriter,
        policies: Callable[[], Mapping[str, BaselinePolicy]],
        clock: Callable[[], datetime.datetime],
    ) -> None:
        self._writer = writer
        self._policies = policies
        self._clock = clock
        #: namespace -> policy -> assessment
        self._book: dict[str, dict[str, Assessment]] = {}
        self._dirty: set[str] = set()
        self._written: dict[str, dict[str, Any]] = {}
        self._seen_generations: dict[str, tuple[str, int]] = {}
        #: policy -> (namespaces still to reconcile for its new generation, give up at).
        self._awaiting: dict[str, tuple[set[str], float]] = {}

    @property
    def dirty(self) -> bool:
        return bool(self._dirty)

    def assessments(self, namespace: str) -> Mapping[str, Assessment]:
        return self._book.get(namespace, {})

    def namespaces(self) -> list[str]:
        return list(self._book)

    def expect(self, policy: str, namespaces: set[str], now: float) -> None:
        """``policy`` has a new generation: write its status only once these namespaces are
        reconciled (or after :data:`SETTLE_LIMIT`), never a premature "NoNamespacesSelected"."""
        self._awaiting[policy] = (set(namespaces), now + SETTLE_LIMIT)

    def _settled(self, policy: str, now: float) -> bool:
        waiting = self._awaiting.get(policy)
        if waiting is None:
            return True
        if waiting[0] and now < waiting[1]:
            return False
        del self._awaiting[policy]
        return True

    def record(self, namespace: str, current: Mapping[str, Assessment]) -> None:
        """The assessments of ``namespace`` after a reconcile; policies that changed are dirty."""
        for waiting, _ in self._awaiting.values():
            waiting.discard(namespace)
        previous = self._book.get(namespace, {})
        for name in set(previous) | set(current):
            if previous.get(name) != current.get(name):
                self._dirty.add(name)
        if current:
            self._book[namespace] = dict(current)
        else:
            self._book.pop(namespace, None)

    def forget(self, namespace: str) -> None:
        """``namespace`` is gone: it no longer counts for any policy."""
        self.record(namespace, {})

    def touch(self, policy: str) -> None:
        """Recompute ``policy``'s status at the next flush (its spec or an exception changed)."""
        self._dirty.add(policy)

    def policy_changed(self, policy: BaselinePolicy | None, name: str) -> bool:
        """A BaselinePolicy event; True when its spec really changed (a new generation).

        Our own status writes come back as events too; they must not start a sweep each time.
        """
        key = (policy.uid, policy.generation) if policy else None
        if policy is not None and self._seen_generations.get(name) == key:
            return False
        if policy is None:
            self._seen_generations.pop(name, None)
            self._written.pop(name, None)
            self._awaiting.pop(name, None)
        else:
            self._seen_generations[name] = (policy.uid, policy.generation)
        self._dirty.add(name)
        return True

    def managed(self) -> int:
        return sum(a.managed for ns in self._book.values() for a in ns.values())

    async def flush(self) -> None:
        """Write the status of every dirty policy whose status differs from the stored one."""
        dirty, self._dirty = self._dirty, set()
        policies = self._policies()
        metrics.MANAGED_OBJECTS.set(self.managed())
        now = self._clock()
        moment = time.monotonic()
        for name in sorted(dirty):
            if not self._settled(name, moment):
                self._dirty.add(name)  # its namespaces are still being reconciled
                continue
            policy = policies.get(name)
            if policy is None:
                for gauge in (metrics.MATCHED, metrics.COMPLIANT):
                    with contextlib.suppress(KeyError):
                        gauge.remove(name)
                continue
            outcomes = [ns[name] for ns in self._book.values() if name in ns]
            previous = self._written.get(name) or dict(policy.status)
            status = policy_status(
                policy.generation, policy.audit, outcomes, previous, _timestamp(now)
            )
            status["exceptions"] = exemptions.status_entries(policy.spec, now)
            metrics.MATCHED.labels(name).set(status["matchedNamespaces"])
            metrics.COMPLIANT.labels(name).set(status["compliantNamespaces"])
            if canonical.fingerprint(status) == canonical.fingerprint(dict(policy.status)):
                self._written[name] = status
                continue
            if self._written.get(name) == status:
                continue  # written already; the watch has not shown it yet
            try:
                await self._writer.patch_policy_status(name, status)
                metrics.WRITES.labels("patch", "BaselinePolicyStatus").inc()
                self._written[name] = status
            except Exception as exc:
                # Refusals and lost connections (an API server restart) alike: keep the policy
                # dirty for the next tick. Letting it escape would end the status loop for good.
                if not (isinstance(exc, ApiError) and exc.status == 404):
                    logger.warning("status of BaselinePolicy %s not written: %s", name, exc)
                    self._dirty.add(name)


__all__ = ["StatusBook", "StatusWriter"]
