"""The kernel's injected time: FakeClock moves only when told, and only forward."""

from __future__ import annotations

import random

import pytest

from lasso.kernel.clock import FakeClock, Rng


def test_fake_clock_moves_forward_only() -> None:
    """advance() adds seconds; a negative step is refused and leaves the time alone."""
    clock = FakeClock(start=5.0)
    assert clock.now() == 5.0
    clock.advance(1.5)
    clock.advance(0.0)
    assert clock.now() == 6.5
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-0.1)
    assert clock.now() == 6.5
    assert repr(clock) == "<FakeClock now=6.500>"


def test_random_random_is_an_rng() -> None:
    """The standard generator satisfies the kernel's Rng protocol."""
    rng: Rng = random.Random(1)
    assert 0.0 <= rng.random() < 1.0
