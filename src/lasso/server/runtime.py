"""Live objects built from a set of profiles: routers, upstream pools, breakers.

A :class:`Runtime` is immutable once built; a reload builds a new one and swaps it in.
Upstream pools and circuit breakers are keyed by the *upstream instance* (normalized URL
plus a fingerprint of the auth headers), so profiles that point at the same endpoint
share connections and health, and both survive a reload.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from lasso.config import (
    PROFILE_ALIASES,
    ChainConfig,
    ProfileConfig,
    ProviderConfig,
    default_profile_slug,
)
from lasso.kernel.hedge import ChainHedging
from lasso.kernel.router import BreakerRegistry, ChainRouter, normalize_url
from lasso.net.http_client import HttpUpstreamPool
from lasso.net.transport import UpstreamTransport
from lasso.net.ws_upstream import UpstreamWs
from lasso.server.consistency_state import ChainConsistency, NodeConsistency
from lasso.server.events import EventBus

if TYPE_CHECKING:
    from lasso.server.shared_state import ChainShared

__all__ = ["ChainRuntime", "ProfileRuntime", "Runtime", "PoolRegistry", "instance_key"]


def instance_key(provider: ProviderConfig) -> str:
    """Identity of the physical upstream behind a provider entry."""
    auth = "|".join(f"{k}={v}" for k, v in sorted(provider.headers.items()))
    http = normalize_url(provider.url or "")
    ws = normalize_url(provider.ws_url or "")
    digest = hashlib.sha256(f"{http}|{ws}|{auth}".encode()).hexdigest()[:12]
    host = urlsplit(provider.url or provider.ws_url or "").hostname or "unknown"
    return f"{host}:{digest}"


class PoolRegistry:
    """Upstream HTTP pools shared by instance key, kept across reloads."""

    def __init__(self, *, max_response_size: int = 128 * 1024 * 1024) -> None:
        self._pools: dict[str, HttpUpstreamPool] = {}
        self.max_response_size = max_response_size  # Limits.max_upstream_response

    def get(self, provider: ProviderConfig) -> HttpUpstreamPool | None:
        if not provider.url:
            return None
        key = instance_key(provider)
        pool = self._pools.get(key)
        if pool is None:
            pool = HttpUpstreamPool(
                provider.url,
                headers=dict(provider.headers),
                max_response_size=self.max_response_size,
            )
            self._pools[key] = pool
        return pool

    async def retain_only(self, keys: set[str]) -> None:
        """Close pools no longer referenced by any profile."""
        for key in [k for k in self._pools if k not in keys]:
            await self._pools.pop(key).aclose()

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()
        self._pools.clear()

    def __len__(self) -> int:
        return len(self._pools)


class ChainRuntime:
    """One chain of one profile: its router and the upstream transports of its providers.

    ``pools`` maps provider ids to their HTTP transports (a shared
    :class:`~lasso.net.http_client.HttpUpstreamPool`, or any
    :class:`~lasso.net.transport.UpstreamTransport`); ``ws`` to their upstream WebSocket
    connections, which the app's :class:`~lasso.server.ws_upstreams.WsUpstreamRegistry`
    fills (empty until then). ``hedging`` is the chain's hedge settings and budget
    (``None`` when nothing hedges). ``consistency`` is the chain's served head, filter
    table and counters (:mod:`lasso.server.consistency_state`), kept across reloads; its
    head is the router's.
    """

    __slots__ = (
        "profile", "config", "router", "pools", "ws", "chain_id_result", "key", "events", "shared",
        "hedging", "consistency",
    )  # fmt: skip

    def __init__(
        self,
        profile: str,
        config: ChainConfig,
        router: ChainRouter,
        pools: Mapping[str, UpstreamTransport],
        events: EventBus,
        consistency: ChainConsistency | None = None,
    ) -> None:
        self.events = events
        self.profile = profile
        self.config = config
        self.key = config.key
        self.router = router
        self.pools = pools
        self.ws: dict[str, UpstreamWs] = {}
        self.chain_id_result = f'"{hex(config.chain_id)}"'.encode()
        # Node-wide state with --workers N (lasso.server.shared_state); None in one process.
        self.shared: ChainShared | None = None
        self.hedging = ChainHedging.from_chain(config)
        if consistency is None:
            consistency = ChainConsistency(head=router.head)
        elif consistency.head is not router.head:
            raise ValueError("the router must be built with the chain's served head")
        self.consistency = consistency

    def __repr__(self) -> str:
        return f"<ChainRuntime {self.profile}/{self.key} providers={len(self.config.providers)}>"


class ProfileRuntime:
    __slots__ = ("config", "chains", "_resolve_cache")

    def __init__(self, config: ProfileConfig, chains: dict[str, ChainRuntime]) -> None:
        self.config = config
        self.chains = chains
        self._resolve_cache: dict[str, ChainRuntime | None] = {}

    def resolve(self, ident: str) -> ChainRuntime | None:
        try:
            return self._resolve_cache[ident]
        except KeyError:
            pass
        chain = self.config.resolve_chain(ident)
        rt = self.chains.get(chain.key) if chain is not None else None
        if len(self._resolve_cache) < 1024:
            self._resolve_cache[ident] = rt
        return rt


class Runtime:
    """Everything routing needs for one generation of the profile set.

    ``default_profile`` is the profile for routes without ``/profile/<slug>``: the
    ``default_profile`` argument when given, else ``public``, else the only profile, else
    ``None`` (:func:`lasso.config.default_profile_slug`). ``consistency`` is the process's
    :class:`~lasso.server.consistency_state.NodeConsistency`: pass the same one to every
    generation so that served heads and filters carry across reloads.

    Raises:
        ValueError: when ``default_profile`` names no profile of ``profiles``.
    """

    def __init__(
        self,
        profiles: Mapping[str, ProfileConfig],
        *,
        pools: PoolRegistry,
        breakers: BreakerRegistry,
        rng: random.Random,
        generation: int = 1,
        default_profile: str | None = None,
        events: EventBus | None = None,
        consistency: NodeConsistency | None = None,
    ) -> None:
        self.events = events if events is not None else EventBus("local")
        self.consistency = consistency if consistency is not None else NodeConsistency()
        self.generation = generation
        self.default_profile = default_profile_slug(profiles.keys(), default_profile)
        self.profiles: dict[str, ProfileRuntime] = {}
        self.instance_keys: set[str] = set()
        for slug, profile in profiles.items():
            chains: dict[str, ChainRuntime] = {}
            for key, chain in profile.chains.items():
                state = self.consistency.chain(slug, key)
                router = ChainRouter(chain, breakers, rng, profile=slug, head=state.head)
                chain_pools: dict[str, HttpUpstreamPool] = {}
                for provider in chain.providers:
                    pool = pools.get(provider)
                    if pool is not None:
                        chain_pools[provider.id] = pool
                        self.instance_keys.add(instance_key(provider))
                chains[key] = ChainRuntime(slug, chain, router, chain_pools, self.events, state)
            self.profiles[slug] = ProfileRuntime(profile, chains)
        self.consistency.retain(
            (slug, key) for slug, profile in profiles.items() for key in profile.chains
        )

    def profile(self, slug: str | None) -> ProfileRuntime | None:
        """The profile ``slug`` (an alias works), or the default one for ``None``; ``None``
        when there is no such profile (see :meth:`profile_not_found`)."""
        if not slug:
            slug = self.default_profile
            if slug is None:
                return None
        slug = PROFILE_ALIASES.get(slug, slug)
        return self.profiles.get(slug)

    def profile_not_found(self, slug: str | None) -> str:
        """The message for a route whose profile (``None``: the default) does not exist."""
        if slug:
            return f"Profile '{slug}' not found"
        if self.default_profile is not None:
            return f"Profile '{self.default_profile}' not found"
        return (
            "No default profile: this node serves several profiles and none is 'public'; "
            "use /rpc/profile/<slug>/... or set LASSO_DEFAULT_PROFILE"
        )

    def chains(self) -> list[ChainRuntime]:
        return [c for p in self.profiles.values() for c in p.chains.values()]

    def __repr__(self) -> str:
        n = sum(len(p.chains) for p in self.profiles.values())
        return f"<Runtime gen={self.generation} profiles={len(self.profiles)} chains={n}>"
