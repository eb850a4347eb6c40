"""Coalescing: identical calls in flight share one; waiters leaving cancel nothing."""

from __future__ import annotations

import asyncio

import pytest

from lasso.server.cache.coalesce import Coalescer

from support import eventually


class Call:
    """A call that waits until released, counting how often it ran."""

    def __init__(self) -> None:
        self.runs = 0
        self.release = asyncio.Event()
        self.fail: BaseException | None = None

    async def __call__(self) -> str:
        self.runs += 1
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return f"answer-{self.runs}"


async def test_followers_share_the_leaders_call() -> None:
    """Ten identical calls in flight make one call; all get its value."""
    co: Coalescer[str] = Coalescer()
    call = Call()
    tasks = [asyncio.create_task(co.run(b"k", call)) for _ in range(10)]
    await eventually(lambda: call.runs == 1 and co.waiters(b"k") == 9)
    call.release.set()
    results = await asyncio.gather(*tasks)
    assert call.runs == 1
    assert [v for v, _ in results] == ["answer-1"] * 10
    assert sum(shared for _, shared in results) == 9 and co.followers == 9
    assert len(co) == 0


async def test_run_then_maps_each_callers_value_once() -> None:
    """run_then answers then(value, shared) for the leader and each follower, not on failure."""
    co: Coalescer[str] = Coalescer()
    call = Call()
    seen: list[tuple[str, bool]] = []

    def then(value: str, shared: bool) -> str:
        seen.append((value, shared))
        return value.upper()

    tasks = [asyncio.create_task(co.run_then(b"k", call, then)) for _ in range(3)]
    await eventually(lambda: co.waiters(b"k") == 2)
    call.release.set()
    assert await asyncio.gather(*tasks) == ["ANSWER-1"] * 3
    assert sorted(seen) == [("answer-1", False), ("answer-1", True), ("answer-1", True)]
    call.fail = RuntimeError("upstream bug")
    with pytest.raises(RuntimeError):
        await co.run_then(b"k", call, then)
    assert len(seen) == 3 and len(co) == 0


async def test_different_keys_do_not_share() -> None:
    """Calls under different keys run separately."""
    co: Coalescer[str] = Coalescer()
    call = Call()
    call.release.set()
    a, b = await asyncio.gather(co.run(b"a", call), co.run(b"b", call))
    assert call.runs == 2 and not a[1] and not b[1]


async def test_after_the_call_a_new_one_is_made() -> None:
    """Nothing lingers: a call after the first finished runs again."""
    co: Coalescer[str] = Coalescer()
    call = Call()
    call.release.set()
    await co.run(b"k", call)
    await co.run(b"k", call)
    assert call.runs == 2


async def test_a_follower_going_away_cancels_nothing() -> None:
    """A cancelled follower leaves the call and the other waiters alone."""
    co: Coalescer[str] = Coalescer()
    call = Call()
    leader = asyncio.create_task(co.run(b"k", call))
    await eventually(lambda: call.runs == 1)
    quitter = asyncio.create_task(co.run(b"k", call))
    stayer = asyncio.create_task(co.run(b"k", call))
    await eventually(lambda: co.waiters(b"k") == 2)
    quitter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await quitter
    assert co.waiters(b"k") == 1
    call.release.set()
    assert (await leader) == ("answer-1", False)
    assert (await stayer) == ("answer-1", True)
    assert call.runs == 1


async def test_a_cancelled_leader_hands_over_to_a_follower() -> None:
    """When the leader's own task is cancelled, a follower runs the call again."""
    co: Coalescer[str] = Coalescer()
    call = Call()
    leader = asyncio.create_task(co.run(b"k", call))
    await eventually(lambda: call.runs == 1)
    followers = [asyncio.create_task(co.run(b"k", call)) for _ in range(3)]
    await eventually(lambda: co.waiters(b"k") == 3)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    await eventually(lambda: call.runs == 2)
    call.release.set()
    results = await asyncio.gather(*followers)
    assert [v for v, _ in results] == ["answer-2"] * 3
    assert sorted(s for _, s in results) == [False, True, True]


async def test_an_error_reaches_every_waiter() -> None:
    """The call's exception is raised to the leader and to each follower."""
    co: Coalescer[str] = Coalescer()
    call = Call()
    call.fail = RuntimeError("boom")
    tasks = [asyncio.create_task(co.run(b"k", call)) for _ in range(3)]
    await eventually(lambda: call.runs == 1 and co.waiters(b"k") == 2)
    call.release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert len(co) == 0


async def test_repr() -> None:
    """The repr shows calls in flight and followers served."""
    assert repr(Coalescer()) == "<Coalescer in_flight=0 followers=0>"
