"""The routing facade: which channels may serve a request, in which order, and what we learn.

The pipeline calls, per request::

    for ch in router.candidates(method, params, strategy, now):   # filtered, ordered, tiered
        if not router.admit(ch, now):                            # breaker admission
            continue
        ...dispatch...
        transition = router.record_success(ch, method, latency_s, now)   # or record_failure

A :class:`~.channel.Channel` is one (provider, transport). Its circuit breaker comes from a
:class:`~.channel.BreakerRegistry` keyed by the upstream's normalized URL, a digest of its
auth headers and the transport, so every profile that points at the same upstream with the
same credentials shares one breaker (reference §4), unless the provider is ``isolated``;
its evidence and per-method rows belong to this router (one per profile and chain).
Channels, the registry and the breaker keys live in :mod:`.channel`; the read-only views
(:meth:`ChainRouter.provider_status`, :meth:`ChainRouter.snapshot`) in :mod:`.status`.

Filters of :meth:`ChainRouter.candidates`, in order (reference §2.2, with the decisions
noted):

1. provider override (only that provider), else a ``method_overrides`` allow-list;
2. transport present and connected (WS channels start disconnected), and no standing
   configuration fault on the channel (:attr:`~.channel.Channel.config_fault`: the
   provider serves another chain);
3. exclude list; open circuits dropped;
4. lag (when ``max_lag_blocks`` is set and a consensus exists): a provider more than
   ``max_lag_blocks`` behind is dropped. *Decision (§14.13):* when that would drop every
   provider, the least-lagging ones (within ``max_lag_blocks`` of the best) come back: a
   slightly stale answer beats a guaranteed error, and a bogus consensus (one provider
   reporting a wrong head) must not take the whole chain down;
5. method capability (``unsupported_methods`` / ``unsupported_categories``): unsupporting
   channels are used only when no channel supports the method (fail-open);
6. parameter limits (``max_block_range`` for ``eth_getLogs``, ``max_block_age`` for the
   ``block_age_methods``): violating channels are used only if every channel violates
   (fail-open, §2.1 step 5.2);
7. archival: a request reading ``earliest``, a block older than ``consensus -
   archival_threshold``, or a numeric block while the consensus is unknown, puts
   ``archival: false`` providers last instead of dropping them (they may still hold the
   block; the pipeline fails over on ``requires_archival``);
8. min-block preference: providers whose optimistic height is below the highest block
   requested (or the caller's ``min_block``: the served head for a ``latest`` read) are
   ordered after those that have it. *Decision:* this outranks the health
   tier, because a provider without the block usually answers ``null``, a wrong success
   the pipeline cannot fail over from, whereas a lower tier costs at most a retry.

Then the strategy orders the survivors (:mod:`.selection`), the tiers of §2.3 are applied
by a stable sort (:func:`.tiering.tier` gives each channel's tier), and the list is cut
to :data:`MAX_CANDIDATES`.
"""

from __future__ import annotations

from collections.abc import Collection

from lasso.config import STRATEGY_ALIASES, ChainConfig

from .breaker import BreakerState, Transition
from .chainstate import ChainState
from .channel import (
    PROBE_STATUSES,
    BreakerRegistry,
    Channel,
    Transport,
    breaker_key,
    normalize_url,
)
from .classify import Bucket, Category, bucket_of
from .clock import Rng
from .faults import Fault
from .head import HeadTracker
from .methods import (
    KNOWN_METHODS,
    BlockRef,
    block_params,
    is_replay_safe,
    logs_block_range,
    method_category,
)
from .selection import EXPLORE_P, order
from .stats import MethodStats
from .status import PROVIDER_STATUSES, chain_snapshot, provider_status
from .tiering import tier

# Channel, BreakerRegistry, normalize_url and the status words live in .channel and
# .status; they are re-exported because the adapters meet them through the router.
__all__ = [
    "MAX_CANDIDATES",
    "MAX_METHOD_ROWS",
    "PROBE_STATUSES",
    "PROVIDER_STATUSES",
    "BreakerRegistry",
    "ChainRouter",
    "Channel",
    "Transition",
    "Transport",
    "normalize_url",
]

MAX_CANDIDATES = 10
MAX_METHOD_ROWS = 256
"""Per-method rows kept per channel; past it, methods outside the registry share
:data:`OTHER_METHOD`, so clients sending made-up method names cannot grow memory."""
OTHER_METHOD = "other"

_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_LINK_UP = "up"
_BUCKET: dict[str, Bucket] = {c.value: bucket_of(c) for c in Category}


class ChainRouter:
    """Candidate selection and outcome recording for one chain of one profile.

    Args:
        chain: the chain's configuration.
        breakers: the process-wide breaker registry.
        rng: randomness for the strategies.
        profile: the profile slug, for snapshots and ``repr``.
    """

    __slots__ = (
        "_any_caps",
        "_any_limits",
        "_archival_threshold",
        "_beta",
        "_by_provider",
        "_channels",
        "_last_now",
        "_max_lag",
        "_overrides",
        "_priority_pool",
        "_rng",
        "chain",
        "head",
        "profile",
        "state",
    )

    def __init__(
        self,
        chain: ChainConfig,
        breakers: BreakerRegistry,
        rng: Rng,
        *,
        profile: str,
        head: HeadTracker | None = None,
    ) -> None:
        self.chain = chain
        self.profile = profile
        self._rng = rng
        self.state = ChainState(chain.block_time_ms)
        # What eth_blockNumber and tags have been served at; given when it must outlive
        # this router (a reload builds new routers, the served head carries on).
        self.head = head if head is not None else HeadTracker()
        channels: list[Channel] = []
        by_provider: dict[str, list[Channel]] = {}
        for p in chain.providers:
            # Shared by profiles per URL and auth headers, or isolated: see breaker_key.
            mine = by_provider.setdefault(p.id, [])
            if p.url:
                key = breaker_key(p, p.url, profile)
                mine.append(
                    Channel(p, "http", breakers.get(key, "http"), breakers.health(key, "http"))
                )
            if p.ws_url:
                key = breaker_key(p, p.ws_url, profile)
                mine.append(Channel(p, "ws", breakers.get(key, "ws"), breakers.health(key, "ws")))
            channels.extend(mine)
        self._channels = channels
        self._priority_pool = order("priority", channels, None, 0.0, _NO_RNG)
        self._by_provider = by_provider
        self._any_limits = any(ch._has_limits for ch in channels)
        self._any_caps = any(ch._has_caps for ch in channels)
        self._max_lag = chain.max_lag_blocks
        self._archival_threshold = chain.archival_threshold
        self._beta = chain.latency_weighted_beta
        # method -> (strategy or None, allowed channels in the listed order or None)
        self._overrides: dict[str, tuple[str | None, list[Channel] | None]] = {}
        for m, ov in chain.method_overrides.items():
            strat = STRATEGY_ALIASES.get(ov.strategy, ov.strategy) if ov.strategy else None
            allowed = (
                [ch for pid in ov.providers for ch in by_provider.get(pid, ())]
                if ov.providers
                else None
            )
            self._overrides[m] = (strat, allowed)
        self._last_now = 0.0

    # -- lookups ------------------------------------------------------------------------

    @property
    def channels(self) -> tuple[Channel, ...]:
        """Every configured channel, in configuration order (HTTP before WS per provider)."""
        return tuple(self._channels)

    def channel(self, provider_id: str, transport: Transport) -> Channel | None:
        for ch in self._by_provider.get(provider_id, ()):
            if ch.transport == transport:
                return ch
        return None

    def set_connected(self, provider_id: str, connected: bool) -> None:
        """Mark the provider's WS channel live or not (no-op without one)."""
        ch = self.channel(provider_id, "ws")
        if ch is not None:
            ch.connected = connected

    # -- selection ----------------------------------------------------------------------

    def candidates(
        self,
        method: str,
        params: object,
        strategy: str,
        now: float,
        *,
        provider_id: str | None = None,
        exclude: Collection[str] = (),
        min_block: int | None = None,
    ) -> list[Channel]:
        """The channels to try for one request, best first, at most :data:`MAX_CANDIDATES`.

        Args:
            method: the JSON-RPC method.
            params: its params (list, dict or ``None``); read for block references.
            strategy: the route's strategy; a ``method_overrides`` strategy replaces it.
            now: monotonic seconds.
            provider_id: a client's provider override: only that provider's channels.
            exclude: provider ids to skip (after ``method_not_found`` and the like).
            min_block: a block the answer must come from at least (a ``latest`` read
                after a served head): providers not known to have it go last.

        Returns:
            A new list, possibly empty: the caller then answers ``-32000`` with
            :meth:`retry_after`. Each channel still needs :meth:`admit` before dispatch.

        Raises:
            ValueError: for an unknown strategy.
        """
        self._last_now = now
        # Rank of each channel ordered after the healthy ones: its tier (§2.3) plus the
        # preference classes of step 3. Absent means 1 (closed, not rate-limited), so a
        # healthy chain never fills it. Local to this call: channels are shared objects.
        ranks: dict[Channel, int] = {}
        pool = self._channels
        presorted = False  # True: the pool's order is final, the strategy is skipped
        if provider_id is not None or self._overrides:
            strategy, pool, presorted = self._pinned_pool(method, strategy, provider_id)
        if strategy == "priority" and pool is self._channels:
            pool = self._priority_pool  # filtering keeps the order: no sort per request
            presorted = True
        # 1. hard filters: connected, not excluded, circuit not open, not lagging. Inline:
        # this loop runs for every request, and a method call here costs ~4 % of it.
        max_lag = self._max_lag
        lagging = self.state.lagging(now, max_lag) if max_lag is not None else None
        alive: list[Channel] = []
        skipped: list[Channel] | None = None
        for ch in pool:
            if not ch.connected or ch.config_fault is not None:
                continue
            if exclude and ch.provider_id in exclude:
                continue
            s = ch.breaker.state(now)
            if s is _OPEN:
                continue
            limited = ch.evidence.rate_limited_until > now
            if limited or s is not _CLOSED:
                ranks[ch] = tier(s, limited)
            if lagging and ch.provider_id in lagging:
                if skipped is None:
                    skipped = []
                skipped.append(ch)
                continue
            alive.append(ch)
        if not alive and skipped and lagging is not None:
            alive = _least_lagging(skipped, lagging, max_lag or 0)
        if self._any_caps and len(alive) > 1:
            alive = self._capable(alive, method)  # 2. capability
        refs = block_params(method, params)
        if (refs or min_block is not None) and alive:  # 3. blocks
            alive = self._block_fit(alive, method, params, refs, now, ranks, min_block)
        if presorted or len(alive) < 2:  # 4. the strategy's order
            ordered = alive  # a fresh list already
        elif strategy == "fastest" or strategy == "latency-weighted":
            explore = EXPLORE_P if is_replay_safe(method) else 0.0
            ordered = order(
                strategy,
                alive,
                lambda ch: ch.methods.get(method),
                now,
                self._rng,
                self._beta,
                explore=explore,
            )
        else:
            ordered = order(strategy, alive, None, now, self._rng, self._beta)
        if ranks:  # 5. tiers: a stable sort keeps the strategy's order per rank
            ordered.sort(key=lambda ch: ranks.get(ch, 1))
        if len(ordered) > MAX_CANDIDATES:
            del ordered[MAX_CANDIDATES:]
        return ordered

    def _pinned_pool(
        self, method: str, strategy: str, provider_id: str | None
    ) -> tuple[str, list[Channel], bool]:
        """The pool of a provider override, else of a ``method_overrides`` entry: the
        channels, the strategy ordering them, and whether their order is already final."""
        pool = self._channels
        presorted = False
        ov = self._overrides.get(method) if self._overrides else None
        if ov is not None:
            if ov[0] is not None:
                strategy = ov[0]
            if ov[1] is not None and provider_id is None:
                pool = ov[1]
                presorted = ov[0] is None  # listed providers without a strategy: that order
        if provider_id is not None:
            pool = self._by_provider.get(provider_id, [])
        return strategy, pool, presorted

    @staticmethod
    def _capable(alive: list[Channel], method: str) -> list[Channel]:
        """Step 2: unsupporting channels only when nothing supports the method."""
        category = method_category(method)
        supported = [ch for ch in alive if ch.supports(method, category)]
        return supported or alive

    def _block_fit(
        self,
        alive: list[Channel],
        method: str,
        params: object,
        refs: list[BlockRef],
        now: float,
        ranks: dict[Channel, int],
        min_block: int | None = None,
    ) -> list[Channel]:
        """Step 3, the blocks a request reads: parameter limits drop violators (unless all
        violate); a need for archival data and a block above a provider's height (or
        ``min_block``) demote."""
        state = self.state
        cons = state.consensus(now)
        need_archival = False
        highest = -1 if min_block is None else min_block
        oldest: int | None = None
        for r in refs:
            if type(r) is int:
                if cons is None or r < cons - self._archival_threshold:
                    need_archival = True
                if r > highest:
                    highest = r
                if oldest is None or r < oldest:
                    oldest = r
            elif r == "earliest":
                need_archival = True
                oldest = 0
        if self._any_limits:
            alive = self._apply_limits(alive, method, params, cons, oldest)
        if need_archival or highest >= 0:
            for ch in alive:
                if need_archival and not ch.archival:
                    ranks[ch] = ranks.get(ch, 1) + 200
                if highest >= 0 and not state.has_block(ch.provider_id, highest, now):
                    ranks[ch] = ranks.get(ch, 1) + 100
        return alive

    def _apply_limits(
        self,
        alive: list[Channel],
        method: str,
        params: object,
        cons: int | None,
        oldest: int | None,
    ) -> list[Channel]:
        """Drop channels whose capability limits the request violates, unless all do."""
        span: int | None = None
        if method == "eth_getLogs":
            bounds = logs_block_range(params)
            if bounds is not None:
                lo = _resolve(bounds[0], cons)
                hi = _resolve(bounds[1], cons)
                if lo is not None and hi is not None:
                    span = hi - lo + 1  # blocks scanned, both bounds included
        age = None if cons is None or oldest is None else cons - oldest
        if span is None and age is None:
            return alive
        ok: list[Channel] = []
        for ch in alive:
            if ch._has_limits:
                mbr = ch._max_block_range
                if span is not None and mbr is not None and span > mbr:
                    continue
                mba = ch._max_block_age
                if (
                    age is not None
                    and mba is not None
                    and age > mba
                    and method in ch._block_age_methods
                ):
                    continue
            ok.append(ch)
        return ok or alive

    def admit(self, channel: Channel, now: float) -> bool:
        """Breaker admission: false skips the channel (not an attempt, nothing recorded).
        In half-open a true answer holds the probe slot until a ``record_*`` call."""
        return channel.breaker.admit(now)

    def retry_after(self, now: float) -> float | None:
        """The smallest remaining open-circuit time among this chain's channels, in seconds
        (for ``data.retry_after_ms`` of the ``-32000`` no-channel error); ``None`` when no
        circuit is open."""
        best: float | None = None
        for ch in self._channels:
            ra = ch.breaker.retry_after(now)
            if ra is not None and (best is None or ra < best):
                best = ra
        return best

    # -- recording ----------------------------------------------------------------------

    def _row(self, channel: Channel, method: str) -> MethodStats:
        rows = channel.methods
        row = rows.get(method)
        if row is None:
            if len(rows) >= MAX_METHOD_ROWS and method not in KNOWN_METHODS:
                method = OTHER_METHOD
                row = rows.get(method)
            if row is None:
                row = rows[method] = MethodStats()
        return row

    def record_success(
        self, channel: Channel, method: str, latency_s: float, now: float
    ) -> Transition | None:
        """A usable result after ``latency_s`` of attempt-local time.

        Returns:
            The breaker transition, if the success caused one (half-open → closed).
        """
        ms = latency_s * 1000.0
        channel.evidence.record_success(ms, now)
        self._row(channel, method).record_success(ms, now)
        health = channel.health
        if health.link != _LINK_UP:
            health.reached(now)
        return channel.breaker.on_success(now)

    def record_failure(
        self,
        channel: Channel,
        method: str,
        category: str,
        latency_s: float | None,
        now: float,
        retry_after_s: float | None = None,
        fault: Fault | None = None,
    ) -> Transition | None:
        """A dispatched attempt that failed with ``category`` (a :class:`Category` value).

        By bucket (reference §2.5): quota sets the channel's rate-limit expiry (default
        30 s) and is neutral for the breaker; provider failures degrade the evidence and go
        to the breaker; capability and deterministic errors are neutral but counted in the
        method row. Unknown category strings count as provider failures.

        Quota and provider failures also become the channel's last error
        (:attr:`Channel.health`): ``fault`` as the adapter describes it (cause, message),
        else one named after the category. The caller's own errors never do.

        Returns:
            The breaker transition, if any (closed → open, half-open → open).
        """
        bucket = _BUCKET.get(category, Bucket.PROVIDER_FAILURE)
        ms = None if latency_s is None else latency_s * 1000.0
        row = self._row(channel, method)
        if bucket is Bucket.QUOTA or bucket is Bucket.PROVIDER_FAILURE:
            channel.health.fault(fault if fault is not None else _fault_of(category), now)
        if bucket is Bucket.QUOTA:
            channel.evidence.record_rate_limit(now, retry_after_s)
            row.record_outcome("rate_limited", now, ms)
            return channel.breaker.on_neutral(now)
        if bucket is Bucket.PROVIDER_FAILURE:
            channel.evidence.record_failure(now)
            row.record_outcome("timeout" if category == "timeout" else "failure", now, ms)
            return channel.breaker.on_failure(now, category, retry_after_s)
        channel.evidence.record_neutral(now)
        row.record_outcome("capability" if bucket is Bucket.CAPABILITY else "error", now, ms)
        return channel.breaker.on_neutral(now)

    def record_neutral(
        self, channel: Channel, method: str, now: float, *, dispatched: bool = False
    ) -> Transition | None:
        """An admitted attempt that says nothing about the provider: not dispatched (pool
        checkout failed, WS down) or cancelled. Releases a half-open probe slot; with
        ``dispatched`` it also counts as a comparable attempt (reference §3.1)."""
        del method  # no method row: there is no outcome to count
        if dispatched:
            channel.evidence.record_neutral(now)
        return channel.breaker.on_neutral(now)

    def record_cancelled(
        self, channel: Channel, method: str, now: float, *, elapsed_s: float | None = None
    ) -> Transition | None:
        """An attempt cancelled after dispatch (another one answered first, the deadline
        passed, or the client left): neither success nor failure, like
        :meth:`record_neutral` with ``dispatched``. ``elapsed_s``, given when it had run
        longer than the hedge delay, enters the method row's latency window as a lower
        bound on its latency (so the window keeps seeing the tail that hedging cuts off)."""
        if elapsed_s is not None:
            self._row(channel, method).record_lower_bound(elapsed_s * 1000.0)
        channel.evidence.record_neutral(now)
        return channel.breaker.on_neutral(now)

    def observe_fault(self, channel: Channel, fault: Fault, now: float) -> None:
        """A failure seen outside client traffic (a health probe, a WebSocket connect):
        the channel's last error and connection state only; breakers and evidence are
        fed by their own paths."""
        channel.health.fault(fault, now)

    def observe_config_fault(self, channel: Channel, fault: Fault | None, since: float) -> None:
        """Set (or with ``None`` clear) the channel's configuration fault: a verdict about
        this chain's pairing with the provider (a wrong chain id), not about the upstream.
        While set, the channel is no candidate and is reported ``misconfigured`` with
        ``fault`` as its last error; the breaker and the shared health are untouched.

        Args:
            channel: one of this router's channels.
            fault: the fault, or ``None`` once the pairing was verified.
            since: monotonic seconds when the fault was first seen (its age's origin).
        """
        channel.config_fault = fault
        channel.config_fault_at = None if fault is None else since

    def observe_lost(self, channel: Channel, fault: Fault, now: float) -> None:
        """A standing connection (an upstream WebSocket) dropped: ``down``, with ``fault``."""
        channel.health.lost(fault, now)

    def observe_reached(self, channel: Channel, now: float) -> None:
        """The upstream answered outside client traffic (a probe, a WebSocket connect)."""
        channel.health.reached(now)

    def observe_height(self, provider_id: str, height: int, now: float) -> None:
        """A provider's block height from polling, newHeads or a probe."""
        self.state.observe_height(provider_id, height, now)

    def logs_range_limit(self, provider_id: str) -> int | None:
        """The widest ``eth_getLogs`` range the provider takes: its configured
        ``max_block_range`` or a smaller one learned from its errors; ``None``: no limit."""
        for ch in self._by_provider.get(provider_id, ()):
            return ch._max_block_range
        return None

    def learn_logs_range_limit(self, provider_id: str, max_blocks: int) -> None:
        """The provider said it takes at most ``max_blocks`` blocks per ``eth_getLogs``
        (:func:`.getlogs.learned_limit`): the limit filter uses it from now on, until a
        reload rebuilds the router from the configuration. Only ever lowers a limit."""
        for ch in self._by_provider.get(provider_id, ()):
            if ch._max_block_range is None or max_blocks < ch._max_block_range:
                ch._max_block_range = max(1, max_blocks)
                ch._has_limits = True
                self._any_limits = True

    def observe_block(self, provider_id: str, number: int, now: float) -> None:
        """The provider answered with block ``number``: it has at least that height."""
        self.state.observe_block(provider_id, number, now)

    def provider_status(self, provider_id: str, now: float) -> str:
        """One word for the provider's health, the most severe that applies (of
        :data:`PROVIDER_STATUSES`): ``misconfigured`` (a probe saw 401/402 or a wrong chain
        id), ``circuit_open``, ``rate_limited``, ``recovering`` (half-open), ``degraded``
        (failing probes, or a failure as the channel's latest outcome), ``lagging`` (more
        than ``monitoring.lag_alert_threshold_blocks`` behind), else ``healthy``.
        An unknown provider is ``healthy``: there is nothing against it.
        """
        return provider_status(
            self._by_provider.get(provider_id, ()),
            self.state,
            provider_id,
            self.chain.lag_alert_threshold_blocks,
            now,
        )

    # -- views ----------------------------------------------------------------------------

    def snapshot(self, now: float) -> dict[str, object]:
        """A JSON-ready view of the chain's routing state for the API and dashboard."""
        return chain_snapshot(
            self.chain,
            self.state,
            self._by_provider,
            now,
            profile=self.profile,
            retry_after=self.retry_after(now),
        )

    def __repr__(self) -> str:
        now = self._last_now
        counts = [0, 0, 0]
        for ch in self._channels:
            counts[int(ch.breaker.state(now))] += 1
        live = sum(1 for ch in self._channels if ch.connected)
        return (
            f"<ChainRouter {self.profile}/{self.chain.key} providers={len(self._by_provider)} "
            f"channels={len(self._channels)} connected={live} closed={counts[0]} "
            f"half_open={counts[1]} open={counts[2]}>"
        )


class _NoRng:
    """The priority order draws nothing; this makes that explicit at construction."""

    def random(self) -> float:  # pragma: no cover - never called
        raise AssertionError("the priority strategy is deterministic")


_NO_RNG = _NoRng()


def _fault_of(category: str) -> Fault:
    """A fault for a failure the caller did not describe: named after its category."""
    return Fault(cause=category, category=category, message=category.replace("_", " "))


def _least_lagging(skipped: list[Channel], lagging: dict[str, int], max_lag: int) -> list[Channel]:
    """Every live provider lags: re-admit those within ``max_lag`` blocks of the least
    lagging one (lags count blocks behind; the *decision* of filter 4 in the module
    docstring)."""
    best = min(lagging[ch.provider_id] for ch in skipped)
    ceiling = best + max_lag
    return [ch for ch in skipped if lagging[ch.provider_id] <= ceiling]


def _resolve(ref: int | str, cons: int | None) -> int | None:
    if type(ref) is int:
        return ref
    # Every other tag (latest, pending, safe, finalized) is approximated by the consensus
    # head: "safe" and "finalized" trail it by a few dozen blocks at most.
    return 0 if ref == "earliest" else cons
