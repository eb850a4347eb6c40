"""Health probes: what one probe answer means, when to probe next, and what it changes.

This module is pure (no IO, no clock): :class:`~lasso.probes.heights.HeightProber` sends
the requests and calls in here. The probe *is* the block-height poll: one
``eth_blockNumber`` per upstream instance and interval (``eth_chainId`` until the chain id
has been verified once), so health costs no request beyond the height Lasso needs anyway
(reference §11.1, with the decisions below).

Outcomes (:func:`judge_probe`, :func:`judge_error`):

* ``ok``: a 2xx with a height (or the configured chain id). Resets the probe back-off.
* ``misconfigured``: HTTP 401/402, an auth error message, or a wrong chain id. For an
  auth verdict the breaker is opened for :data:`AUTH_BACKOFF_S` (120 s); a wrong chain id
  leaves the breaker alone (:attr:`ProbeResult.wrong_chain`, below). The probe backs off
  :data:`AUTH_BACKOFF_S` either way.
* ``rate_limited``: HTTP 429 or 403, a 5xx body saying "rate limit", JSON-RPC
  ``-32005``/``-32007``/``-32029`` or a rate-limit message. The channel is rate-limited
  for :data:`RATE_LIMIT_MARK_S` (60 s, or the ``Retry-After`` if longer) and the probe
  backs off :data:`RATE_LIMIT_BACKOFF_S` (30 s).
* ``failure``: anything else (5xx, invalid JSON, other errors, refused, reset, timeout).
  A breaker failure of that category; the probe backs off ``2 s × 2^(n−1)`` ±20 %,
  capped at 30 s, and never probes more often than the interval.

Decisions:

* **Idle only.** A probe's outcome counts for health only when no client attempt touched
  the channel for a whole probe interval (``evidence.last_observed``): busy providers are
  judged by real traffic. A busy provider's poll still feeds its height (the lag filter
  needs it), unless a client ``eth_blockNumber`` answered by it already did.
* **Failures penalize; successes do not reset.** A failed idle probe is a breaker failure
  of its category (network 3, timeout 2, server 5 in a row open the circuit). A successful
  probe does *not* reset the consecutive count of a closed breaker: an endpoint that answers
  ``eth_blockNumber`` but fails real calls must still trip.
* **Open circuits are probed to recover early** (probe-assisted recovery, beyond the
  reference). While a breaker is open for a health reason
  (:meth:`~lasso.kernel.breaker.CircuitBreaker.probe_assisted`: not a quota, manual,
  misconfiguration or ``auth_error`` open, and no failed post-probe trial since it last
  closed), the prober sends its normal probe every ``monitoring.recovery_probe_interval_ms``
  (default 2 s, plus up to 20 % jitter: :func:`recovery_gap`), busy or idle (an open
  circuit carries no client traffic to judge it by), the first one a gap after the circuit
  opened. :func:`apply_recovery_probe` reports the answers: ``success_threshold`` (2) in a
  row move it to half-open early (``probe_recovery``); a failed or rate-limited answer
  only restarts the count (never a breaker failure, never a later deadline). Any other
  open circuit gets nothing: its recovery timeout is the back-off.
* **The probe may be the half-open probe.** Once a breaker is half-open (its deadline
  passed, or probes recovered it), the prober takes the half-open slot through the
  breaker's normal admission when the provider is idle, its probe is due, or the recovery
  cadence is due, and reports the outcome: successes close it through the normal
  ``success_threshold`` path, a failure reopens it with the breaker's own back-off. So a
  provider that recovered is re-admitted without a client paying for the probe (a
  half-open channel is tier 2 and gets little traffic); clients still probe it too when
  it is their only option. A circuit re-admitted on the probes' word stays on probation
  until real traffic succeeds: if real traffic fails first, the provider falls back to
  the timed back-off (the breaker's anti-flap rule).
* **A bad key opens the circuit.** 401/402 (bad key, unpaid plan) cannot heal on its own:
  the breaker is opened for :data:`AUTH_BACKOFF_S` as a quota open, so one successful
  half-open call (after the operator fixed it) closes it. The credentials are part of the
  breaker's key (:func:`~lasso.kernel.channel.breaker_key`), so this verdict is about
  exactly the upstream the breaker stands for.
* **A wrong chain id is the chain's, not the upstream's.** A chain id mismatch is a
  property of one chain's pairing with the provider: another chain (or profile) sharing
  the upstream's breaker may be configured right. So it never touches the breaker (a
  half-open slot the probe held is released as neutral): the prober sets the
  configuration fault of the probed chain's channels instead
  (:meth:`~lasso.kernel.router.ChainRouter.observe_config_fault`), which keeps them out
  of routing and reports them ``misconfigured``, and the next probe asks the chain id
  again, :data:`AUTH_BACKOFF_S` later. It counts even when the provider is busy: it would
  serve another chain's data.
* **Rate limits demote, never penalize.** The channel's rate-limit expiry is extended
  (:meth:`~lasso.kernel.stats.ChannelEvidence.mark_rate_limited`, no evidence counters
  touched) and the breaker only hears a neutral outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from lasso.kernel.breaker import CircuitBreaker, Transition
from lasso.kernel.classify import (
    Category,
    classify_http_status,
    classify_rpc_error,
    penalizes_breaker,
)
from lasso.kernel.clock import Rng
from lasso.kernel.faults import Fault
from lasso.server.rpc_envelope import read_answer

__all__ = [
    "AUTH_BACKOFF_S",
    "BACKOFF_BASE_S",
    "BACKOFF_JITTER",
    "BACKOFF_MAX_S",
    "DEFAULT_POLICY",
    "PROBE_TIMEOUT_S",
    "RATE_LIMIT_BACKOFF_S",
    "RATE_LIMIT_MARK_S",
    "UNHEALTHY_AFTER",
    "ProbeKind",
    "ProbePolicy",
    "ProbeResult",
    "ProbeState",
    "apply_recovery_probe",
    "apply_to_breaker",
    "failure_backoff",
    "judge_error",
    "judge_probe",
    "parse_quantity",
    "probe_result_fault",
    "recovery_gap",
]

BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 30.0
BACKOFF_JITTER = 0.2
RATE_LIMIT_MARK_S = 60.0
RATE_LIMIT_BACKOFF_S = 30.0
AUTH_BACKOFF_S = 120.0
UNHEALTHY_AFTER = 3
"""Consecutive failed probes that turn ``degraded`` into ``unhealthy``."""
PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbePolicy:
    """The probe constants, in one value so a prober can be built with others (tests).

    Defaults follow reference §11.1 and §13.
    """

    backoff_base_s: float = BACKOFF_BASE_S
    backoff_max_s: float = BACKOFF_MAX_S
    backoff_jitter: float = BACKOFF_JITTER
    rate_limit_mark_s: float = RATE_LIMIT_MARK_S
    rate_limit_backoff_s: float = RATE_LIMIT_BACKOFF_S
    auth_backoff_s: float = AUTH_BACKOFF_S
    unhealthy_after: int = UNHEALTHY_AFTER
    timeout_s: float = PROBE_TIMEOUT_S


DEFAULT_POLICY = ProbePolicy()

_RATE_LIMIT_CODES = frozenset({-32005, -32007, -32029})


class ProbeKind(StrEnum):
    OK = "ok"
    FAILURE = "failure"
    RATE_LIMITED = "rate_limited"
    MISCONFIGURED = "misconfigured"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe's verdict.

    Attributes:
        kind: what it means (see the module table).
        category: for ``failure``, the breaker category (``server_error``, ``timeout``…).
        value: the parsed result (a height, or a chain id) for ``ok``.
        retry_after_s: a provider's ``Retry-After`` for ``rate_limited``, if any.
        detail: a short human reason for logs and the API.
    """

    kind: ProbeKind
    category: str | None = None
    value: int | None = None
    retry_after_s: float | None = None
    detail: str = ""

    @property
    def wrong_chain(self) -> bool:
        """True for the chain id mismatch: a ``misconfigured`` verdict about the probed
        chain's configuration, not about the upstream (see the module docstring)."""
        return self.kind is ProbeKind.MISCONFIGURED and self.value is not None


def parse_quantity(value: object) -> int | None:
    """A ``0x`` hex quantity as an int, ``None`` for anything else."""
    if not isinstance(value, str) or not value.startswith(("0x", "0X")) or len(value) > 66:
        return None
    try:
        return int(value, 16)
    except ValueError:
        return None


def judge_probe(
    status: int,
    body: bytes | bytearray,
    *,
    retry_after_s: float | None = None,
    expect_chain_id: int | None = None,
) -> ProbeResult:
    """Judge an HTTP answer to a probe request (``eth_blockNumber``, or ``eth_chainId``
    when ``expect_chain_id`` is given).

    Args:
        status: the HTTP status.
        body: the response body.
        retry_after_s: the parsed ``Retry-After`` header, if any.
        expect_chain_id: the configured chain id, when the probe asked ``eth_chainId``.

    Returns:
        The verdict; never raises, whatever the body holds.
    """
    if status in (401, 402):
        return ProbeResult(ProbeKind.MISCONFIGURED, detail=f"HTTP {status}: check the API key")
    doc = read_answer(body)  # a large (broken) answer: its envelope only
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict):
        code = err.get("code")
        message = err.get("message")
        message = message if isinstance(message, str) else ""
        if isinstance(code, int) and not isinstance(code, bool):
            cat = classify_rpc_error(code, message, err.get("data"))
            if cat is Category.RATE_LIMIT or code in _RATE_LIMIT_CODES or status in (403, 429):
                return ProbeResult(
                    ProbeKind.RATE_LIMITED,
                    retry_after_s=retry_after_s,
                    detail=f"{code}: {message[:120]}",
                )
            if cat is Category.AUTH_ERROR:
                return ProbeResult(ProbeKind.MISCONFIGURED, detail=f"{code}: {message[:120]}")
            # Any other error to eth_blockNumber is the provider failing: keep a penalizing
            # category (server_error, internal_error…), else count it as unknown_error.
            if not penalizes_breaker(cat):
                cat = Category.UNKNOWN_ERROR
            return ProbeResult(ProbeKind.FAILURE, category=cat, detail=f"{code}: {message[:120]}")
    if status != 200:
        cat = classify_http_status(status, body)
        if status == 403 or cat is Category.RATE_LIMIT:
            return ProbeResult(
                ProbeKind.RATE_LIMITED, retry_after_s=retry_after_s, detail=f"HTTP {status}"
            )
        return ProbeResult(ProbeKind.FAILURE, category=cat, detail=f"HTTP {status}")
    value = parse_quantity(doc.get("result")) if isinstance(doc, dict) else None
    if value is None:
        return ProbeResult(
            ProbeKind.FAILURE, category=Category.PROTOCOL_ERROR, detail="invalid response"
        )
    if expect_chain_id is not None and value != expect_chain_id:
        return ProbeResult(
            ProbeKind.MISCONFIGURED,
            value=value,
            detail=f"wrong chain id {value}, configured {expect_chain_id}",
        )
    return ProbeResult(ProbeKind.OK, value=value)


def probe_result_fault(result: ProbeResult, status: int, ts: float | None = None) -> Fault | None:
    """The fault of a health probe's HTTP answer (``None`` when it was good), for the
    channel's last error (:class:`~lasso.kernel.faults.ChannelHealth`).

    Args:
        result: what :func:`judge_probe` made of the answer.
        status: the answer's HTTP status.
        ts: wall-clock seconds of the answer, for display.
    """
    kind = result.kind
    if kind is ProbeKind.OK:
        return None
    detail = result.detail or str(kind)
    if kind is ProbeKind.RATE_LIMITED:
        category = "rate_limit"
    elif kind is ProbeKind.MISCONFIGURED:
        category = "chain_error" if result.value is not None else "auth_error"
    else:
        category = str(result.category or "unknown_error")
    if result.value is not None and kind is ProbeKind.MISCONFIGURED:
        cause = "wrong_chain"
    elif status != 200:
        cause = "http_status"
        if not detail.startswith("HTTP "):
            detail = f"HTTP {status}: {detail}"  # a JSON-RPC error in an error status
    elif detail == "invalid response":
        cause = "protocol"
    else:
        cause = "rpc_error"
    return Fault(
        cause=cause,
        category=category,
        message=detail[:200],
        status=status if status != 200 else None,
        ts=ts,
    )


def judge_error(category: str, detail: str) -> ProbeResult:
    """The verdict for a probe that got no HTTP answer (refused, reset, timeout)."""
    return ProbeResult(ProbeKind.FAILURE, category=category, detail=detail[:200])


def failure_backoff(failures: int, rng: Rng, policy: ProbePolicy = DEFAULT_POLICY) -> float:
    """Seconds to wait after ``failures`` consecutive failed probes (≥ 1):
    ``2 s × 2^(n−1)`` capped at 30 s, times a uniform factor in [0.8, 1.2)."""
    base = policy.backoff_base_s * 2.0 ** min(max(failures, 1) - 1, 4)
    jitter = policy.backoff_jitter
    return min(base, policy.backoff_max_s) * (1.0 - jitter + 2 * jitter * rng.random())


def recovery_gap(interval: float, rng: Rng, policy: ProbePolicy = DEFAULT_POLICY) -> float:
    """Seconds between two probes of an open circuit: ``interval`` plus a uniform
    0–20 % (``backoff_jitter``). The jitter only lengthens the gap, so probes never go out
    more often than the interval, and instances that opened together drift apart."""
    return interval * (1.0 + policy.backoff_jitter * rng.random())


class ProbeState:
    """The probe schedule and verdict of one upstream instance (per breaker and chain).

    ``status`` is one of ``unknown`` (never judged), ``healthy``, ``degraded`` (1–2 failed
    probes in a row), ``unhealthy`` (3 or more), ``rate_limited`` or ``misconfigured``.
    """

    __slots__ = (
        "chain_verified",
        "config_fault",
        "counts",
        "detail",
        "failures",
        "last_probe",
        "next_due",
        "recovery_counts",
        "recovery_due",
        "recovery_epoch",
        "status",
    )

    def __init__(self) -> None:
        self.status = "unknown"
        self.failures = 0
        self.next_due = float("-inf")
        self.last_probe: float | None = None
        self.chain_verified = False
        # The wrong-chain fault standing against the probed chain's channels, and since
        # when (monotonic): kept here so a reload's new channels get it back.
        self.config_fault: tuple[Fault, float] | None = None
        self.detail = ""
        self.counts: dict[str, int] = dict.fromkeys(ProbeKind, 0)
        # Probe-assisted recovery: the open period being probed (its opened_at), when the
        # next recovery probe may go, and the answers to recovery probes (a subset of
        # ``counts``).
        self.recovery_epoch: float | None = None
        self.recovery_due = float("-inf")
        self.recovery_counts: dict[str, int] = dict.fromkeys(ProbeKind, 0)

    def due(self, now: float) -> bool:
        return now >= self.next_due

    def recovery_probe_due(
        self,
        opened_at: float,
        now: float,
        interval: float,
        rng: Rng,
        policy: ProbePolicy = DEFAULT_POLICY,
    ) -> bool:
        """Whether a probe of the circuit open since ``opened_at`` may go out ``now``.

        The first probe of an open period waits one :func:`recovery_gap` after it began;
        the caller reports each probe it sends with :meth:`recovery_sent`.
        """
        if self.recovery_epoch != opened_at:
            self.recovery_epoch = opened_at
            self.recovery_due = opened_at + recovery_gap(interval, rng, policy)
        return now >= self.recovery_due

    def recovery_sent(
        self, now: float, interval: float, rng: Rng, policy: ProbePolicy = DEFAULT_POLICY
    ) -> None:
        """A recovery (or half-open trial) probe went out: the next one is a gap away."""
        self.recovery_due = now + recovery_gap(interval, rng, policy)

    def record(
        self,
        result: ProbeResult,
        now: float,
        interval: float,
        rng: Rng,
        policy: ProbePolicy = DEFAULT_POLICY,
    ) -> None:
        """Fold one verdict into the schedule and the status.

        ``ok`` resets the back-off (the next probe is an ``interval`` away, or immediate
        right after the chain id was verified); the others back off as the module table
        says, never more often than ``interval``.
        """
        self.counts[result.kind] += 1
        self.last_probe = now
        self.detail = result.detail
        kind = result.kind
        if kind is ProbeKind.OK:
            self.failures = 0
            self.status = "healthy"
            self.next_due = now + interval
        elif kind is ProbeKind.FAILURE:
            self.failures += 1
            self.status = "unhealthy" if self.failures >= policy.unhealthy_after else "degraded"
            self.next_due = now + max(interval, failure_backoff(self.failures, rng, policy))
        elif kind is ProbeKind.RATE_LIMITED:
            self.status = "rate_limited"
            self.next_due = now + max(interval, policy.rate_limit_backoff_s)
        else:
            self.status = "misconfigured"
            self.next_due = now + max(interval, policy.auth_backoff_s)

    def snapshot(self, now: float) -> dict[str, object]:
        """A JSON-ready view for the API and tests."""
        return {
            "status": self.status,
            "consecutive_failures": self.failures,
            "chain_verified": self.chain_verified,
            "last_probe_age_s": None
            if self.last_probe is None
            else round(now - self.last_probe, 3),
            "next_in_s": max(0.0, round(self.next_due - now, 3)) if self.next_due > now else 0.0,
            "detail": self.detail,
            "counts": {str(k): v for k, v in self.counts.items()},
            "recovery_counts": {str(k): v for k, v in self.recovery_counts.items()},
        }

    def __repr__(self) -> str:
        return f"<ProbeState {self.status} failures={self.failures} verified={self.chain_verified}>"


def apply_to_breaker(
    result: ProbeResult,
    breaker: CircuitBreaker,
    now: float,
    *,
    holds_slot: bool,
    policy: ProbePolicy = DEFAULT_POLICY,
) -> Transition | None:
    """Report a health probe's verdict to the instance's breaker.

    Args:
        result: the verdict.
        breaker: the breaker of the probed channel.
        now: monotonic seconds.
        holds_slot: whether the probe was admitted as the half-open probe (it must then
            release the slot, whatever the verdict).
        policy: the probe constants (the misconfiguration open lasts ``auth_backoff_s``).

    Returns:
        The transition to publish, if any.
    """
    kind = result.kind
    if kind is ProbeKind.OK:
        # Only the half-open path counts a probe success (see the module docstring).
        return breaker.on_success(now) if holds_slot else None
    if kind is ProbeKind.FAILURE:
        return breaker.on_failure(now, result.category or Category.UNKNOWN_ERROR)
    if result.wrong_chain:  # the chain's configuration: the shared breaker learns nothing
        return breaker.on_neutral(now) if holds_slot else None
    if kind is ProbeKind.MISCONFIGURED:  # opening frees any half-open slot
        return breaker.force_open(now, retry_after_s=policy.auth_backoff_s)
    return breaker.on_neutral(now) if holds_slot else None


def apply_recovery_probe(
    result: ProbeResult,
    breaker: CircuitBreaker,
    now: float,
    *,
    opened_at: float,
    policy: ProbePolicy = DEFAULT_POLICY,
) -> Transition | None:
    """Report the verdict of a probe sent to an OPEN circuit (probe-assisted recovery).

    Args:
        result: the verdict.
        breaker: the breaker of the probed channel.
        now: monotonic seconds.
        opened_at: the breaker's ``opened_at`` when the probe was sent: an answer that
            outlived its open period (the circuit reopened or recovered meanwhile) counts
            for nothing.
        policy: the probe constants (a misconfiguration opens for ``auth_backoff_s``).

    Returns:
        The transition to publish, if any: ``probe_recovery`` once enough successes came
        in a row, a bad-key open, or a change the breaker had not reported yet.
    """
    kind = result.kind
    if result.wrong_chain:  # the chain's configuration: nothing about the upstream's health
        return breaker.tick(now)
    if kind is ProbeKind.MISCONFIGURED:  # a bad key does not heal on its own
        return breaker.force_open(now, retry_after_s=policy.auth_backoff_s)
    if breaker.opened_at != opened_at:
        return breaker.tick(now)
    if kind is ProbeKind.OK:
        return breaker.on_probe_success(now)
    # A failure or a quota answer: the streak restarts; nothing counts against the breaker.
    return breaker.on_probe_failure(now)
