"""Routing evidence and benchmark rows, updated synchronously from attempt outcomes.

Two kinds of row share one core (:class:`Evidence`), following reference §3:

* :class:`ChannelEvidence`, one per (provider, transport): what the strategies read by
  default, plus the learned rate-limit expiry that demotes a channel to tier 3/4.
* :class:`MethodStats`, one per (provider, method, transport): the benchmark row behind the
  dashboard and metrics (counts per outcome, percentiles over the last 100 successes, a
  Prometheus histogram), which is also qualified evidence in its own right so the latency
  strategies can rank providers per method.

Latencies are milliseconds here except where a name says ``_s``. Nothing in this module reads
a clock: every mutator takes ``now`` (monotonic seconds).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import Literal

from .classify import MAX_RETRY_AFTER_S

__all__ = [
    "DEFAULT_RETRY_AFTER_S",
    "HISTOGRAM_BUCKETS_S",
    "OUTCOMES",
    "QUALIFY_MAX_AGE_S",
    "QUALIFY_MAX_CONSECUTIVE_FAILURES",
    "QUALIFY_MIN_SUCCESSES",
    "QUALIFY_MIN_SUCCESS_PROB",
    "QUANTILE_MIN_SAMPLES",
    "RING_SIZE",
    "ChannelEvidence",
    "Evidence",
    "EvidenceState",
    "MethodStats",
    "Outcome",
]

ALPHA = 0.125
"""EWMA weight of a new sample, for latency and reliability alike (reference §3.1)."""

QUALIFY_MAX_AGE_S = 300.0
QUALIFY_MIN_SUCCESSES = 3
QUALIFY_MAX_CONSECUTIVE_FAILURES = 3  # qualified only while strictly below this
QUALIFY_MIN_SUCCESS_PROB = 0.75
DEFAULT_RETRY_AFTER_S = 30.0

RING_SIZE = 100
"""Successful latencies kept per method row for percentiles."""

QUANTILE_MIN_SAMPLES = 10
"""Latencies a row needs before :meth:`MethodStats.latency_quantile` answers."""
QUANTILE_REFRESH_WRITES = 8
"""Ring writes after which a cached :meth:`MethodStats.latency_quantile` is recomputed: one
sort per eight requests instead of one per request, for a hedge delay that moves slowly."""

HISTOGRAM_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, float("inf"),
)  # fmt: skip
"""Upper bounds (``le``) of the latency histogram in seconds, Prometheus' defaults."""

# The same finite bounds in milliseconds: latencies arrive in ms and bisecting them against
# ms bounds saves a division per sample. A value equal to a bound falls into that bucket.
_BOUNDS_MS: tuple[float, ...] = tuple(b * 1000.0 for b in HISTOGRAM_BUCKETS_S[:-1])

Outcome = Literal["success", "error", "rate_limited", "failure", "timeout", "capability"]
OUTCOMES: tuple[Outcome, ...] = (
    "success",  # a usable result
    "error",  # a deterministic upstream error (revert, invalid params): returned as is
    "rate_limited",  # a quota answer
    "failure",  # provider failure: 5xx, transport error, invalid response
    "timeout",  # the attempt's deadline expired
    "capability",  # method unsupported, block not available, archival required
)

EvidenceState = Literal["qualified", "stale", "provisional", "unqualified"]


class Evidence:
    """EWMA latency and reliability with the qualification rule of reference §3.1.

    ``ewma_ms`` is 0.0 until the first success, which initializes it; ``success_prob`` is
    ``None`` until the first success (1.0) or reliability failure (0.0), after which each
    outcome moves it 1/8 of the way toward 1 or 0.
    """

    __slots__ = (
        "comparable_attempts",
        "consecutive_failures",
        "ewma_ms",
        "last_observed",
        "success_prob",
        "total_failures",
        "usable_successes",
    )

    def __init__(self) -> None:
        self.ewma_ms = 0.0
        self.success_prob: float | None = None
        self.usable_successes = 0
        self.consecutive_failures = 0
        self.total_failures = 0
        self.comparable_attempts = 0
        self.last_observed: float | None = None

    def record_success(self, latency_ms: float, now: float) -> None:
        """Fold in a usable success that took ``latency_ms`` of attempt-local I/O time.

        A sample older than the last observation (``now`` before it) only bumps the
        counts, as in the reference: it must not drag a fresher average backwards.
        """
        self.comparable_attempts += 1
        self.usable_successes += 1
        self.consecutive_failures = 0
        last = self.last_observed
        if last is not None and now < last:
            return
        self.last_observed = now
        if self.usable_successes == 1:
            self.ewma_ms = latency_ms
        else:
            self.ewma_ms += (latency_ms - self.ewma_ms) * ALPHA
        p = self.success_prob
        self.success_prob = 1.0 if p is None else p + (1.0 - p) * ALPHA

    def record_failure(self, now: float) -> None:
        """Fold in a reliability failure (provider failure, invalid response, timeout)."""
        self.comparable_attempts += 1
        self.total_failures += 1
        self.consecutive_failures += 1
        self._push_down(now)

    def record_neutral(self, now: float) -> None:
        """Count a dispatched attempt that says nothing about the provider's health."""
        self.comparable_attempts += 1
        last = self.last_observed
        if last is None or now > last:
            self.last_observed = now

    def _push_down(self, now: float) -> None:
        last = self.last_observed
        if last is None or now > last:
            self.last_observed = now
        p = self.success_prob
        self.success_prob = 0.0 if p is None else p - p * ALPHA

    def clear_failure_streak(self) -> None:
        """The channel's circuit closed again after recovery: the failures that opened it
        are answered, so they no longer bar it from exploration. Its success probability
        and latency stay as they were; exploration re-measures it and a few successes
        requalify it."""
        self.consecutive_failures = 0

    def qualified(self, now: float) -> bool:
        """True when the row is fresh (<300 s), has ≥3 successes, <3 consecutive failures
        and a success probability ≥0.75: only then may strategies rank by its latency."""
        if self.usable_successes < QUALIFY_MIN_SUCCESSES:
            return False
        if self.consecutive_failures >= QUALIFY_MAX_CONSECUTIVE_FAILURES:
            return False
        last = self.last_observed
        if last is None or now - last >= QUALIFY_MAX_AGE_S:
            return False
        p = self.success_prob
        return p is not None and p >= QUALIFY_MIN_SUCCESS_PROB

    def stale(self, now: float) -> bool:
        """True when the row was observed, but not in the last 300 s."""
        last = self.last_observed
        return last is not None and now - last >= QUALIFY_MAX_AGE_S

    def state(self, now: float) -> EvidenceState:
        """The summary state of reference §3.1."""
        if self.qualified(now):
            return "qualified"
        if self.stale(now):
            return "stale"
        if self.comparable_attempts:
            return "provisional"
        return "unqualified"

    def prior_ms(self, now: float) -> float:
        """The latency to rank an unqualified row by: its mean, or ∞ when stale or unmeasured."""
        if self.usable_successes == 0 or self.ewma_ms <= 0.0 or self.stale(now):
            return float("inf")
        return self.ewma_ms

    def p95_ms(self) -> float | None:
        """The 95th percentile when the row keeps one (channel rows do not)."""
        return None

    def summary(self, now: float) -> dict[str, object]:
        """A JSON-ready view for snapshots."""
        last = self.last_observed
        return {
            "state": self.state(now),
            "ewma_ms": round(self.ewma_ms, 3) if self.usable_successes else None,
            "success_prob": None if self.success_prob is None else round(self.success_prob, 4),
            "usable_successes": self.usable_successes,
            "consecutive_failures": self.consecutive_failures,
            "total_failures": self.total_failures,
            "comparable_attempts": self.comparable_attempts,
            "last_observed_age_s": None if last is None else round(now - last, 3),
        }


class ChannelEvidence(Evidence):
    """Routing evidence for one (provider, transport), with its learned rate-limit expiry."""

    __slots__ = ("rate_limited_until", "total_rate_limits")

    def __init__(self) -> None:
        super().__init__()
        self.rate_limited_until = float("-inf")
        self.total_rate_limits = 0

    def record_rate_limit(self, now: float, retry_after_s: float | None = None) -> None:
        """A quota answer: rate-limited until ``now + retry_after_s`` (30 s when unknown,
        at most :data:`~lasso.kernel.classify.MAX_RETRY_AFTER_S`), never shortening a later
        expiry; reliability is also pushed toward 0 (§3.1)."""
        if retry_after_s is None or retry_after_s != retry_after_s:  # unknown, or NaN
            ra = DEFAULT_RETRY_AFTER_S
        else:
            ra = min(max(retry_after_s, 0.0), MAX_RETRY_AFTER_S)
        until = now + ra
        if until > self.rate_limited_until:
            self.rate_limited_until = until
        self.comparable_attempts += 1
        self.total_rate_limits += 1
        self._push_down(now)

    def mark_rate_limited(self, until: float) -> bool:
        """Extend the rate-limit expiry to ``until`` without counting an attempt.

        For marks that do not come from client traffic (a health probe that saw a quota
        answer): the routing evidence and its counters stay untouched and a later expiry
        is never shortened. Returns whether the expiry moved. (The prober's ``until``
        comes from a clamped retry-after reading, so it is bounded too.)
        """
        if until > self.rate_limited_until:
            self.rate_limited_until = until
            return True
        return False

    def rate_limited(self, now: float) -> bool:
        """True while a learned rate-limit expiry lies in the future."""
        return now < self.rate_limited_until

    def rate_limit_remaining(self, now: float) -> float:
        """Seconds until the rate limit expires, 0.0 when not rate-limited."""
        rem = self.rate_limited_until - now
        return rem if rem > 0.0 else 0.0

    def summary(self, now: float) -> dict[str, object]:
        out = Evidence.summary(self, now)
        out["rate_limited_remaining_s"] = round(self.rate_limit_remaining(now), 3)
        out["total_rate_limits"] = self.total_rate_limits
        return out

    def __repr__(self) -> str:
        return (
            f"<ChannelEvidence ewma={self.ewma_ms:.1f}ms p={self.success_prob} "
            f"ok={self.usable_successes} consec_fail={self.consecutive_failures}>"
        )


class MethodStats(Evidence):
    """The benchmark row for one (provider, method, transport).

    Counts every recorded outcome, keeps the last :data:`RING_SIZE` successful latencies in
    a ring (percentiles are computed on read: the hot path only writes) and Prometheus
    histogram bucket counts over every attempt whose latency is known.
    """

    __slots__ = (
        "_pct",
        "_quantile",
        "_ring",
        "_ring_idx",
        "_writes",
        "bucket_counts",
        "calls",
        "failures",
        "hist_count",
        "hist_sum_s",
        "last_updated",
        "outcomes",
        "successes",
    )

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.successes = 0
        self.failures = 0  # provider-attributable: "failure" and "timeout"
        self.outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self._ring: list[float] = []
        self._ring_idx = 0
        self._pct: tuple[float | None, float | None, float | None] | None = None  # cache
        self._writes = 0  # ring writes ever
        self._quantile: tuple[float, int, float] | None = None  # (q, _writes, value) cache
        self.bucket_counts = [0] * len(HISTOGRAM_BUCKETS_S)  # per bucket, not cumulative
        self.hist_sum_s = 0.0
        self.hist_count = 0
        self.last_updated: float | None = None

    def record_success(self, latency_ms: float, now: float) -> None:
        """A usable success: counts, EWMA, ring and histogram."""
        Evidence.record_success(self, latency_ms, now)
        self.calls += 1
        self.successes += 1
        self.outcomes["success"] += 1
        self.last_updated = now
        self._pct = None
        self._writes += 1
        ring = self._ring
        if len(ring) < RING_SIZE:
            ring.append(latency_ms)
        else:
            ring[self._ring_idx] = latency_ms
            self._ring_idx = (self._ring_idx + 1) % RING_SIZE
        self.bucket_counts[bisect_left(_BOUNDS_MS, latency_ms)] += 1
        self.hist_sum_s += latency_ms / 1000.0
        self.hist_count += 1

    def record_lower_bound(self, latency_ms: float) -> None:
        """An attempt cancelled after ``latency_ms`` because a hedge answered first: its
        latency was at least that. It enters the latency window (so the percentiles and the
        hedge delay see the slow tail that hedging hides), and nothing else: no call, no
        outcome, no EWMA sample. (The ring write repeats :meth:`record_success`'s, inlined
        there because that one runs on every request.)"""
        self._pct = None
        self._writes += 1
        ring = self._ring
        if len(ring) < RING_SIZE:
            ring.append(latency_ms)
        else:
            ring[self._ring_idx] = latency_ms
            self._ring_idx = (self._ring_idx + 1) % RING_SIZE

    def record_outcome(self, outcome: Outcome, now: float, latency_ms: float | None = None) -> None:
        """Any outcome but success. ``failure`` and ``timeout`` are reliability failures,
        ``rate_limited`` pushes reliability down, ``error`` and ``capability`` are neutral.
        ``latency_ms``, when known, goes into the histogram only.

        Raises:
            ValueError: for ``success``, which needs :meth:`record_success` (it has a latency).
        """
        if outcome == "success":
            raise ValueError("record a success with record_success()")
        self.calls += 1
        self.outcomes[outcome] += 1
        self.last_updated = now
        if outcome == "failure" or outcome == "timeout":
            self.failures += 1
            self.record_failure(now)
        elif outcome == "rate_limited":
            self.comparable_attempts += 1
            self._push_down(now)
        else:
            self.record_neutral(now)
        if latency_ms is not None:
            self.bucket_counts[bisect_left(_BOUNDS_MS, latency_ms)] += 1
            self.hist_sum_s += latency_ms / 1000.0
            self.hist_count += 1

    @property
    def success_rate(self) -> float | None:
        """Successes over all recorded calls, ``None`` before the first call."""
        return self.successes / self.calls if self.calls else None

    def percentiles(self) -> tuple[float | None, float | None, float | None]:
        """(p50, p95, p99) in ms over the ring by nearest rank: ``sorted[ceil(n*q) - 1]``."""
        pct = self._pct
        if pct is not None:
            return pct
        ring = self._ring
        n = len(ring)
        if n == 0:
            return (None, None, None)
        s = sorted(ring)
        # ceil(n*q) with integer arithmetic: no float rounding at n*0.95 and friends.
        pct = (s[-(-n * 50 // 100) - 1], s[-(-n * 95 // 100) - 1], s[-(-n * 99 // 100) - 1])
        self._pct = pct
        return pct

    def p95_ms(self) -> float | None:
        return self.percentiles()[1]

    def latency_quantile(self, q: float) -> float | None:
        """The ``q`` quantile (``0 < q < 1``) of the latency window in ms, by nearest rank.

        ``None`` while the window holds fewer than :data:`QUANTILE_MIN_SAMPLES`. The value
        is cached and recomputed after :data:`QUANTILE_REFRESH_WRITES` new samples (or for
        another ``q``), so it may trail the window by a few samples.
        """
        cached = self._quantile
        writes = self._writes
        if cached is not None and cached[0] == q and writes - cached[1] < QUANTILE_REFRESH_WRITES:
            return cached[2]
        ring = self._ring
        n = len(ring)
        if n < QUANTILE_MIN_SAMPLES:
            return None
        value = sorted(ring)[min(n, max(1, math.ceil(n * q))) - 1]
        self._quantile = (q, writes, value)
        return value

    def recent_latencies(self) -> list[float]:
        """The ring's latencies, oldest first."""
        i = self._ring_idx
        return self._ring[i:] + self._ring[:i]

    def cumulative_buckets(self) -> list[tuple[float, int]]:
        """``(le, cumulative count)`` pairs in Prometheus exposition order, ending at +Inf."""
        out: list[tuple[float, int]] = []
        acc = 0
        for le, c in zip(HISTOGRAM_BUCKETS_S, self.bucket_counts, strict=True):
            acc += c
            out.append((le, acc))
        return out

    def summary(self, now: float) -> dict[str, object]:
        p50, p95, p99 = self.percentiles()
        rate = self.success_rate
        return {
            "calls": self.calls,
            "successes": self.successes,
            "failures": self.failures,
            "success_rate": None if rate is None else round(rate, 4),
            "outcomes": dict(self.outcomes),
            "ewma_ms": round(self.ewma_ms, 3) if self.usable_successes else None,
            "p50_ms": p50,
            "p95_ms": p95,
            "p99_ms": p99,
            "state": self.state(now),
            "last_updated_age_s": None
            if self.last_updated is None
            else round(now - self.last_updated, 3),
        }

    def __repr__(self) -> str:
        return (
            f"<MethodStats calls={self.calls} ok={self.successes} fail={self.failures} "
            f"ewma={self.ewma_ms:.1f}ms>"
        )
