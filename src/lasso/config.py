"""Frozen configuration values: profiles, chains, providers and their capabilities.

These are plain values with no IO. :mod:`lasso.profiles` reads YAML files into them and
validates every key (file, line and key path for each problem).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

STRATEGIES = ("load-balanced", "fastest", "latency-weighted", "priority")
"""Canonical strategy names. ``round-robin`` is accepted as an alias of load-balanced."""

STRATEGY_ALIASES = {
    "round-robin": "load-balanced",
    "load_balanced": "load-balanced",
    "latency_weighted": "latency-weighted",
}

DEFAULT_PROFILE = "public"
PROFILE_ALIASES = {"default": "public"}
DEMO_PROFILE = "demo"
"""The shipped simulator profile: ``lasso serve`` skips it unless asked (see the CLI)."""

_EMPTY: Mapping[str, str] = MappingProxyType({})


def default_profile_slug(slugs: Collection[str], requested: str | None = None) -> str | None:
    """The profile that routes without ``/profile/<slug>`` use (CONTRACT §3).

    ``requested`` (``LASSO_DEFAULT_PROFILE``, ``--default-profile`` or the code's choice)
    when given, else ``public``, else the only profile there is; ``None`` when there are
    several and none of them is ``public`` (plain routes then say so).

    Raises:
        ValueError: when ``requested`` names no loaded profile.
    """
    if requested:
        slug = PROFILE_ALIASES.get(requested, requested)
        if slug not in slugs:
            available = ", ".join(sorted(slugs)) or "none"
            raise ValueError(
                f"the default profile {requested!r} is not loaded (profiles: {available})"
            )
        return slug
    if DEFAULT_PROFILE in slugs:
        return DEFAULT_PROFILE
    if len(slugs) == 1:
        return next(iter(slugs))
    return None


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


GET_LOGS_MAX_RANGE = 100_000
"""Default ``routing.get_logs.max_range``: the widest ``eth_getLogs`` range one request asks."""
GET_LOGS_MAX_PARALLEL = 4
"""Default ``routing.get_logs.max_parallel``: chunks of one split request in flight."""
MAX_GET_LOGS_PARALLEL = 32
MAX_BROADCAST = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class GetLogsConfig:
    """``routing.get_logs`` (CONTRACT §8): splitting bounds of ``eth_getLogs``."""

    max_range: int = GET_LOGS_MAX_RANGE  # wider requests: -32602 with data.max_range
    max_parallel: int = GET_LOGS_MAX_PARALLEL  # 1..MAX_GET_LOGS_PARALLEL


@dataclass(frozen=True, slots=True, kw_only=True)
class HedgeConfig:
    """``routing.hedge`` (CONTRACT §7): race a second provider when the first is slow.

    Exactly one of ``delay_ms`` (a fixed delay) and ``quantile`` (that latency quantile of
    the first provider's recent answers to the method, clamped to ``min_delay_ms`` ..
    ``max_delay_ms``) is set. ``max_hedges`` extra attempts at most per request (1 or 2: a
    read is sent to at most three providers); hedges never exceed ``budget_percent`` of
    the chain's requests over a sliding minute. :mod:`lasso.profiles` validates all this.
    """

    delay_ms: float | None = None
    quantile: float | None = None
    min_delay_ms: float = 20.0
    max_delay_ms: float = 2000.0
    max_hedges: int = 1
    budget_percent: float = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class MethodOverride:
    strategy: str | None = None
    providers: tuple[str, ...] = ()  # when set, only these providers, in this order
    # None: the chain's hedge setting; False: never hedge this method (``hedge: false``)
    hedge: HedgeConfig | Literal[False] | None = None


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
    get_logs: GetLogsConfig = field(default_factory=GetLogsConfig)
    broadcast: int = 1  # routing.broadcast: providers an eth_sendRawTransaction goes to at once
    hedge: HedgeConfig | None = None  # routing.hedge; None: no hedging
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
class RateLimit:
    """A token bucket: ``rps`` tokens per second, at most ``burst`` saved up."""

    rps: int
    burst: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MethodRules:
    """Method scope: glob patterns (``eth_*``); a method must match ``allow`` (when it is
    not empty) and no pattern of ``deny``."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKeyConfig:
    """One client key of a profile (``auth.keys[]``). Only the key's SHA-256 is kept."""

    id: str  # names the key in metrics, logs and the dashboard
    key_sha256: bytes = field(repr=False)  # 32-byte digest of the secret
    limit: RateLimit | None = None  # None: the profile's limit
    chains: frozenset[str] | None = None  # chain keys; None: every chain
    methods: MethodRules | None = None
    allow_ips: tuple[str, ...] = ()  # CIDRs; empty: the profile's rule
    max_subscriptions: int | None = None  # None: the profile's (auth.max_subscriptions)


@dataclass(frozen=True, slots=True, kw_only=True)
class JwtConfig:
    """Bearer JWTs (``auth.jwt``): one verification key, pinned algorithms."""

    id: str = "jwt"  # names JWT clients in metrics and the dashboard
    secret: str | None = field(default=None, repr=False)  # HS* key
    public_key: str | None = field(default=None, repr=False)  # PEM, RS*/ES*
    algorithms: tuple[str, ...] = ()
    issuer: str | None = None
    audience: str | None = None
    leeway_s: int = 30
    claim: str = "lasso"  # the claim that may narrow chains, methods and limits
    limit: RateLimit | None = None
    chains: frozenset[str] | None = None
    methods: MethodRules | None = None
    max_subscriptions: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthConfig:
    """Client authentication of a profile (front matter ``auth:``, docs/security.md)."""

    required: bool = False  # refuse requests without a valid key or token
    keys: tuple[ApiKeyConfig, ...] = ()
    jwt: JwtConfig | None = None
    allow_ips: tuple[str, ...] = ()  # CIDRs; empty: every address
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-For is believed
    max_subscriptions: int | None = None  # per client (key, token subject, else IP)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileConfig:
    slug: str
    name: str
    rps_limit: int | None = None  # per client (key, else IP); None: unlimited
    burst_limit: int | None = None  # None: equal to rps_limit
    chains: Mapping[str, ChainConfig] = field(default_factory=lambda: MappingProxyType({}))
    source: str = "<memory>"
    logo: str | None = None
    unlisted: bool = False  # hidden from profile listings, still routable
    auth: AuthConfig | None = None  # None: anyone may call (limited by rps_limit if set)

    @property
    def limit(self) -> RateLimit | None:
        """The per-client default limit, or ``None`` when the profile sets none."""
        if self.rps_limit is None:
            return None
        burst = self.burst_limit if self.burst_limit is not None else self.rps_limit
        return RateLimit(rps=self.rps_limit, burst=burst)

    @property
    def gated(self) -> bool:
        """Whether requests to this profile go through client checks at all."""
        return self.auth is not None or self.rps_limit is not None

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
