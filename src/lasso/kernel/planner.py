"""The attempt planner: which provider next, with what timeout, when to hedge, when to stop.

One :class:`AttemptPlanner` serves one JSON-RPC request, sans-IO in the manner of h11's
``Connection`` or websockets' ``Protocol``: the adapter (``lasso.server.pipeline``) asks
:meth:`~AttemptPlanner.next` for a decision, carries it out, and reports what happened with
:meth:`~AttemptPlanner.receive`::

    planner = AttemptPlanner(candidates, method=m, now=now, budget_s=b, policy=policy_for(m))
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

Phases and facts (:data:`TRANSITIONS`; any other pair is an :class:`IllegalMove`)::

    READY --Dispatch--> WAITING --answer / error--> DONE
      ^                   |  ^
      | nothing in flight |  | a hedge Dispatch, or a failure with another attempt in flight
      +--- a failure -----+--+
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from types import MappingProxyType
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
    exhausted_error,
    indeterminate_error,
    method_not_found_error,
    no_channels_error,
)
from .classify import Bucket, Category
from .hedge import HedgeBudget, hedge_delay_s
from .judge import Judgement

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


class Phase(StrEnum):
    READY = "ready"  # nothing in flight: the next decision dispatches or ends the request
    WAITING = "waiting"  # attempts in flight: wait, hedge, or give up at the deadline
    DONE = "done"  # answered or failed: losers are cancelled, late facts are discarded


class IllegalMove(RuntimeError):
    """A fact the planner cannot take in its phase, or about an unknown attempt (adapter bug)."""


_P = Phase
TRANSITIONS: Mapping[tuple[Phase, str], str] = MappingProxyType(
    {
        (_P.WAITING, "refused"): "not sent: its dispatch is given back; READY if none in flight",
        (_P.WAITING, "answered"): (
            "a result or the caller's error: DONE (answer); quota or capability: fail over; "
            "a provider failure: fail over when replay-safe, else DONE (indeterminate)"
        ),
        (_P.WAITING, "failed"): ("before dispatch: fail over; after: as a provider failure"),
        (_P.WAITING, "timed_out"): "as a provider failure after dispatch",
        (_P.WAITING, "cancelled"): "cancelled from outside: as a failure after dispatch",
        (_P.DONE, "answered"): "a loser's late answer: discarded (neither success nor failure)",
        (_P.DONE, "failed"): "a loser's late failure: discarded",
        (_P.DONE, "timed_out"): "a loser's late timeout: discarded",
        (_P.DONE, "cancelled"): "a loser's cancellation: discarded",
    }
)
"""``(phase, fact kind) → rule``; a missing row is an illegal move. Decisions by phase:
READY dispatches the next candidate or fails; WAITING waits, hedges when due, or cancels
everything and fails at the deadline; DONE cancels the losers, then repeats the terminal
:class:`Answer` or :class:`Fail`."""

_DEADLINE = Judgement(ok=False, category=Category.TIMEOUT, message="Request deadline exhausted")
_TIMEOUT = "Request timeout"


def transition_table_markdown() -> str:
    """Render :data:`TRANSITIONS` as a Markdown table for the docs."""
    lines = ["| phase | fact | rule |", "|---|---|---|"]
    for (phase, fact), rule in TRANSITIONS.items():
        lines.append(f"| {phase} | `{fact}` | {rule} |")
    return "\n".join(lines)


class _Attempt:
    __slots__ = ("candidate", "hedge", "open", "provider", "started")

    def __init__(self, candidate: int, provider: str, started: float, hedge: bool) -> None:
        self.candidate = candidate
        self.provider = provider
        self.started = started
        self.hedge = hedge
        self.open = True


class AttemptPlanner:
    """The decisions for one request over an ordered list of candidate channels.

    Args:
        candidates: the channels to try, best first (``ChainRouter.candidates``).
        method: the JSON-RPC method, for error messages.
        now: monotonic seconds when the request started; the deadline is ``now + budget_s``.
        budget_s: the method's time budget (``methods.method_timeout_s``).
        policy: how often and how boldly to send (``attempts.policy_for(method)``).
        hedge: the hedge settings for this request, ``None`` for no hedging (ignored
            unless ``policy.hedge``).
        budget: the chain's hedge budget (required with ``hedge``).
        method_key: the key of the candidates' latency rows (for the quantile delay).
        circuits: seconds until the soonest open circuit closes (``ChainRouter.retry_after``),
            for ``data.retry_after_ms`` of the final error.
    """

    __slots__ = (
        "_acted",
        "_admitted",
        "_attempts",
        "_budget",
        "_budget_s",
        "_cancels",
        "_candidates",
        "_circuits",
        "_deadline",
        "_excluded",
        "_final",
        "_hedge",
        "_hedge_at",
        "_last",
        "_last_provider",
        "_method",
        "_method_key",
        "_missing",
        "_open",
        "_phase",
        "_policy",
        "_primary",
        "_spent",
        "_tried",
        "_used",
        "hedge_skipped",
        "hedge_winner",
        "hedges",
    )

    def __init__(
        self,
        candidates: Sequence[Candidate],
        *,
        method: str,
        now: float,
        budget_s: float,
        policy: DispatchPolicy,
        hedge: HedgeConfig | None = None,
        budget: HedgeBudget | None = None,
        method_key: str = "",
        circuits: Callable[[float], float | None] | None = None,
    ) -> None:
        self._candidates = candidates
        self._method = method
        self._method_key = method_key or method
        self._deadline = now + budget_s
        self._budget_s = budget_s
        self._policy = policy
        if hedge is not None and (
            not policy.hedge
            or budget is None
            or len({c.provider_id for c in candidates}) < 2  # nobody to race
        ):
            hedge = None
        self._hedge = hedge
        self._budget = budget
        self._circuits = circuits
        self._phase = _P.READY
        self._attempts: list[_Attempt] = []
        self._used = [False] * len(candidates)
        self._tried: list[str] = []  # providers sent to (in flight or finished), in order
        self._excluded: set[str] | None = None
        self._open = 0  # attempts in flight
        self._spent = 0  # sends that may have reached a provider (in flight included)
        self._admitted = 0  # attempts dispatched and not refused
        self._last: Judgement | None = None  # the latest failure
        self._last_provider: str | None = None
        self._missing = True  # every failure so far said "method not found" (and one did)
        self._acted = False  # a state-changing request failed after dispatch
        self._hedge_at: float | None = None
        self._primary = 0  # the candidate of the latest attempt that was not a hedge
        self._final: Answer | Fail | None = None
        self._cancels: list[Cancel] = []
        self.hedges = 0  # hedge attempts sent (not refused)
        self.hedge_skipped = False  # a hedge fell due but the budget was spent
        self.hedge_winner: Literal["primary", "hedge"] | None = None

    # -- read-only state ----------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def attempts(self) -> int:
        """Attempts dispatched and not refused (in flight and cancelled ones included)."""
        return self._admitted

    @property
    def retries(self) -> int:
        """Failovers: attempts beyond the first that were not hedges."""
        return max(0, self._admitted - 1 - self.hedges)

    @property
    def tried(self) -> list[str]:
        """Providers sent to, in order (a copy)."""
        return list(self._tried)

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
        if phase is _P.DONE:
            if self._cancels:
                return self._cancels.pop(0)
            final = self._final
            assert final is not None
            return final
        if phase is _P.WAITING:
            return self._waiting(now)
        if self._spent >= self._policy.max_dispatches:
            return self._finish(now)
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
        hedge_at = self._hedge_at
        if hedge_at is not None and now >= hedge_at:
            decision = self._try_hedge(now)
            if decision is not None:
                return decision
            hedge_at = self._hedge_at
        deadline = self._deadline
        return Wait(until=deadline if hedge_at is None or hedge_at > deadline else hedge_at)

    def _pick(self, hedge: bool) -> int:
        """The first unused candidate not excluded (for a hedge: not yet tried), or -1."""
        used, excluded = self._used, self._excluded
        for i, cand in enumerate(self._candidates):
            if used[i]:
                continue
            provider = cand.provider_id
            if excluded is not None and provider in excluded:
                continue
            if hedge and provider in self._tried:
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
        policy = self._policy
        share = policy.first_share
        if share is not None and self._spent == 0:
            budget = share * self._budget_s
            timeout = min(remaining, budget if budget > MIN_ATTEMPT_S else MIN_ATTEMPT_S)
        else:
            timeout = remaining
        provider = self._candidates[i].provider_id
        number = len(self._attempts)
        hedge = reason == "hedge"
        self._attempts.append(_Attempt(i, provider, now, hedge))
        self._used[i] = True
        self._tried.append(provider)
        self._spent += 1
        self._admitted += 1
        self._open += 1
        self._phase = _P.WAITING
        config = self._hedge
        if config is not None and (hedge or self._open == 1) and self.hedges < config.max_hedges:
            if not hedge:
                self._primary = i
            # The delay behind the attempt being hedged (the next hedge follows it again).
            row = self._candidates[self._primary].methods.get(self._method_key)
            self._hedge_at = now + hedge_delay_s(config, row)
        return Dispatch(attempt=number, candidate=i, timeout_s=timeout, reason=reason)

    def _try_hedge(self, now: float) -> Dispatch | None:
        config = self._hedge
        assert config is not None and self._budget is not None
        self._hedge_at = None
        remaining = self._deadline - now
        if self._spent >= self._policy.max_dispatches or remaining < MIN_ATTEMPT_S:
            return None
        i = self._pick(True)
        if i < 0:
            return None
        if not self._budget.try_spend(now, config.budget_percent):
            self.hedge_skipped = True
            return None
        self.hedges += 1
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
        index = fact.attempt
        if not 0 <= index < len(self._attempts):
            raise IllegalMove(f"{fact.kind} for unknown attempt {index}")
        attempt = self._attempts[index]
        if self._phase is _P.DONE:
            if fact.kind == "refused":
                raise IllegalMove("refused after the request ended")
            return False
        if not attempt.open:
            raise IllegalMove(f"{fact.kind} for attempt {index}, which already finished")
        attempt.open = False
        self._open -= 1
        match fact.kind:
            case "refused":
                self._refused(attempt)
            case "answered":
                self._answered(index, attempt, fact.judgement)
            case "failed":
                failure = Judgement(ok=False, category=fact.category, message=fact.message)
                self._failed(attempt, failure, fact.dispatched)
            case "timed_out":
                failure = Judgement(ok=False, category=Category.TIMEOUT, message=_TIMEOUT)
                self._failed(attempt, failure, fact.dispatched)
            case "cancelled":
                failure = Judgement(
                    ok=False, category=Category.NETWORK_ERROR, message="Upstream request cancelled"
                )
                self._failed(attempt, failure, True)
        if self._final is None and self._open == 0:
            self._phase = _P.READY
            self._hedge_at = None
        return True

    def _refused(self, attempt: _Attempt) -> None:
        self._spent -= 1
        self._admitted -= 1
        tried = self._tried
        del tried[len(tried) - 1 - tried[::-1].index(attempt.provider)]
        if attempt.hedge:
            self.hedges -= 1
            assert self._budget is not None
            self._budget.refund(attempt.started)
            self._hedge_at = attempt.started  # still due: try the next provider at once

    def _answered(self, index: int, attempt: _Attempt, judgement: Judgement) -> None:
        if judgement.ok:
            self._win(index, attempt, judgement)
            return
        bucket = judgement.bucket
        if bucket is Bucket.DETERMINISTIC:  # the caller's fault: the provider's error answers
            self._win(index, attempt, judgement)
            return
        self._note_failure(attempt, judgement)
        if bucket is Bucket.QUOTA or bucket is Bucket.CAPABILITY:
            self._spent -= 1  # the provider refused: it did not act on the request
            if judgement.category is Category.METHOD_NOT_FOUND:
                if self._excluded is None:
                    self._excluded = set()
                self._excluded.add(attempt.provider)
            else:
                self._missing = False
            return
        self._missing = False
        self._after_dispatch_failure(attempt)

    def _failed(self, attempt: _Attempt, failure: Judgement, dispatched: bool) -> None:
        self._note_failure(attempt, failure)
        self._missing = False
        if not dispatched:
            self._spent -= 1
            return
        self._after_dispatch_failure(attempt)

    def _note_failure(self, attempt: _Attempt, failure: Judgement) -> None:
        self._last = failure
        self._last_provider = attempt.provider

    def _after_dispatch_failure(self, attempt: _Attempt) -> None:
        policy = self._policy
        if policy.writes:
            self._acted = True
        if not policy.replay_safe:
            last = self._last
            assert last is not None
            error = indeterminate_error(attempt.provider, last.message)
            self._end(Fail(error=error, provider=attempt.provider))

    def _win(self, index: int, attempt: _Attempt, judgement: Judgement) -> None:
        if self.hedges:
            self.hedge_winner = "hedge" if attempt.hedge else "primary"
        self._end(Answer(attempt=index, judgement=judgement))

    def _end(self, final: Answer | Fail, *, overdue: bool = False) -> None:
        """Finish: every attempt still in flight is cancelled first."""
        for number, other in enumerate(self._attempts):
            if other.open:
                other.open = False
                self._open -= 1
                self._cancels.append(Cancel(attempt=number, overdue=overdue or not other.hedge))
        self._final = final
        self._phase = _P.DONE
        self._hedge_at = None

    def _expire(self, now: float) -> Decision:
        """The deadline passed with attempts in flight: each is a timeout after dispatch."""
        for attempt in self._attempts:
            if attempt.open:
                self._note_failure(attempt, _DEADLINE)
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
            return Fail(error=method_not_found_error(list(self._tried)), provider=provider)
        if self._acted and provider is not None and self._last is not None:
            error = indeterminate_error(provider, self._last.message)
            return Fail(error=error, provider=provider)
        circuits = self._circuits(now) if self._circuits is not None else None
        error = exhausted_error(self._last, provider, list(self._tried), circuits)
        return Fail(error=error, provider=provider)

    def __repr__(self) -> str:
        return (
            f"<AttemptPlanner {self._method} {self._phase} attempts={self._admitted} "
            f"in_flight={self._open} spent={self._spent}/{self._policy.max_dispatches} "
            f"hedges={self.hedges}>"
        )
