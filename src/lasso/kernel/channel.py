"""Channels and their shared circuit breakers: who an upstream is, and where its breaker lives.

A :class:`Channel` is one (provider, transport) of one router: its circuit breaker, its
evidence, its per-method rows and the capability fields the router's filters read. The
breaker comes from a :class:`BreakerRegistry` keyed by :func:`breaker_key`: the
normalized upstream URL (:func:`normalize_url`), scoped by a fingerprint of the provider's
auth headers and, for ``sharing_mode: isolated``, by the profile. So every profile that
points at the same upstream with the same credentials shares one breaker (reference §4),
while evidence and method rows stay per router (one per profile and chain).

:class:`~lasso.kernel.router.ChainRouter` builds the channels and owns their selection and
recording; this module holds no routing decisions.
"""

from __future__ import annotations

from collections.abc import Iterator
from hashlib import sha256
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from lasso.config import ProviderConfig

from .breaker import BreakerConfig, CircuitBreaker
from .clock import Rng
from .faults import ChannelHealth, Fault
from .stats import ChannelEvidence, MethodStats

__all__ = [
    "DEFAULT_BLOCK_AGE_METHODS",
    "PROBE_STATUSES",
    "BreakerRegistry",
    "Channel",
    "Transport",
    "breaker_key",
    "normalize_url",
]

Transport = Literal["http", "ws"]

DEFAULT_BLOCK_AGE_METHODS: frozenset[str] = frozenset(
    {
        "eth_call",
        "eth_getBalance",
        "eth_getCode",
        "eth_getTransactionCount",
        "eth_getStorageAt",
        "eth_getProof",
    }
)
"""Methods a provider's ``max_block_age`` applies to when ``block_age_methods`` is empty."""

PROBE_STATUSES = ("unknown", "healthy", "degraded", "unhealthy", "rate_limited", "misconfigured")
"""Values of :attr:`Channel.probe_status`, set by the health prober (``lasso.probes``)."""


def normalize_url(url: str) -> str:
    """The breaker key of an upstream URL: scheme and host lower-cased, default port and
    trailing slash dropped, path and query kept (they may select a key or a network).

    The result may embed credentials: use it as a key, never as a metric label or log field.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    if port is not None and not (
        (port == 443 and scheme in ("https", "wss")) or (port == 80 and scheme in ("http", "ws"))
    ):
        host = f"{host}:{port}"
    if parts.username or parts.password:
        host = f"{parts.username or ''}:{parts.password or ''}@{host}"
    path = parts.path.rstrip("/")
    return urlunsplit((scheme, host, path, parts.query, ""))


def breaker_key(provider: ProviderConfig, url: str, profile: str) -> str:
    """The :class:`BreakerRegistry` key of ``provider``'s upstream at ``url`` (its ``url``
    or ``ws_url``) as configured in ``profile``.

    Breakers are shared by every profile naming the same upstream URL, unless the provider
    asks for isolation: then the key is scoped to the profile. The auth headers are part of
    the identity too: two API keys on one URL are two quotas, and one key's auth errors must
    not open the other's circuit (only a digest of them enters the key).

    Like :func:`normalize_url`, the result may embed credentials: a key, never a label.
    """
    scope = f"{profile}|" if provider.sharing_mode == "isolated" else ""
    if provider.headers:
        auth = "\n".join(f"{k}:{v}" for k, v in sorted(provider.headers.items()))
        scope += sha256(auth.encode()).hexdigest()[:16] + "|"
    return scope + normalize_url(url)


class BreakerRegistry:
    """Circuit breakers keyed by (:func:`breaker_key`, transport), shared by profiles,
    and beside each the upstream's :class:`~lasso.kernel.faults.ChannelHealth` (last
    error and connection state), shared the same way and kept across reloads too.

    Args:
        config: the breaker configuration every breaker gets.
        rng: randomness for the recovery jitter.
    """

    __slots__ = ("_breakers", "_config", "_health", "_rng")

    def __init__(self, config: BreakerConfig, rng: Rng) -> None:
        self._config = config
        self._rng = rng
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._health: dict[tuple[str, str], ChannelHealth] = {}

    def get(self, instance_key: str, transport: str) -> CircuitBreaker:
        """The breaker of ``(instance_key, transport)``, created closed on first use.
        ``instance_key`` should come from :func:`breaker_key` (or :func:`normalize_url`)."""
        key = (instance_key, transport)
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = CircuitBreaker(self._config, self._rng)
        return breaker

    def health(self, instance_key: str, transport: str) -> ChannelHealth:
        """The :class:`ChannelHealth` of ``(instance_key, transport)``, created on first use
        (same keys as :meth:`get`)."""
        key = (instance_key, transport)
        health = self._health.get(key)
        if health is None:
            health = self._health[key] = ChannelHealth()
        return health

    def __iter__(self) -> Iterator[tuple[tuple[str, str], CircuitBreaker]]:
        return iter(list(self._breakers.items()))

    def __len__(self) -> int:
        return len(self._breakers)

    def __repr__(self) -> str:
        # No keys: they are URLs that may carry API keys.
        return f"<BreakerRegistry breakers={len(self._breakers)}>"


class Channel:
    """One (provider, transport): its shared breaker, its evidence and its method rows.

    ``connected`` is the routing flag: always true for HTTP (a pool connects on demand);
    the WebSocket module flips it for WS channels. ``health`` is the upstream's last error
    and connection state (:class:`~lasso.kernel.faults.ChannelHealth`), what the API and
    logs report; shared with every channel on the same breaker.
    ``config_fault`` (with ``config_fault_at``, monotonic seconds) is this channel's own:
    a verdict about the pairing of this chain and this provider rather than about the
    upstream (the endpoint serves another chain id). While it is set the channel is never
    a candidate; the shared breaker and health are left alone, so the other chains and
    profiles on the same upstream keep using it.
    The underscored slots belong to :class:`~lasso.kernel.router.ChainRouter`: capability
    fields precomputed here so its per-request filters read plain attributes. Nothing
    here is written per request (channels are shared by concurrent requests).
    """

    __slots__ = (
        "_block_age_methods",
        "_has_caps",
        "_has_limits",
        "_max_block_age",
        "_max_block_range",
        "_unsupported_categories",
        "_unsupported_methods",
        "archival",
        "breaker",
        "config_fault",
        "config_fault_at",
        "connected",
        "evidence",
        "health",
        "key",
        "methods",
        "priority",
        "probe_status",
        "provider",
        "provider_id",
        "transport",
    )

    def __init__(
        self,
        provider: ProviderConfig,
        transport: Transport,
        breaker: CircuitBreaker,
        health: ChannelHealth | None = None,
    ) -> None:
        self.provider = provider
        self.provider_id = provider.id
        self.priority = provider.priority
        self.archival = provider.archival
        self.transport: Transport = transport
        self.key = f"{provider.id}:{transport}"
        self.breaker = breaker
        self.health = health if health is not None else ChannelHealth()
        self.evidence = ChannelEvidence()
        self.methods: dict[str, MethodStats] = {}
        self.connected = transport == "http"
        self.config_fault: Fault | None = None
        self.config_fault_at: float | None = None
        # What the health prober last concluded (one of PROBE_STATUSES); display only:
        # routing reads the breaker and the rate-limit expiry the prober feeds.
        self.probe_status = "unknown"
        caps = provider.capabilities
        self._unsupported_methods = caps.unsupported_methods
        self._unsupported_categories = caps.unsupported_categories
        self._has_caps = bool(caps.unsupported_methods or caps.unsupported_categories)
        lim = caps.limits
        self._max_block_range = lim.max_block_range
        self._max_block_age = lim.max_block_age
        self._block_age_methods = (
            frozenset(lim.block_age_methods) if lim.block_age_methods else DEFAULT_BLOCK_AGE_METHODS
        )
        self._has_limits = lim.max_block_range is not None or lim.max_block_age is not None

    def supports(self, method: str, category: str | None) -> bool:
        """False when the provider's capabilities list ``method`` or its category."""
        if not self._has_caps:
            return True
        return method not in self._unsupported_methods and (
            category is None or category not in self._unsupported_categories
        )

    def __repr__(self) -> str:
        ev = self.evidence
        return (
            f"<Channel {self.key} connected={self.connected} breaker={self.breaker!r} "
            f"ewma={ev.ewma_ms:.1f}ms ok={ev.usable_successes} fail={ev.total_failures} "
            f"methods={len(self.methods)}>"
        )
