"""Helpers for the routing kernel tests (router, channel, status): providers, routers, faults."""

from __future__ import annotations

import random
from collections.abc import Sequence

from lasso.config import ChainConfig, ProviderConfig
from lasso.kernel.breaker import BreakerConfig, BreakerState
from lasso.kernel.channel import BreakerRegistry, Channel
from lasso.kernel.classify import Category
from lasso.kernel.clock import FakeClock
from lasso.kernel.router import ChainRouter

ADDR = "0x" + "ab" * 20
HEAD = 20_000_000


def provider(pid: str, **kw: object) -> ProviderConfig:
    kw.setdefault("url", f"https://{pid}.example/rpc")
    return ProviderConfig(id=pid, name=pid.upper(), **kw)  # type: ignore[arg-type]


def make(
    providers: Sequence[ProviderConfig],
    *,
    seed: int = 1,
    registry: BreakerRegistry | None = None,
    profile: str = "test",
    **chain_kw: object,
) -> ChainRouter:
    rng = random.Random(seed)
    chain = ChainConfig(
        key="ethereum",
        chain_id=1,
        name="Ethereum",
        providers=tuple(providers),
        **chain_kw,  # type: ignore[arg-type]
    )
    reg = registry if registry is not None else BreakerRegistry(BreakerConfig(), rng)
    return ChainRouter(chain, reg, rng, profile=profile)


def ids(chs: Sequence[Channel]) -> list[str]:
    return [ch.key for ch in chs]


def providers_of(chs: Sequence[Channel]) -> list[str]:
    return [ch.provider_id for ch in chs]


def trip(router: ChainRouter, ch: Channel, now: float) -> None:
    """Open ``ch``'s circuit with network errors (threshold 3)."""
    for _ in range(3):
        router.record_failure(ch, "eth_call", Category.NETWORK_ERROR, 0.01, now)
    assert ch.breaker.state(now) is BreakerState.OPEN


def half_open(router: ChainRouter, ch: Channel, clock: FakeClock) -> None:
    trip(router, ch, clock.now())
    clock.advance(35)  # 30 s recovery plus at most 5 % jitter
    assert ch.breaker.state(clock.now()) is BreakerState.HALF_OPEN


def heights(router: ChainRouter, now: float, **h: int) -> None:
    for pid, height in h.items():
        router.observe_height(pid, height, now)
