"""Kopf's ToggleSet, as patched by nsbaseline.kopfpatch: same answers, linear wake-ups."""

from __future__ import annotations

import asyncio

import pytest
from kopf._cogs.aiokits import aiotoggles

from nsbaseline import kopfpatch

kopfpatch.apply()


def test_waiters_return_only_once_every_toggle_is_on() -> None:
    async def scenario() -> list[str]:
        toggles = aiotoggles.ToggleSet(all)
        first = await toggles.make_toggle(name="first")
        second = await toggles.make_toggle(name="second")
        done: list[str] = []

        async def waiter(name: str) -> None:
            await toggles.wait_for(True)
            done.append(name)

        tasks = [asyncio.create_task(waiter(f"w{i}")) for i in range(3)]
        await first.turn_to(True)
        await asyncio.sleep(0.01)
        assert done == []  # one toggle still off
        await second.turn_to(True)
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        return done

    assert sorted(asyncio.run(scenario())) == ["w0", "w1", "w2"]


def test_a_cancelled_waiter_does_not_strand_the_others() -> None:
    async def scenario() -> bool:
        toggles = aiotoggles.ToggleSet(all)
        toggle = await toggles.make_toggle(name="only")
        cancelled = asyncio.create_task(toggles.wait_for(True))
        survivor = asyncio.create_task(toggles.wait_for(True))
        await asyncio.sleep(0.01)
        cancelled.cancel()
        await asyncio.sleep(0.01)
        await toggle.turn_to(True)
        await asyncio.wait_for(survivor, 5)
        return cancelled.cancelled()

    assert asyncio.run(scenario())


def test_waiting_for_off_works_too() -> None:
    async def scenario() -> None:
        toggles = aiotoggles.ToggleSet(any)
        toggle = await toggles.make_toggle(True, name="paused")
        waiter = asyncio.create_task(toggles.wait_for(False))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        await toggle.turn_to(False)
        await asyncio.wait_for(waiter, 5)

    asyncio.run(scenario())


def test_indexing_many_objects_costs_linear_state_checks() -> None:
    """The start-up pattern of Kopf's indexed workers: M toggles dropped, M waiters waiting.

    Unpatched, every drop wakes every waiter, which re-checks the whole set: about M^2/2 checks.
    Counting checks keeps this independent of the machine's speed.
    """
    objects = 400
    checks = 0

    class Counting(aiotoggles.ToggleSet):
        def is_on(self) -> bool:
            nonlocal checks
            checks += 1
            return super().is_on()

    async def scenario() -> None:
        toggles = Counting(all)
        resource = await toggles.make_toggle(name="resource")

        async def worker(toggle: aiotoggles.Toggle) -> None:
            await toggles.drop_toggle(toggle)
            await toggles.wait_for(True)

        tasks = []
        for i in range(objects):
            toggle = await toggles.make_toggle(name=str(i))
            tasks.append(asyncio.create_task(worker(toggle)))
            await asyncio.sleep(0)
        await resource.turn_to(True)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)

    asyncio.run(scenario())
    assert checks < 10 * objects, f"{checks} state checks for {objects} objects"


def test_the_patch_refuses_a_kopf_minor_version_it_was_not_written_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kopf._cogs.helpers import versions

    monkeypatch.setattr(versions, "version", "1.99.0")
    with pytest.raises(kopfpatch.KopfPatchError, match=r"found 1\.99"):
        kopfpatch.apply()


def test_the_patch_refuses_kopf_internals_it_does_not_recognise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(aiotoggles.ToggleSet, "is_on")
    with pytest.raises(kopfpatch.KopfPatchError, match="internals changed"):
        kopfpatch.apply()


def test_heralds_still_waiting_at_shutdown_are_ended() -> None:
    async def scenario() -> bool:
        toggles = aiotoggles.ToggleSet(all)
        await toggles.make_toggle(name="never-on")
        waiter = asyncio.create_task(toggles.wait_for(True))
        await asyncio.sleep(0.01)
        waiter.cancel()
        kopfpatch.cancel_heralds()
        await asyncio.sleep(0.01)
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        return not pending

    assert asyncio.run(scenario())
