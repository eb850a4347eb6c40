"""The attempt planner: which provider next, with what timeout, when to hedge, when to stop.

One :class:`AttemptPlanner` serves one JSON-RPC request, sans-IO in the manner of h11's
``Connection`` or websockets' ``Protocol``: the adapter (``lasso.server.pipeline``) asks
:meth:`~AttemptPlanner.next` for a decision, carries it out, and reports what happened with
:meth:`~AttemptPlanner.receive`::

    planner = AttemptPlanner(candidates, m, now, budget_s, policy_for(m))
    while True:
        decision = planner.next(now)          # Dispatch | Wait | Cancel | Answer | Fail
        ...carry it out; for a Dispatch, later: planner.receive(Answered(...)) etc.

The rules (reference §2.1, §2.5, §2.6; CONTRACT §7 "Hedging"):

* candidates are tried in order, each at most once; a provider answering
  ``method_not_found`` is excluded with all its channels;
* the first attempt of a replay-safe read gets ``first_share`` (60 %) of the method's time
  budget, later ones what is left; nothing is dispatched with less than
  :data:`MIN_ATTEMPT_S` left, and the whole request ends by its deadline;
* a result, or an error that is the caller's fault (revert, invalid params), answers;
* quota and capability answers, refusals and failures before dispatch move on and give
  their dispatch back (at most ``max_dispatches`` sends reach providers);
* other failures move on only under a ``replay_safe`` policy; otherwise the request fails
  as indeterminate, since the provider may have acted on it;
* a hedge starts when the attempt in flight has not answered after the hedge delay, the
  dispatch cap and the chain's budget allow, and a provider not yet tried is left; the first
  answer that ends the request wins and every other attempt in flight is cancelled;
* when every provider that answered said the method does not exist, the error is ``-32601``.

Its phases and the facts each takes are the table of :mod:`.planner_table`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal, Protocol

from .attempts import (
    Answer,
    Cancel,
    Decision,
    Dispatch,
    DispatchPolicy,
    Fact,
    Fail,
    Wait,
    answer,
    exhausted_error,
    indeterminate_error,
    method_not_found_error,
    no_channels_error,
)
from .classify import Bucket, Category
from .hedge import HedgeBudget, hedge_delay_s
from .judge import Judgement
from .planner_table import TRANSITIONS, IllegalMove, Phase, transition_table_markdown

if TYPE_CHECKING:
    from lasso.config import HedgeConfig

    from .stats import MethodStats

__all__ = [
    "MIN_ATTEMPT_S",
    "TRANSITIONS",
    "AttemptPlanner",
    "Candidate",
    "IllegalMove",
    "Phase",
    "transition_table_markdown",
]

MIN_ATTEMPT_S = 0.025
"""No attempt is dispatched with less time than this left before the deadline."""


class Candidate(Protocol):
    """What the planner reads of a channel: who it is, and its latency rows per method."""

    @property
    def provider_id(self) -> str: ...

    @property
    def methods(self) -> Mapping[str, MethodStats]: ...


# Phase, TRANSITIONS, IllegalMove and the table's rendering live in .planner_table; they
# are re-exported because the adapters meet them through the planner.

_DEADLINE = Judgement(ok=False, category=Category.TIMEOUT, message="Request deadline exhausted")
_TIMEOUT = Judgement(ok=False, category=Category.TIMEOUT, message="Request timeout")
_CANCELLED = Judgement(
    ok=False, category=Category.NETWORK_ERROR, message="Upstream request cancelled"
)

# Enum members read through the class cost a lookup each; the hot path reads these.
_READY, _WAITING, _DONE = Phase.READY, Phase.WAITING, Phase.DONE
_DETERMINISTIC, _QUOTA, _CAPABILITY = Bucket.DETERMINISTIC, Bucket.QUOTA, Bucket.CAPABILITY
_METHOD_NOT_FOUND = Category.METHOD_NOT_FOUND
# The facts TRANSITIONS allows while waiting and once done, read from the table: the check
# then costs a set lookup instead of hashing an enum member per fact.
_WAITING_FACTS = frozenset(f for (p, f) in TRANSITIONS if p is Phase.WAITING)
_LATE_FACTS = frozenset(f for (p, f) in TRANSITIONS if p is Phase.DONE)

# First dispatches are the same value for every request of a method to a candidate
# position (the first share of its budget): built once, up to this many kept.
_FIRST: dict[tuple[int, int, float], Dispatch] = {}
_MAX_FIRST = 512


class _Hedging:
    """The hedging state of one request (only requests that may hedge have one)."""

    __slots__ = ("at", "budget", "config", "method_key", "primary", "sent", "skipped", "winner")

    def __init__(self, config: HedgeConfig, budget: HedgeBudget, method_key: str) -> None:
        self.config = config
        self.budget = budget
        self.method_key = method_key
        self.at: float | None = None  # when the next hedge falls due
        self.primary = 0  # the candidate of the latest attempt that was not a hedge
        self.sent = 0  # hedges sent (not refused)
        self.skipped = False  # a hedge fell due but the budget was spent
        self.winner: Literal["primary", "hedge"] | None = None


class AttemptPlanner:
    """The decisions for one request over an ordered list of candidate channels.

    Args:
        candidates: the channels to try, best first (``ChainRouter.candidates``).
        method: the JSON-RPC method, for error messages.
        now: monotonic seconds when the request started; the deadline is ``now + budget_s``.
        budget_s: the method's time budget (``methods.method_timeout_s``).
        policy: how often and how boldly to send (``attempts.policy_for(method)``).
        hedge: the hedge settings for this request, ``None`` for no hedging (ignored
            unless ``policy.hedge`` and two providers are there to race).
        budget: the chain's hedge budget (required with ``hedge``).
        method_key: the key of the candidates' latency rows (for the quantile delay).
        circuits: seconds until the soonest open circuit closes (``ChainRouter.retry_after``),
            for ``data.retry_after_ms`` of the final error.
    """

    __slots__ = (
        "_acted",
        "_admitted",
        "_attempts",
        "_budget_s",
        "_cancels",
        "_candidates",
        "_circuits",
        "_deadline",
        "_excluded",
        "_final",
        "_hedge",
        "_last",
        "_last_provider",
        "_method",
        "_missing",
        "_open",
        "_open_mask",
        "_phase",
        "_policy",
        "_refused_mask",
        "_spent",
        "_used",
    )

    def __init__(
        self,
        candidates: Sequence[Candidate],
        method: str,
        now: float,
        budget_s: float,
        policy: DispatchPolicy,
        *,
        hedge: HedgeConfig | None = None,
        budget: HedgeBudget | None = None,
        method_key: str = "",
        circuits: Callable[[float], float | None] | None = None,
    ) -> None:
        self._candidates = candidates
        self._method = method
        self._deadline = now + budget_s
        self._budget_s = budget_s
        self._policy = policy
        self._hedge: _Hedging | None = None
        if (
            hedge is not None
            and budget is not None
            and policy.hedge
            and len({c.provider_id for c in candidates}) >= 2  # somebody to race
        ):
            self._hedge = _Hedging(hedge, budget, method_key or method)
        self._circuits = circuits
        self._phase = _READY
        # attempt number -> (candidate index, provider, started at, is a hedge)
        self._attempts: list[tuple[int, str, float, bool]] = []
        self._open_mask = 0  # bit n: attempt n is in flight
        self._open = 0  # attempts in flight
        self._used = 0  # bit i: candidate i was dispatched to
        self._refused_mask = 0  # bit n: attempt n was refused (never went out)
        self._excluded: set[str] | None = None
        self._spent = 0  # sends that may have reached a provider (in flight included)
        self._admitted = 0  # attempts dispatched and not refused
        self._last: Judgement | None = None  # the latest failure
        self._last_provider: str | None = None
        self._missing = True  # every failure so far said "method not found" (and one did)
        self._acted = False  # a state-changing request failed after dispatch
        self._final: Answer | Fail | None = None
        self._cancels: list[Cancel] | None = None

    # -- read-only state ----------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def attempts(self) -> int:
        """Attempts dispatched and not refused (in flight and cancelled ones included)."""
        return self._admitted

    @property
    def may_hedge(self) -> bool:
        """Whether this request may hedge (its policy, settings and providers allow it)."""
        return self._hedge is not None

    @property
    def hedges(self) -> int:
        """Hedges sent (refused ones not counted)."""
        return 0 if self._hedge is None else self._hedge.sent

    @property
    def hedge_skipped(self) -> bool:
        """Whether a hedge fell due while the chain's budget was spent."""
        return self._hedge is not None and self._hedge.skipped

    @property
    def hedge_winner(self) -> Literal["primary", "hedge"] | None:
        """``primary`` or ``hedge`` when a hedged request was answered, else ``None``."""
        return None if self._hedge is None else self._hedge.winner

    @property
    def retries(self) -> int:
        """Failovers: attempts beyond the first that were not hedges."""
        hedging = self._hedge
        n = self._admitted - 1 - (0 if hedging is None else hedging.sent)
        return n if n > 0 else 0

    @property
    def tried(self) -> list[str]:
        """Providers sent to (in flight or finished), in order."""
        refused = self._refused_mask
        return [a[1] for n, a in enumerate(self._attempts) if not refused >> n & 1]

    @property
    def deadline(self) -> float:
        return self._deadline

    # -- decisions ---------------------------------------------------------------------------

    def next(self, now: float) -> Decision:
        """The next thing to do at ``now``.

        Returns:
            :class:`Dispatch` (report the attempt's fate with :meth:`receive`, then ask
            again), :class:`Wait` (ask again when an attempt finishes or at ``until``),
            :class:`Cancel` (stop that attempt, then ask again), or the terminal
            :class:`Answer` / :class:`Fail`, returned again on every later call.
        """
        phase = self._phase
        if phase is _DONE:
            cancels = self._cancels
            if cancels:
                return cancels.pop(0)
            final = self._final
            assert final is not None
            return final
        if phase is _WAITING:
            return self._waiting(now)
        if self._spent >= self._policy.max_dispatches:
            return self._finish(now)
        if self._used == 0 and self._candidates:  # the first dispatch: the best candidate
            i = 0
        else:
            i = self._pick(False)
            if i < 0:
                return self._finish(now)
        remaining = self._deadline - now
        if remaining < MIN_ATTEMPT_S:
            if self._last is None:
                self._last = _DEADLINE
            return self._finish(now)
        return self._dispatch(i, now, remaining, "failover" if self._admitted else "first")

    def _waiting(self, now: float) -> Decision:
        if now >= self._deadline:
            return self._expire(now)
        hedging = self._hedge
        if hedging is not None and hedging.at is not None and now >= hedging.at:
            decision = self._try_hedge(now)
            if decision is not None:
                return decision
        hedge_at = None if hedging is None else hedging.at
        deadline = self._deadline
        return Wait(until=deadline if hedge_at is None or hedge_at > deadline else hedge_at)

    def _pick(self, hedge: bool) -> int:
        """The first unused candidate not excluded (for a hedge: not yet tried), or -1."""
        used, excluded = self._used, self._excluded
        tried = self.tried if hedge else ()
        for i, cand in enumerate(self._candidates):
            if used >> i & 1:
                continue
            if excluded is None and not hedge:
                return i
            provider = cand.provider_id
            if excluded is not None and provider in excluded:
                continue
            if provider in tried:
                continue
            return i
        return -1

    def _dispatch(
        self,
        i: int,
        now: float,
        remaining: float,
        reason: Literal["first", "failover", "hedge"],
    ) -> Dispatch:
        share = self._policy.first_share
        timeout = remaining
        shared = False  # the usual first dispatch: a value built once (see _FIRST)
        if share is not None and self._spent == 0:
            budget = share * self._budget_s
            if budget < MIN_ATTEMPT_S:
                budget = MIN_ATTEMPT_S
            if budget <= remaining:
                timeout = budget
                shared = reason == "first"
        attempts = self._attempts
        number = len(attempts)
        hedge = reason == "hedge"
        attempts.append((i, self._candidates[i].provider_id, now, hedge))
        self._open_mask |= 1 << number
        self._open += 1
        self._used |= 1 << i
        self._spent += 1
        self._admitted += 1
        self._phase = _WAITING
        hedging = self._hedge
        if (
            hedging is not None
            and (hedge or self._open == 1)
            and hedging.sent < hedging.config.max_hedges
        ):
            if not hedge:
                hedging.primary = i
            # The delay behind the attempt being hedged (the next hedge follows it again).
            row = self._candidates[hedging.primary].methods.get(hedging.method_key)
            hedging.at = now + hedge_delay_s(hedging.config, row)
        if shared:
            key = (number, i, timeout)
            decision = _FIRST.get(key)
            if decision is None:
                decision = Dispatch(attempt=number, candidate=i, timeout_s=timeout, reason=reason)
                if len(_FIRST) < _MAX_FIRST:
                    _FIRST[key] = decision
            return decision
        return Dispatch(attempt=number, candidate=i, timeout_s=timeout, reason=reason)

    def _try_hedge(self, now: float) -> Dispatch | None:
        hedging = self._hedge
        assert hedging is not None
        hedging.at = None
        remaining = self._deadline - now
        if self._spent >= self._policy.max_dispatches or remaining < MIN_ATTEMPT_S:
            return None
        i = self._pick(True)
        if i < 0:
            return None
        if not hedging.budget.try_spend(now, hedging.config.budget_percent):
            hedging.skipped = True
            return None
        hedging.sent += 1
        return self._dispatch(i, now, remaining, "hedge")

    # -- facts ---------------------------------------------------------------------------------

    def receive(self, fact: Fact) -> bool:
        """Take in what happened to an attempt.

        Returns:
            True when the fact counts; False when it came after the request ended (a
            losing attempt's late outcome): record it as neither success nor failure.

        Raises:
            IllegalMove: the fact is about an attempt that was never dispatched, or comes
                twice for one attempt while the request is still running.
        """
        number = fact.attempt
        if not 0 <= number < len(self._attempts):
            raise IllegalMove(f"{fact.kind} for unknown attempt {number}")
        phase = self._phase
        if fact.kind not in (_WAITING_FACTS if phase is _WAITING else _LATE_FACTS):
            raise IllegalMove(f"{fact.kind} in phase {phase}")  # READY: nothing in flight
        if phase is _DONE:
            return False
        bit = 1 << number
        if not self._open_mask & bit:
            raise IllegalMove(f"{fact.kind} for attempt {number}, which already finished")
        self._open_mask ^= bit
        self._open -= 1
        match fact.kind:
            case "answered":
                judgement = fact.judgement
                if judgement.ok and self._hedge is None:  # the common case, made short
                    self._final = answer(number, judgement)
                    self._phase = _DONE
                    return True
                self._answered(number, judgement)
            case "refused":
                self._refused(number)
            case "failed":
                failure = Judgement(ok=False, category=fact.category, message=fact.message)
                self._failed(number, failure, fact.dispatched)
            case "timed_out":
                self._failed(number, _TIMEOUT, fact.dispatched)
            case "cancelled":
                self._failed(number, _CANCELLED, True)
        if self._final is None and self._open == 0:
            self._phase = _READY
            if self._hedge is not None:
                self._hedge.at = None
        return True

    def _refused(self, number: int) -> None:
        _, _, started, hedge = self._attempts[number]
        self._spent -= 1
        self._admitted -= 1
        self._refused_mask |= 1 << number
        if hedge:
            hedging = self._hedge
            assert hedging is not None
            hedging.sent -= 1
            hedging.budget.refund(started)
            hedging.at = started  # still due: try the next provider at once

    def _answered(self, number: int, judgement: Judgement) -> None:
        if judgement.ok:
            self._win(number, judgement)
            return
        bucket = judgement.bucket
        if bucket is _DETERMINISTIC:  # the caller's fault: the provider's error answers
            self._win(number, judgement)
            return
        self._note_failure(number, judgement)
        if bucket is _QUOTA or bucket is _CAPABILITY:
            self._spent -= 1  # the provider refused: it did not act on the request
            if judgement.category is _METHOD_NOT_FOUND:
                if self._excluded is None:
                    self._excluded = set()
                self._excluded.add(self._attempts[number][1])
            else:
                self._missing = False
            return
        self._missing = False
        self._after_dispatch_failure(number)

    def _failed(self, number: int, failure: Judgement, dispatched: bool) -> None:
        self._note_failure(number, failure)
        self._missing = False
        if not dispatched:
            self._spent -= 1
            return
        self._after_dispatch_failure(number)

    def _note_failure(self, number: int, failure: Judgement) -> None:
        self._last = failure
        self._last_provider = self._attempts[number][1]

    def _after_dispatch_failure(self, number: int) -> None:
        policy = self._policy
        if policy.writes:
            self._acted = True
        if not policy.replay_safe:
            provider = self._attempts[number][1]
            last = self._last
            assert last is not None
            self._end(Fail(error=indeterminate_error(provider, last.message), provider=provider))

    def _win(self, number: int, judgement: Judgement) -> None:
        hedging = self._hedge
        if hedging is not None and hedging.sent:
            hedging.winner = "hedge" if self._attempts[number][3] else "primary"
        self._end(answer(number, judgement))

    def _end(self, final: Answer | Fail, *, overdue: bool = False) -> None:
        """Finish: every attempt still in flight is cancelled first."""
        mask = self._open_mask
        if mask:
            cancels = self._cancels = []
            for number, (_, _, _, hedge) in enumerate(self._attempts):
                if mask >> number & 1:
                    cancels.append(Cancel(attempt=number, overdue=overdue or not hedge))
            self._open_mask = 0
            self._open = 0
        self._final = final
        self._phase = _DONE
        if self._hedge is not None:
            self._hedge.at = None

    def _expire(self, now: float) -> Decision:
        """The deadline passed with attempts in flight: each is a timeout after dispatch."""
        mask = self._open_mask
        for number in range(len(self._attempts)):
            if mask >> number & 1:
                self._note_failure(number, _DEADLINE)
                self._missing = False
                self._acted = self._acted or self._policy.writes
        self._end(self._failure(now), overdue=True)
        return self.next(now)

    def _finish(self, now: float) -> Fail:
        final = self._failure(now)
        self._end(final)
        return final

    def _failure(self, now: float) -> Fail:
        provider = self._last_provider
        if self._admitted == 0:
            circuits = self._circuits(now) if self._circuits is not None else None
            return Fail(error=no_channels_error(self._method, circuits))
        if self._missing and self._last is not None:
            return Fail(error=method_not_found_error(self.tried), provider=provider)
        if self._acted and provider is not None and self._last is not None:
            error = indeterminate_error(provider, self._last.message)
            return Fail(error=error, provider=provider)
        circuits = self._circuits(now) if self._circuits is not None else None
        error = exhausted_error(self._last, provider, self.tried, circuits)
        return Fail(error=error, provider=provider)

    def __repr__(self) -> str:
        return (
            f"<AttemptPlanner {self._method} {self._phase} attempts={self._admitted} "
            f"in_flight={self._open} spent={self._spent}/{self._policy.max_dispatches} "
            f"hedges={self.hedges}>"
        )
