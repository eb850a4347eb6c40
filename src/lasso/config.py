"""Frozen configuration values: profiles, chains, providers and their capabilities.

These are plain values with no IO. :mod:`lasso.profiles` reads YAML files into them and
validates every key (file, line and key path for each problem).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

STRATEGIES = ("load-balanced", "fastest", "latency-weighted", "priority")
"""Canonical strategy names. ``round-robin`` is accepted as an alias of load-balanced."""

STRATEGY_ALIASES = {
    "round-robin": "load-balanced",
    "load_balanced": "load-balanced",
    "latency_weighted": "latency-weighted",
}

DEFAULT_PROFILE = "public"
PROFILE_ALIASES = {"default": "public"}

_EMPTY: Mapping[str, str] = MappingProxyType({})


def canonical_strategy(name: str) -> str | None:
    """Return the canonical strategy name for ``name``, or ``None`` if it is unknown."""
    name = STRATEGY_ALIASES.get(name, name)
    return name if name in STRATEGIES else None


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorRule:
    """Provider-specific error classification: first matching rule wins."""

    code: int | None = None
    message_contains: tuple[str, ...] = ()  # lower-cased; any of them matches
    category: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    max_block_range: int | None = None
    max_block_age: int | None = None
    block_age_methods: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    unsupported_categories: frozenset[str] = frozenset()
    unsupported_methods: frozenset[str] = frozenset()
    limits: Limits = field(default_factory=Limits)
    error_rules: tuple[ErrorRule, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderConfig:
    id: str
    name: str
    url: str | None = None
    ws_url: str | None = None
    priority: int = 100
    archival: bool = True
    subscribe_new_heads: bool | None = None  # None inherits the chain's setting
    headers: Mapping[str, str] = field(
        default_factory=lambda: _EMPTY
    )  # lower-cased names; api_key becomes authorization
    capabilities: Capabilities = field(default_factory=Capabilities)
    sharing_mode: str = "auto"  # "isolated": never share upstream state across profiles


@dataclass(frozen=True, slots=True, kw_only=True)
class MethodOverride:
    strategy: str | None = None
    providers: tuple[str, ...] = ()  # when set, only these providers, in this order


DEFAULT_CACHE_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_FINALITY_DEPTH = 64
DEFAULT_REALTIME_TTL_MS = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheConfig:
    """A chain's response cache (CONTRACT §7, docs/caching.md).

    ``realtime_ttl_ms`` ``None`` means the default: half the chain's ``block_time_ms``
    when it is configured, else :data:`DEFAULT_REALTIME_TTL_MS`
    (:meth:`realtime_ttl_s` computes it). 0 turns caching of head answers off.
    """

    enabled: bool = True
    max_bytes: int = DEFAULT_CACHE_MAX_BYTES
    finality_depth: int = DEFAULT_FINALITY_DEPTH
    realtime_ttl_ms: int | None = None

    def realtime_ttl_s(self, block_time_ms: int | None) -> float:
        """The longest a head answer is served, in seconds."""
        if self.realtime_ttl_ms is not None:
            return self.realtime_ttl_ms / 1000.0
        if block_time_ms:
            return block_time_ms / 2000.0
        return DEFAULT_REALTIME_TTL_MS / 1000.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainConfig:
    key: str
    chain_id: int
    name: str
    aliases: tuple[str, ...] = ()
    block_time_ms: int | None = None
    probe_interval_ms: int = 12_000
    recovery_probe_interval_ms: int = 2_000  # probes of an open circuit (>= 100 in YAML)
    lag_alert_threshold_blocks: int = 3
    max_lag_blocks: int | None = None
    archival_threshold: int = 128
    subscribe_new_heads: bool = True
    new_heads_timeout_ms: int = 42_000
    max_backfill_blocks: int = 100
    backfill_timeout_ms: int = 30_000
    default_strategy: str = "load-balanced"
    latency_weighted_beta: float = 3.0
    method_overrides: Mapping[str, MethodOverride] = field(
        default_factory=lambda: MappingProxyType({})
    )
    providers: tuple[ProviderConfig, ...] = ()
    coalesce: bool = True  # routing.coalesce: identical reads in flight share one call
    cache: CacheConfig = field(default_factory=CacheConfig)

    def provider(self, provider_id: str) -> ProviderConfig | None:
        for p in self.providers:
            if p.id == provider_id:
                return p
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileConfig:
    slug: str
    name: str
    rps_limit: int = 100
    burst_limit: int = 500
    chains: Mapping[str, ChainConfig] = field(default_factory=lambda: MappingProxyType({}))
    source: str = "<memory>"
    logo: str | None = None
    unlisted: bool = False  # hidden from profile listings, still routable
    api_keys: tuple[str, ...] = ()  # inbound API keys (front matter); not enforced yet

    def resolve_chain(self, ident: str) -> ChainConfig | None:
        """Find a chain by key, alias or decimal chain id."""
        chain = self.chains.get(ident)
        if chain is not None:
            return chain
        if ident.isdigit():
            cid = int(ident)
            for c in self.chains.values():
                if c.chain_id == cid:
                    return c
        for c in self.chains.values():
            if ident in c.aliases:
                return c
        return None
