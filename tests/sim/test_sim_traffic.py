"""The demos' background client against real simulated providers."""

from __future__ import annotations

from typing import Any

import pytest

from lasso.sim.traffic import SAMPLE_CALLS, SampleTraffic

from support import eventually

pytestmark = pytest.mark.integration


async def test_sample_traffic_spreads_mixed_reads_over_its_urls(sim_fleet: Any) -> None:
    """Every URL gets requests, every sample method is sent, and stop() stops it."""
    fleet = await sim_fleet(["a", "b"])
    traffic = SampleTraffic([fleet["a"].url, fleet["b"].url], rps=200)
    traffic.start()
    traffic.start()  # idempotent
    await eventually(lambda: fleet["a"].stats.calls >= 4 and fleet["b"].stats.calls >= 4)
    await traffic.stop()
    sent = traffic.sent
    methods = set(fleet["a"].stats.methods) | set(fleet["b"].stats.methods)
    assert {m for m, _ in SAMPLE_CALLS} <= methods
    assert "stopped" in repr(traffic)
    await traffic.stop()  # idempotent
    assert traffic.sent == sent


def test_sample_traffic_needs_urls_and_a_rate() -> None:
    """No URL or no rate is a programming error, said at once."""
    with pytest.raises(ValueError):
        SampleTraffic([], 1.0)
    with pytest.raises(ValueError):
        SampleTraffic(["http://x"], 0)
