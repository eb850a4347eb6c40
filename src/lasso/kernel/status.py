"""Read-only views of a chain's routing state: one status word per provider, and the snapshot.

Nothing here is on the request path: metrics, events, the ``/api/chains`` document and the
dashboard read these through :meth:`~lasso.kernel.router.ChainRouter.provider_status` and
:meth:`~lasso.kernel.router.ChainRouter.snapshot`. The functions only read: breakers,
evidence, method rows and heights are left as they were.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from lasso.config import ChainConfig

from .breaker import BreakerState
from .chainstate import ChainState
from .channel import Channel
from .tiering import tier

__all__ = ["PROVIDER_STATUSES", "chain_snapshot", "connection_state", "provider_status"]

PROVIDER_STATUSES = (
    "healthy",
    "lagging",
    "degraded",
    "recovering",
    "rate_limited",
    "circuit_open",
    "misconfigured",
)
"""Values of :func:`provider_status`, least to most severe."""

_HALF_OPEN = BreakerState.HALF_OPEN
_OPEN = BreakerState.OPEN


def provider_status(
    channels: Iterable[Channel],
    state: ChainState,
    provider_id: str,
    lag_alert_threshold_blocks: int,
    now: float,
) -> str:
    """One word for a provider's health, the most severe that applies (of
    :data:`PROVIDER_STATUSES`): ``misconfigured`` (a probe saw 401/402 or a wrong chain
    id), ``circuit_open``, ``rate_limited``, ``recovering`` (half-open), ``degraded``
    (failing probes, or a failure as the channel's latest outcome), ``lagging`` (more
    than ``lag_alert_threshold_blocks`` behind), else ``healthy``.

    Args:
        channels: the provider's channels; none (an unknown provider) is ``healthy``:
            there is nothing against it.
        state: the chain's heights, for the lag.
        provider_id: the provider, for its lag.
        lag_alert_threshold_blocks: the chain's ``monitoring.lag_alert_threshold_blocks``.
        now: monotonic seconds.
    """
    rank = 0
    for ch in channels:
        s = ch.breaker.state(now)
        if ch.probe_status == "misconfigured" or ch.config_fault is not None:
            r = 6
        elif s is _OPEN:
            r = 5
        elif ch.evidence.rate_limited(now):
            r = 4
        elif s is _HALF_OPEN:
            r = 3
        elif ch.probe_status in ("degraded", "unhealthy") or ch.evidence.consecutive_failures:
            r = 2
        else:
            r = 0
        if r > rank:
            rank = r
    if rank == 0:
        lag = state.optimistic_lag(provider_id, now)
        if lag is not None and lag > lag_alert_threshold_blocks:
            rank = 1
    return PROVIDER_STATUSES[rank]


def connection_state(channel: Channel) -> str:
    """``up``, ``down`` or ``unknown``: whether the channel's upstream can be reached now.

    HTTP: the upstream's :class:`~lasso.kernel.faults.ChannelHealth` state (``up`` once it
    answered, ``down`` after a connect-level failure, ``unknown`` before any attempt).
    WebSocket: ``up`` exactly while its socket is open; otherwise ``down`` when the last
    connect failed or the socket dropped, ``unknown`` while the first connect is pending.
    """
    link = channel.health.link
    if channel.transport == "ws":
        if channel.connected:
            return "up"
        return "down" if link == "down" else "unknown"
    return link


def chain_snapshot(
    chain: ChainConfig,
    state: ChainState,
    by_provider: Mapping[str, Sequence[Channel]],
    now: float,
    *,
    profile: str,
    retry_after: float | None,
) -> dict[str, object]:
    """A JSON-ready view of one chain's routing state, for the API and dashboard.

    Args:
        chain: the chain's configuration.
        state: its heights and consensus.
        by_provider: every configured provider id (in configuration order) with its
            channels, possibly none (a provider without URLs is listed, never routed).
        now: monotonic seconds.
        profile: the profile slug.
        retry_after: the chain's smallest remaining open-circuit time, in seconds.
    """
    providers: list[dict[str, object]] = []
    for pid, chans in by_provider.items():
        p = chans[0].provider if chans else chain.provider(pid)
        if p is None:  # pragma: no cover - by_provider is built from the config
            continue
        channels: dict[str, object] = {}
        method_rows: list[dict[str, object]] = []
        last_error: dict[str, object] | None = None
        last_at = float("-inf")
        for ch in chans:
            s = ch.breaker.state(now)
            rl = ch.evidence.rate_limited(now)
            connection = connection_state(ch)
            error = _config_error(ch, now) or ch.health.last_error(now)
            # A standing configuration fault outranks any upstream error, however recent.
            at = float("inf") if ch.config_fault is not None else (ch.health.last_at or 0.0)
            if error is not None and at > last_at:
                last_at = at
                last_error = {"transport": ch.transport, **error}
            channels[ch.transport] = {
                "key": ch.key,
                "connected": connection == "up",
                "connection": connection,
                "last_error": error,
                "circuit": BreakerState(s).name.lower(),
                "circuit_value": int(s),
                "tier": tier(s, rl),
                "rate_limited": rl,
                "rate_limited_remaining_s": round(ch.evidence.rate_limit_remaining(now), 3),
                "retry_after_s": ch.breaker.retry_after(now),
                "probe": ch.probe_status,
                "evidence": ch.evidence.summary(now),
            }
            for m, row in ch.methods.items():
                entry: dict[str, object] = {"method": m, "transport": ch.transport}
                entry.update(row.summary(now))
                method_rows.append(entry)
        providers.append(
            {
                "id": pid,
                "name": p.name,
                "priority": p.priority,
                "archival": p.archival,
                "status": provider_status(chans, state, pid, chain.lag_alert_threshold_blocks, now),
                "channels": channels,
                "last_error": last_error,
                "height": state.height(pid),
                "lag": state.optimistic_lag(pid, now),
                "raw_lag": state.raw_lag(pid, now),
                "methods": method_rows,
            }
        )
    return {
        "profile": profile,
        "chain": chain.key,
        "chain_id": chain.chain_id,
        "consensus_height": state.consensus(now),
        "block_time_ms": round(state.block_time_ms, 1),
        "retry_after_s": retry_after,
        "providers": providers,
    }


def _config_error(channel: Channel, now: float) -> dict[str, object] | None:
    """The channel's standing configuration fault as ``last_error`` fields, if any: it
    outranks the upstream's last error for as long as it stands."""
    fault = channel.config_fault
    if fault is None:
        return None
    out = fault.to_dict()
    out["age_s"] = round(max(0.0, now - (channel.config_fault_at or now)), 3)
    return out
