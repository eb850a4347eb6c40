"""Time and randomness as injected values: the kernel never reads a clock itself.

Kernel methods take ``now`` (monotonic seconds) as an argument; :class:`FakeClock` is the
clock tests drive. Randomness comes in as an :class:`Rng`.
"""

from __future__ import annotations

from typing import Protocol


class Rng(Protocol):
    """The subset of :class:`random.Random` the kernel uses."""

    def random(self) -> float: ...


class FakeClock:
    """A clock that only moves when told to, forward only."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("FakeClock only moves forward")
        self._now += seconds

    def __repr__(self) -> str:
        return f"<FakeClock now={self._now:.3f}>"
