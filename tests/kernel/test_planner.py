"""The attempt planner, driven without an event loop: a fake clock, scripted facts, and
generated sequences of outcomes checked against its invariants."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lasso.config import HedgeConfig
from lasso.kernel.attempts import (
    READ,
    WRITE,
    Answer,
    Answered,
    Cancel,
    Cancelled,
    Dispatch,
    DispatchPolicy,
    Fact,
    Fail,
    Refused,
    TimedOut,
    TransportFailed,
    Wait,
)
from lasso.kernel.classify import Category
from lasso.kernel.clock import FakeClock
from lasso.kernel.hedge import HedgeBudget
from lasso.kernel.judge import ACCEPTED, Judgement
from lasso.kernel.planner import (
    MIN_ATTEMPT_S,
    AttemptPlanner,
    IllegalMove,
    Phase,
)
from lasso.kernel.stats import MethodStats

IDEMPOTENT_WRITE = DispatchPolicy(
    name="idempotent_write",
    max_dispatches=3,
    replay_safe=True,
    writes=True,
    hedge=False,
    first_share=None,
)  # attempts.IDEMPOTENT_WRITE without the first share: the planner's rules, isolated


@dataclass
class Cand:
    provider_id: str
    methods: dict[str, MethodStats] = field(default_factory=dict)


def cands(*ids: str) -> list[Cand]:
    return [Cand(p) for p in ids]


def fail(category: Category, **kw: Any) -> Judgement:
    return Judgement(ok=False, category=category, **kw)


REVERT = fail(Category.EXECUTION_REVERT, error={"code": 3, "message": "reverted"}, id_ok=True)
SERVER = fail(Category.SERVER_ERROR, message="Provider infrastructure error (HTTP 500)")
QUOTA = fail(Category.RATE_LIMIT, retry_after_s=2.0, error={"code": 429, "message": "slow"})
CAPABILITY = fail(Category.CAPABILITY_VIOLATION, error={"code": -32000, "message": "pruned"})
MISSING = fail(Category.METHOD_NOT_FOUND, error={"code": -32601, "message": "Method not found"})


def planner(
    candidates: list[Cand],
    clock: FakeClock,
    *,
    policy: DispatchPolicy = READ,
    budget_s: float = 10.0,
    hedge: HedgeConfig | None = None,
    budget: HedgeBudget | None = None,
    circuits: float | None = None,
) -> AttemptPlanner:
    if hedge is not None and budget is None:
        budget = HedgeBudget()
        for _ in range(1000):
            budget.note_request(clock.now())
    return AttemptPlanner(
        candidates,
        method="eth_call",
        now=clock.now(),
        budget_s=budget_s,
        policy=policy,
        hedge=hedge,
        budget=budget,
        method_key="eth_call",
        circuits=lambda now: circuits,
    )


def dispatch(p: AttemptPlanner, clock: FakeClock) -> Dispatch:
    d = p.next(clock.now())
    assert isinstance(d, Dispatch), d
    return d


def answered(d: Dispatch, judgement: Judgement = ACCEPTED) -> Answered:
    return Answered(attempt=d.attempt, judgement=judgement)


def lost(attempt: int, *, dispatched: bool = True) -> TransportFailed:
    """A connection failure: reset after sending, or refused before."""
    return TransportFailed(
        attempt=attempt,
        category=Category.NETWORK_ERROR,
        message="Upstream connection lost" if dispatched else "Upstream connection failed",
        dispatched=dispatched,
        provider_fault=True,
    )


# -- one attempt at a time -------------------------------------------------------------


def test_single_answer() -> None:
    """One dispatch with 60 % of the budget, then the answer: the common path."""
    clock = FakeClock()
    p = planner(cands("a"), clock)
    d = dispatch(p, clock)
    assert (d.attempt, d.candidate, d.reason, d.timeout_s) == (0, 0, "first", pytest.approx(6.0))
    assert p.phase is Phase.WAITING
    assert p.receive(answered(d))
    final = p.next(clock.now())
    assert final == Answer(attempt=0, judgement=ACCEPTED)
    assert p.next(clock.now()) is final  # terminal decisions repeat
    assert (p.attempts, p.retries, p.hedges, p.hedge_winner) == (1, 0, 0, None)
    assert "attempts=1" in repr(p) and p.phase is Phase.DONE


def test_no_candidates_and_all_refused_mean_no_channels() -> None:
    """Nothing to try, or nothing admitted: -32000 with the circuits' retry-after."""
    clock = FakeClock()
    none = planner([], clock, circuits=4.0).next(clock.now())
    assert isinstance(none, Fail)
    assert none.error["data"] == {"retry_after_ms": 4000}
    p = planner(cands("a", "b"), clock)
    for _ in range(2):
        d = dispatch(p, clock)
        p.receive(Refused(attempt=d.attempt))
    final = p.next(clock.now())
    assert isinstance(final, Fail)
    assert final.error == {"code": -32000, "message": "No available providers for eth_call"}
    assert p.tried == [] and p.attempts == 0


def test_read_fails_over_then_answers() -> None:
    """Provider failures move on; later attempts get the rest of the budget."""
    clock = FakeClock()
    p = planner(cands("a", "b", "c"), clock)
    first = dispatch(p, clock)
    clock.advance(1.0)
    p.receive(answered(first, SERVER))
    second = dispatch(p, clock)
    assert (second.candidate, second.reason, second.timeout_s) == (1, "failover", 9.0)
    p.receive(lost(1))
    third = dispatch(p, clock)
    p.receive(answered(third))
    assert p.next(clock.now()) == Answer(attempt=2, judgement=ACCEPTED)
    assert p.retries == 2 and p.tried == ["a", "b", "c"]


def test_three_sends_at_most_then_exhausted() -> None:
    """A read reaches at most three providers; the error names them and the last reason."""
    clock = FakeClock()
    p = planner(cands("a", "b", "c", "d"), clock, circuits=None)
    for _ in range(3):
        d = dispatch(p, clock)
        p.receive(answered(d, SERVER))
    final = p.next(clock.now())
    assert isinstance(final, Fail) and final.provider == "c"
    assert (
        final.error["message"] == "All providers failed: Provider infrastructure error (HTTP 500)"
    )
    assert final.error["data"]["providers_tried"] == ["a", "b", "c"]


def test_quota_and_capability_answers_give_their_send_back() -> None:
    """Refusals by the provider do not count toward the three sends."""
    clock = FakeClock()
    p = planner(cands("a", "b", "c", "d", "e"), clock)
    for judgement in (QUOTA, CAPABILITY, QUOTA, SERVER):
        p.receive(answered(dispatch(p, clock), judgement))
    last = dispatch(p, clock)
    assert last.candidate == 4
    p.receive(answered(last))
    assert isinstance(p.next(clock.now()), Answer)


def test_deterministic_error_answers_at_once() -> None:
    """The caller's fault is the answer: no failover."""
    clock = FakeClock()
    p = planner(cands("a", "b"), clock)
    d = dispatch(p, clock)
    p.receive(answered(d, REVERT))
    assert p.next(clock.now()) == Answer(attempt=0, judgement=REVERT)


def test_method_not_found_everywhere_is_32601() -> None:
    """A provider without the method is excluded (all its channels); all of them: -32601."""
    clock = FakeClock()
    p = planner(cands("a", "a", "b"), clock)  # a's HTTP and WS channels, then b
    p.receive(answered(dispatch(p, clock), MISSING))
    d = dispatch(p, clock)
    assert d.candidate == 2  # a's second channel is skipped
    p.receive(answered(d, MISSING))
    final = p.next(clock.now())
    assert isinstance(final, Fail)
    assert final.error == {
        "code": -32601,
        "message": "Method not found",
        "data": {"providers_tried": ["a", "b"]},
    }


def test_method_not_found_and_another_failure_is_exhausted() -> None:
    """When another provider failed otherwise, the method may exist: the usual -32000."""
    clock = FakeClock()
    p = planner(cands("a", "b"), clock)
    p.receive(answered(dispatch(p, clock), MISSING))
    p.receive(answered(dispatch(p, clock), SERVER))
    final = p.next(clock.now())
    assert isinstance(final, Fail) and final.error["code"] == -32000


def test_capability_then_nothing_left_is_exhausted() -> None:
    """Capability refusals alone end as -32000 with the provider's last words."""
    clock = FakeClock()
    p = planner(cands("a"), clock)
    p.receive(answered(dispatch(p, clock), CAPABILITY))
    final = p.next(clock.now())
    assert isinstance(final, Fail)
    assert final.error["data"]["last_error"]["message"] == "pruned"


# -- writes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fact",
    [
        TimedOut(attempt=0),
        lost(0),
        Answered(attempt=0, judgement=SERVER),
        Cancelled(attempt=0),
    ],
    ids=["timeout", "reset", "http500", "cancelled"],
)
def test_write_failing_after_dispatch_is_indeterminate(fact: Fact) -> None:
    """A write that may have acted is never sent again; the error says so."""
    clock = FakeClock()
    p = planner(cands("a", "b"), clock, policy=WRITE)
    d = dispatch(p, clock)
    assert d.timeout_s == 10.0  # no first-attempt share for writes
    p.receive(fact)
    final = p.next(clock.now())
    assert isinstance(final, Fail) and final.provider == "a"
    assert final.error["message"] == "Upstream dispatch outcome is indeterminate"


def test_write_moves_on_when_nothing_was_sent() -> None:
    """Connection refused, a full pool or a quota answer leave the write unsent: next one."""
    clock = FakeClock()
    p = planner(cands("a", "b", "c", "d"), clock, policy=WRITE)
    d = dispatch(p, clock)
    p.receive(lost(d.attempt, dispatched=False))
    d = dispatch(p, clock)
    p.receive(answered(d, QUOTA))
    d = dispatch(p, clock)
    p.receive(TimedOut(attempt=d.attempt, dispatched=False))
    d = dispatch(p, clock)
    p.receive(answered(d))
    assert isinstance(p.next(clock.now()), Answer)


def test_idempotent_write_retries_but_reports_indeterminate() -> None:
    """Issue 13's idempotent-write policy: retried elsewhere; if all fail, indeterminate."""
    clock = FakeClock()
    p = planner(cands("a", "b"), clock, policy=IDEMPOTENT_WRITE)
    p.receive(TimedOut(attempt=dispatch(p, clock).attempt))
    p.receive(answered(dispatch(p, clock), CAPABILITY))
    final = p.next(clock.now())
    assert isinstance(final, Fail)
    assert final.error["message"] == "Upstream dispatch outcome is indeterminate"


# -- deadline ---------------------------------------------------------------------------------


def test_no_dispatch_without_time_left() -> None:
    """With less than MIN_ATTEMPT_S left the request ends with a timeout reason."""
    clock = FakeClock()
    p = planner(cands("a", "b"), clock, budget_s=1.0)
    d = dispatch(p, clock)
    assert d.timeout_s == pytest.approx(0.6)
    clock.advance(1.0 - MIN_ATTEMPT_S / 2)
    p.receive(TimedOut(attempt=d.attempt))
    final = p.next(clock.now())
    assert isinstance(final, Fail)
    assert final.error["data"]["last_error"]["code"] == -32007
    fresh = planner(cands("a"), FakeClock(), budget_s=MIN_ATTEMPT_S / 2)
    out = fresh.next(1000.0)  # nothing was ever sent: reported as no provider available
    assert isinstance(out, Fail)
    assert out.error == {"code": -32000, "message": "No available providers for eth_call"}


def test_tiny_budget_first_attempt_gets_the_minimum() -> None:
    """60 % of a tiny budget is raised to MIN_ATTEMPT_S, never past the deadline."""
    clock = FakeClock()
    d = dispatch(planner(cands("a"), clock, budget_s=0.03), clock)
    assert d.timeout_s == pytest.approx(MIN_ATTEMPT_S)


# -- hedging --------------------------------------------------------------------------------

HEDGE = HedgeConfig(delay_ms=100)


def test_hedge_wins_and_the_primary_is_cancelled() -> None:
    """After the delay a second provider is raced; its answer wins, the primary is
    cancelled as overdue (its elapsed time is a lower bound)."""
    clock = FakeClock()
    p = planner(cands("a", "b"), clock, hedge=HEDGE)
    first = dispatch(p, clock)
    wait = p.next(clock.now())
    assert wait == Wait(until=pytest.approx(clock.now() + 0.1))
    clock.advance(0.1)
    hedge = dispatch(p, clock)
    assert (hedge.candidate, hedge.reason, hedge.timeout_s) == (1, "hedge", pytest.approx(9.9))
    assert isinstance(p.next(clock.now()), Wait)
    p.receive(answered(hedge))
    assert p.next(clock.now()) == Cancel(attempt=first.attempt, overdue=True)
    assert p.next(clock.now()) == Answer(attempt=1, judgement=ACCEPTED)
    assert (p.hedges, p.hedge_winner, p.retries) == (1, "hedge", 0)
    assert not p.receive(answered(first))  # a late answer is discarded


def test_primary_wins_and_the_hedge_is_cancelled() -> None:
    """When the primary answers first the hedge is cancelled, not overdue."""
    clock = FakeClock()
    p = planner(cands("a", "b"), clock, hedge=HEDGE)
    first = dispatch(p, clock)
    clock.advance(0.2)
    hedge = dispatch(p, clock)
    p.receive(answered(first))
    assert p.next(clock.now()) == Cancel(attempt=hedge.attempt, overdue=False)
    assert isinstance(p.next(clock.now()), Answer)
    assert p.hedge_winner == "primary"


def test_hedge_never_goes_to_a_provider_already_tried() -> None:
    """The primary's other channel is skipped; without another provider, no hedge."""
    clock = FakeClock()
    p = planner(cands("a", "a", "b"), clock, hedge=HEDGE)
    dispatch(p, clock)
    clock.advance(0.1)
    assert dispatch(p, clock).candidate == 2
    lone = planner(cands("a", "a"), clock, hedge=HEDGE)  # one provider: hedging off
    dispatch(lone, clock)
    assert lone.next(clock.now()) == Wait(until=pytest.approx(lone.deadline))


def test_spent_budget_skips_the_hedge() -> None:
    """No budget: the hedge is skipped (reported), and the request just waits."""
    clock = FakeClock()
    p = planner(cands("a", "b"), clock, hedge=HEDGE, budget=HedgeBudget())
    dispatch(p, clock)
    clock.advance(0.1)
    assert p.next(clock.now()) == Wait(until=pytest.approx(p.deadline))
    assert p.hedge_skipped and p.hedges == 0


def test_refused_hedge_tries_the_next_provider_at_once() -> None:
    """A hedge its breaker refuses gives its budget back and the next provider is raced."""
    clock = FakeClock()
    budget = HedgeBudget()
    for _ in range(10):
        budget.note_request(clock.now())
    p = planner(cands("a", "b", "c"), clock, hedge=HEDGE, budget=budget)
    dispatch(p, clock)
    clock.advance(0.1)
    refused = dispatch(p, clock)
    p.receive(Refused(attempt=refused.attempt))
    assert budget.counts(clock.now()) == (10, 0)
    again = dispatch(p, clock)
    assert (again.candidate, again.reason) == (2, "hedge")
    assert p.hedges == 1 and p.tried == ["a", "c"]


def test_two_hedges_are_staggered() -> None:
    """max_hedges 2: a second hedge one delay after the first, then no more."""
    clock = FakeClock()
    p = planner(cands("a", "b", "c", "d"), clock, hedge=HedgeConfig(delay_ms=50, max_hedges=2))
    dispatch(p, clock)
    clock.advance(0.05)
    assert dispatch(p, clock).reason == "hedge"
    assert p.next(clock.now()) == Wait(until=pytest.approx(clock.now() + 0.05))
    clock.advance(0.05)
    assert dispatch(p, clock).candidate == 2
    assert p.next(clock.now()) == Wait(until=pytest.approx(p.deadline))  # cap reached


def test_no_hedge_past_the_dispatch_cap_or_the_deadline() -> None:
    """A hedge that falls due with no send left, or too close to the deadline, is not sent."""
    clock = FakeClock()
    one_send = DispatchPolicy(
        name="one_send_read",
        max_dispatches=1,
        replay_safe=True,
        writes=False,
        hedge=True,
        first_share=None,
    )
    p = planner(cands("a", "b"), clock, policy=one_send, hedge=HEDGE)
    assert p.may_hedge
    dispatch(p, clock)
    clock.advance(0.1)
    assert p.next(clock.now()) == Wait(until=pytest.approx(p.deadline))
    late = planner(cands("a", "b"), clock, hedge=HedgeConfig(delay_ms=995), budget_s=1.0)
    dispatch(late, clock)
    clock.advance(0.995)
    assert late.next(clock.now()) == Wait(until=pytest.approx(late.deadline))
    assert late.hedges == 0
    assert not planner(cands("a", "b"), clock, policy=WRITE, hedge=HEDGE).may_hedge


def test_no_second_hedge_without_another_provider() -> None:
    """A second hedge falls due with every provider tried: the request just waits."""
    clock = FakeClock()
    p = planner(cands("a", "b"), clock, hedge=HedgeConfig(delay_ms=50, max_hedges=2))
    dispatch(p, clock)
    clock.advance(0.05)
    dispatch(p, clock)
    clock.advance(0.05)
    assert p.next(clock.now()) == Wait(until=pytest.approx(p.deadline))
    assert p.hedges == 1 and not p.hedge_skipped


def test_failure_with_a_race_on_waits_for_the_other() -> None:
    """A failure while another attempt is in flight starts nothing new."""
    clock = FakeClock()
    p = planner(cands("a", "b", "c"), clock, hedge=HEDGE)
    first = dispatch(p, clock)
    clock.advance(0.1)
    hedge = dispatch(p, clock)
    p.receive(answered(first, SERVER))
    assert isinstance(p.next(clock.now()), Wait)
    p.receive(answered(hedge, SERVER))
    last = dispatch(p, clock)
    assert (last.candidate, last.reason) == (2, "failover")


def test_writes_and_lone_providers_are_never_hedged() -> None:
    """A write with a hedge setting still goes out once, alone."""
    clock = FakeClock()
    p = planner(cands("a", "b"), clock, policy=WRITE, hedge=HEDGE)
    dispatch(p, clock)
    clock.advance(5.0)
    assert p.next(clock.now()) == Wait(until=pytest.approx(p.deadline))


def test_quantile_delay_follows_the_primary_row() -> None:
    """The quantile form reads the first provider's latency window for the method."""
    clock = FakeClock()
    a = Cand("a")
    row = a.methods["eth_call"] = MethodStats()
    for ms in range(1, 101):
        row.record_success(float(ms), clock.now())
    p = planner([a, Cand("b")], clock, hedge=HedgeConfig(quantile=0.5, min_delay_ms=1))
    dispatch(p, clock)
    assert p.next(clock.now()) == Wait(until=pytest.approx(clock.now() + 0.05))


def test_deadline_cancels_everything_in_flight() -> None:
    """At the deadline every attempt in flight is cancelled and the request fails."""
    clock = FakeClock()
    p = planner(cands("a", "b"), clock, hedge=HEDGE, budget_s=1.0)
    dispatch(p, clock)
    clock.advance(0.1)
    dispatch(p, clock)
    clock.advance(0.9)
    assert p.next(clock.now()) == Cancel(attempt=0, overdue=True)
    assert p.next(clock.now()) == Cancel(attempt=1, overdue=True)
    final = p.next(clock.now())
    assert isinstance(final, Fail)
    assert final.error["data"]["last_error"]["message"] == "Request deadline exhausted"


# -- illegal moves and the table -----------------------------------------------------------------


def test_illegal_moves() -> None:
    """Facts about unknown attempts, twice about one attempt, or refusals after the end."""
    clock = FakeClock()
    p = planner(cands("a", "b"), clock, hedge=HEDGE)
    with pytest.raises(IllegalMove):
        p.receive(answered(Dispatch(attempt=0, candidate=0, timeout_s=1, reason="first")))
    d = dispatch(p, clock)
    clock.advance(0.1)
    h = dispatch(p, clock)
    p.receive(answered(d, SERVER))
    with pytest.raises(IllegalMove):
        p.receive(answered(d, SERVER))
    p.receive(answered(h))
    with pytest.raises(IllegalMove):
        p.receive(Refused(attempt=h.attempt))


# -- properties --------------------------------------------------------------------------------

OUTCOMES = {
    "ok": lambda n: Answered(attempt=n, judgement=ACCEPTED),
    "revert": lambda n: Answered(attempt=n, judgement=REVERT),
    "server": lambda n: Answered(attempt=n, judgement=SERVER),
    "quota": lambda n: Answered(attempt=n, judgement=QUOTA),
    "capability": lambda n: Answered(attempt=n, judgement=CAPABILITY),
    "missing": lambda n: Answered(attempt=n, judgement=MISSING),
    "reset": lambda n: lost(n),
    "refused_conn": lambda n: lost(n, dispatched=False),
    "timeout": lambda n: TimedOut(attempt=n),
    "cancelled": lambda n: Cancelled(attempt=n),
}
UNSENT = {"quota", "capability", "missing", "refused_conn"}  # the provider did not act


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_planner_invariants(data: st.DataObject) -> None:
    """Any sequence of outcomes ends in exactly one answer or error, by the deadline; a
    write is never sent twice and reports an unsafe failure as indeterminate; hedges go
    only to untried providers, only for reads, within max_hedges and the budget."""
    providers = data.draw(st.lists(st.sampled_from("abcd"), max_size=5), label="providers")
    policy = data.draw(st.sampled_from([READ, WRITE, IDEMPOTENT_WRITE]), label="policy")
    hedge = data.draw(
        st.none()
        | st.builds(
            lambda d, n: HedgeConfig(delay_ms=d, max_hedges=n),
            st.floats(1.0, 3000.0),
            st.integers(1, 2),
        ),
        label="hedge",
    )
    budget_s = data.draw(st.sampled_from([0.02, 0.5, 10.0]), label="budget_s")
    clock = FakeClock()
    budget = HedgeBudget()
    for _ in range(data.draw(st.integers(0, 40), label="earlier requests")):
        budget.note_request(clock.now())
    p = planner(
        cands(*providers), clock, policy=policy, budget_s=budget_s, hedge=hedge, budget=budget
    )
    deadline = p.deadline
    open_: dict[int, str] = {}  # attempt -> provider
    sent_to: list[str] = []  # providers of attempts that went out
    acted = 0  # attempts that may have acted (answered, or failed after dispatch)
    unsafe = False
    answers: dict[int, Fact] = {}
    hedges = 0
    final = None
    for _ in range(200):
        now = clock.now()
        d = p.next(now)
        if isinstance(d, Answer | Fail):
            final = d
            break
        if isinstance(d, Dispatch):
            assert now + d.timeout_s <= deadline + 1e-9
            assert d.timeout_s > 0
            provider = providers[d.candidate]
            if d.reason == "hedge":
                assert policy.hedge and hedge is not None
                assert provider not in sent_to and open_
                hedges += 1
            if policy is WRITE:
                assert acted == 0 and not open_, "a write is sent once, alone"
            if data.draw(st.booleans(), label="admitted"):
                open_[d.attempt] = provider
                sent_to.append(provider)
            else:
                assert p.receive(Refused(attempt=d.attempt))
                if d.reason == "hedge":
                    hedges -= 1
            continue
        if isinstance(d, Cancel):
            assert d.attempt in open_
            del open_[d.attempt]
            continue
        assert isinstance(d, Wait)
        assert open_ and now <= d.until <= deadline
        if data.draw(st.booleans(), label="an attempt finishes first"):
            clock.advance(data.draw(st.floats(0.0, d.until - now), label="after"))
            number = data.draw(st.sampled_from(sorted(open_)), label="attempt")
            name = data.draw(st.sampled_from(sorted(OUTCOMES)), label="outcome")
            fact = OUTCOMES[name](number)
            del open_[number]
            answers[number] = fact
            if name not in UNSENT:
                acted += 1
                unsafe = unsafe or name in ("server", "reset", "timeout", "cancelled")
            assert p.receive(fact)
        else:
            clock.advance(d.until - now)
    assert final is not None, "the request ended"
    assert not open_, "every attempt in flight was cancelled first"
    assert p.next(clock.now()) is final
    assert clock.now() <= deadline + 1e-9 or isinstance(final, Fail)
    assert hedges == p.hedges and hedges <= (hedge.max_hedges if hedge else 0)
    requests, spent = budget.counts(clock.now())
    assert spent == hedges
    if hedge is not None:
        assert spent * 100 <= hedge.budget_percent * requests
    if policy is WRITE:
        assert acted <= 1
    if policy.writes and unsafe and isinstance(final, Fail):
        assert final.error["message"] == "Upstream dispatch outcome is indeterminate"
    if isinstance(final, Answer):
        fact = answers[final.attempt]
        assert isinstance(fact, Answered) and fact.judgement in (ACCEPTED, REVERT)
