"""Routing strategies: order candidate channels from evidence and injected randomness.

:func:`order` is pure: it reads evidence, draws from ``rng`` and returns a new list. The
router filters before it and applies the health tiers after it (:mod:`.tiering`).

Strategies (reference §2.4):

``load-balanced``
    A uniform Fisher-Yates shuffle.
``priority``
    Provider ``priority`` ascending, HTTP before WS, then provider id. Deterministic.
``fastest``
    Qualified channels by EWMA latency ascending (ties: p95, then provider id and
    transport), then the unqualified ones by their prior mean (∞ when stale or unmeasured).
``latency-weighted``
    A weighted random permutation by exponential race, ``w = (min / latency) ** beta``:
    qualified channels first, then unqualified channels with a mean, then the unmeasured
    ones shuffled.

Two deliberate extensions over the reference:

* **Per-method evidence.** The reference keeps one evidence row per channel for all
  methods, so a provider that answers ``eth_blockNumber`` in 20 ms but ``eth_getLogs`` in
  2 s ranks by a blend dominated by whatever is most frequent. ``fastest`` and
  ``latency-weighted`` therefore rank by the per-method row (:class:`~.stats.MethodStats`
  for this method on that channel) when at least two candidates have a qualified one: with
  fewer there is nothing to compare per method, and the per-channel row, which sees all
  traffic, is the better signal.
* **Exploration for ``fastest`` and ``latency-weighted``.** Once some channel is
  qualified, ``fastest`` would send it every request, so a cold provider, or one that used
  to be slow and became fast, is never measured again. With probability :data:`EXPLORE_P`
  (2 %) one unqualified but not-failing channel (fewer than 3 consecutive failures), picked
  uniformly, is moved to the front; when every channel is qualified, ``fastest`` instead
  re-measures a runner-up with that probability, so one noisy sample cannot pin a stale
  ranking. ``latency-weighted`` explores unqualified channels the same way. It costs one
  ``rng.random()`` draw per call when such a channel exists (two when it fires), so a
  seeded ``rng`` gives a reproducible order. If the explored channel
  fails, failover continues with the fastest; the router turns exploration off for methods
  that are not replay-safe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from math import log
from typing import Protocol, TypeVar

from .clock import Rng
from .stats import QUALIFY_MAX_CONSECUTIVE_FAILURES, ChannelEvidence, Evidence

__all__ = [
    "EXPLORE_P",
    "Candidate",
    "MethodStatsLookup",
    "order",
]

EXPLORE_P = 0.02
"""Probability that ``fastest`` puts a random unqualified, not-failing channel first."""

MIN_PER_METHOD_QUALIFIED = 2
"""Qualified per-method rows needed before ranking by them instead of channel evidence."""

_U_MIN = 2.0**-53  # clamp of the exponential race's uniform draw: keeps log(u) finite
_W_MIN = 1e-300  # an extreme latency ratio underflows the weight to 0.0: keep it positive
_INF = float("inf")


class Candidate(Protocol):
    """What a strategy needs to know about a channel (the router's ``Channel``)."""

    @property
    def provider_id(self) -> str: ...

    @property
    def priority(self) -> int: ...

    @property
    def transport(self) -> str: ...

    @property
    def evidence(self) -> ChannelEvidence: ...


C = TypeVar("C", bound=Candidate)

MethodStatsLookup = Callable[[C], Evidence | None]
"""Returns the per-method row of a channel for the method being routed, if any."""


def order(
    strategy: str,
    channels: Sequence[C],
    method_stats_lookup: Callable[[C], Evidence | None] | None,
    now: float,
    rng: Rng,
    beta: float = 3.0,
    *,
    explore: float = EXPLORE_P,
) -> list[C]:
    """Order ``channels`` by ``strategy``.

    Args:
        strategy: a canonical strategy name (``round-robin`` is accepted for load-balanced).
        channels: the filtered candidates, in configuration order.
        method_stats_lookup: per-method evidence for a channel, or ``None`` to rank by
            channel evidence only. Only ``fastest`` and ``latency-weighted`` call it.
        now: monotonic seconds, for evidence freshness.
        rng: the randomness source; only ``.random()`` is used.
        beta: the latency-weighted exponent (the chain's ``latency_weighted_beta``).
        explore: the exploration probability of ``fastest`` (0 disables it).

    Returns:
        A new list holding every channel exactly once. The caller applies the tiers next.

    Raises:
        ValueError: for an unknown strategy.
    """
    if strategy == "load-balanced" or strategy == "round-robin":
        return _shuffle(list(channels), rng)
    if strategy == "priority":
        return sorted(channels, key=_priority_key)
    if strategy == "fastest":
        return _fastest(channels, method_stats_lookup, now, rng, explore)
    if strategy == "latency-weighted":
        return _latency_weighted(channels, method_stats_lookup, now, rng, beta, explore)
    raise ValueError(f"unknown strategy: {strategy!r}")


def _shuffle(items: list[C], rng: Rng) -> list[C]:
    """Fisher-Yates in place, drawing ``rng.random()`` once per position."""
    rand = rng.random
    for i in range(len(items) - 1, 0, -1):
        j = int(rand() * (i + 1))
        items[i], items[j] = items[j], items[i]
    return items


def _priority_key(ch: Candidate) -> tuple[int, bool, str]:
    return (ch.priority, ch.transport != "http", ch.provider_id)


def _split(
    channels: Sequence[C],
    lookup: Callable[[C], Evidence | None] | None,
    now: float,
) -> tuple[list[tuple[float, int]], list[tuple[float, int]], Sequence[Evidence | None]]:
    """Split channel indexes into qualified ``(ewma, i)`` and the rest ``(prior, i)``.

    Per-method rows are used when at least two are qualified, else channel evidence.
    """
    if lookup is not None:
        rows: Sequence[Evidence | None] = [lookup(ch) for ch in channels]
        qualified, rest = _classify(rows, now)
        if len(qualified) >= MIN_PER_METHOD_QUALIFIED:
            return qualified, rest, rows
    rows = [ch.evidence for ch in channels]
    qualified, rest = _classify(rows, now)
    return qualified, rest, rows


def _classify(
    rows: Sequence[Evidence | None], now: float
) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
    qualified: list[tuple[float, int]] = []
    rest: list[tuple[float, int]] = []
    for i, row in enumerate(rows):
        if row is None:
            rest.append((_INF, i))
        elif row.ewma_ms > 0.0 and row.qualified(now):
            qualified.append((row.ewma_ms, i))
        else:
            rest.append((row.prior_ms(now), i))
    return qualified, rest


def _fastest(
    channels: Sequence[C],
    lookup: Callable[[C], Evidence | None] | None,
    now: float,
    rng: Rng,
    explore: float,
) -> list[C]:
    qualified, rest, rows = _split(channels, lookup, now)
    qualified.sort()
    # Ties on the EWMA (rare with float means) break on p95, then provider id and
    # transport; p95 needs a sorted ring, so the full key is built only when a tie exists.
    for k in range(1, len(qualified)):
        if qualified[k - 1][0] == qualified[k][0]:
            qualified.sort(
                key=lambda q: (
                    q[0],
                    _p95_or_mean(rows[q[1]]),
                    channels[q[1]].provider_id,
                    channels[q[1]].transport,
                )
            )
            break
    out = [channels[i] for _, i in qualified]
    if rest:
        if len(rest) > 1:
            rest.sort(key=lambda r: (r[0], channels[r[1]].provider_id, channels[r[1]].transport))
        n_q = len(out)
        out.extend(channels[i] for _, i in rest)
        if explore > 0.0 and n_q:
            _explore(out, n_q, rng, explore)
    if explore > 0.0 and len(out) > 1 and not rest:
        # Everyone is qualified: re-measure the runners-up now and then, or a runner-up
        # keeps one noisy sample's EWMA for as long as it stays qualified (300 s).
        _explore(out, 1, rng, explore)
    return out


def _explore(out: list[C], start: int, rng: Rng, explore: float) -> None:
    """With probability ``explore`` move one not-failing channel from ``out[start:]`` to
    the front (uniform pick). One ``rng.random()`` draw, two when it fires."""
    explorable = [
        k
        for k in range(start, len(out))
        if out[k].evidence.consecutive_failures < QUALIFY_MAX_CONSECUTIVE_FAILURES
    ]
    if explorable and rng.random() < explore:
        k = explorable[int(rng.random() * len(explorable))]
        out.insert(0, out.pop(k))


def _p95_or_mean(row: Evidence | None) -> float:
    if row is None:  # pragma: no cover - only qualified rows tie, and they exist
        return _INF
    p95 = row.p95_ms()
    return row.ewma_ms if p95 is None else p95


def _latency_weighted(
    channels: Sequence[C],
    lookup: Callable[[C], Evidence | None] | None,
    now: float,
    rng: Rng,
    beta: float,
    explore: float = 0.0,
) -> list[C]:
    qualified, rest, _ = _split(channels, lookup, now)
    out = _race(qualified, channels, rng, beta)
    if rest:
        n_q = len(out)
        measured = [r for r in rest if r[0] < _INF]
        out.extend(_race(measured, channels, rng, beta))
        if len(measured) < len(rest):
            out.extend(_shuffle([channels[i] for p, i in rest if p == _INF], rng))
        # Qualified channels always come first, so a provider that missed qualification
        # early would never be tried first again: give unqualified ones the same small
        # exploration share as ``fastest``.
        if explore > 0.0 and n_q:
            _explore(out, n_q, rng, explore)
    return out


def _race(group: list[tuple[float, int]], channels: Sequence[C], rng: Rng, beta: float) -> list[C]:
    """Weighted random permutation: key ``-ln(u) / w`` ascending, ``w = (min/lat)**beta``.

    The first element is channel ``i`` with probability ``w_i / sum(w)``, and the rest
    follow the same rule recursively (the exponential race / Efraimidis-Spirakis).
    """
    if len(group) <= 1:
        return [channels[i] for _, i in group]
    lo = min(group)[0]
    rand = rng.random
    keyed: list[tuple[float, int]] = []
    for lat, i in group:
        u = rand()
        w = (lo / lat) ** beta
        keyed.append((-log(u if u > _U_MIN else _U_MIN) / (w if w > _W_MIN else _W_MIN), i))
    keyed.sort()
    return [channels[i] for _, i in keyed]
