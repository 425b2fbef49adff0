"""A scaling fix for Kopf's start-up with indexes: one waiter per toggle set, not one per object.

With ``@kopf.index`` handlers, every object's worker waits until *all* objects of every indexed
resource are indexed (``operator_indexed``, a ``ToggleSet`` over one toggle per object). Each
waiter sits on one shared ``asyncio.Condition`` and every added or dropped toggle wakes all of
them, so the initial listing of M objects costs O(M^2) wake-ups and lock hand-overs. Measured with
``make bench``: about 2,100 objects (500 namespaces, 1,600 NetworkPolicies) kept a restarted
operator busy for minutes before its first reconcile; at 5,000 namespaces it would never finish.

The fix keeps Kopf's semantics and only changes who waits: the first caller of
``ToggleSet.wait_for(state)`` starts one shared "herald" task that waits on the condition as
before; every other caller awaits that task, then re-checks the state itself (looping if it
flipped back meanwhile). A notification now wakes one or two heralds instead of M workers.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

_HERALDS = "_nsbaseline_heralds"
#: Every herald started, so shutdown can end them (they are shielded from their waiters).
_ALL_HERALDS: weakref.WeakSet[asyncio.Task[None]] = weakref.WeakSet()
#: The Kopf minor version this patch was written against (pyproject pins the same).
KOPF_MINOR = (1, 45)


class KopfPatchError(RuntimeError):
    """Kopf is not the version this patch fits: start-up would silently go quadratic again."""


def _kopf_minor() -> tuple[int, ...]:
    from kopf._cogs.helpers import versions

    parts = str(versions.version or "0.0").split(".")[:2]
    return tuple(int(p) if p.isdigit() else 0 for p in parts)


def apply() -> None:
    """Install the fix into Kopf (idempotent); raise :class:`KopfPatchError` if it cannot.

    Failing loudly is the point: a silently skipped patch only shows as minutes of start-up at
    thousands of namespaces, long after the upgrade that caused it.
    """
    if _kopf_minor() != KOPF_MINOR:
        raise KopfPatchError(
            f"nsbaseline's Kopf patch fits Kopf {KOPF_MINOR[0]}.{KOPF_MINOR[1]}.x, found "
            f"{'.'.join(map(str, _kopf_minor()))}: check kopfpatch.py against the new Kopf"
        )
    try:
        from kopf._cogs.aiokits.aiotoggles import ToggleSet
    except ImportError as exc:
        raise KopfPatchError(f"Kopf's ToggleSet moved: {exc}") from exc
    if not callable(getattr(ToggleSet, "is_on", None)) or not callable(
        getattr(ToggleSet, "wait_for", None)
    ):
        raise KopfPatchError("Kopf's ToggleSet has no is_on()/wait_for(): its internals changed")
    if getattr(ToggleSet.wait_for, "_nsbaseline_shared", False):
        return
    original: Callable[[Any, bool], Coroutine[Any, Any, None]] = ToggleSet.wait_for

    async def wait_for(self: Any, state: bool, /) -> None:
        wanted = bool(state)
        while self.is_on() != wanted:
            heralds: dict[bool, asyncio.Task[None]] = self.__dict__.setdefault(_HERALDS, {})
            herald = heralds.get(wanted)
            if herald is None or herald.done():
                herald = asyncio.ensure_future(original(self, wanted))
                heralds[wanted] = herald
                _ALL_HERALDS.add(herald)
            # shield: a cancelled waiter must not cancel the herald the others depend on.
            await asyncio.shield(herald)

    wait_for._nsbaseline_shared = True  # type: ignore[attr-defined]
    ToggleSet.wait_for = wait_for  # type: ignore[method-assign,assignment]


def cancel_heralds() -> None:
    """End the heralds still waiting: at shutdown nothing waits for them any more.

    Shielded from their waiters' cancellation, they would otherwise outlive Kopf's cleanup and
    cost every stop Kopf's hung-task timeout (5 s).
    """
    for herald in list(_ALL_HERALDS):
        herald.cancel()


__all__ = ["KOPF_MINOR", "KopfPatchError", "apply", "cancel_heralds"]
