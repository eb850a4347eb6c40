"""Strategies: ordering rules, per-method evidence, exploration, weighted race statistics."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from lasso.kernel.selection import EXPLORE_P, order
from lasso.kernel.stats import ChannelEvidence, Evidence, MethodStats

NOW = 1000.0


@dataclass(eq=False)
class Ch:
    provider_id: str
    priority: int = 100
    transport: str = "http"
    evidence: ChannelEvidence = field(default_factory=ChannelEvidence)
    methods: dict[str, MethodStats] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"{self.provider_id}:{self.transport}"


def warm(ch: Ch, latency_ms: float, n: int = 5, now: float = NOW) -> Ch:
    for _ in range(n):
        ch.evidence.record_success(latency_ms, now)
    return ch


def warm_method(ch: Ch, method: str, latency_ms: float, n: int = 5, now: float = NOW) -> Ch:
    row = ch.methods.setdefault(method, MethodStats())
    for _ in range(n):
        row.record_success(latency_ms, now)
    return ch


def lookup(method: str) -> Callable[[Ch], Evidence | None]:
    def get(ch: Ch) -> Evidence | None:
        return ch.methods.get(method)

    return get


def ids(chs: list[Ch]) -> list[str]:
    return [repr(c) for c in chs]


class NoRandom:
    """An rng that fails the test if a deterministic strategy draws from it."""

    def random(self) -> float:
        raise AssertionError("unexpected draw")


# -- priority and load-balanced ----------------------------------------------------------


def test_priority_orders_by_priority_then_http_then_id() -> None:
    """Lower priority first, HTTP before WS, then provider id; no randomness."""
    chans = [
        Ch("b", 10, "ws"),
        Ch("c", 5, "http"),
        Ch("b", 10, "http"),
        Ch("a", 10, "ws"),
        Ch("z", 1, "ws"),
    ]
    out = order("priority", chans, None, NOW, NoRandom())
    assert ids(out) == ["z:ws", "c:http", "b:http", "a:ws", "b:ws"]


def test_unknown_strategy_raises() -> None:
    """An unknown name is a caller bug."""
    with pytest.raises(ValueError, match="unknown strategy"):
        order("random", [Ch("a")], None, NOW, random.Random(0))


def test_load_balanced_is_a_permutation_and_roughly_uniform() -> None:
    """Every channel is returned once and each leads about 1/n of the time."""
    rng = random.Random(42)
    chans = [Ch(x) for x in "abcde"]
    firsts: Counter[str] = Counter()
    positions: Counter[tuple[str, int]] = Counter()
    draws = 20_000
    for _ in range(draws):
        out = order("load-balanced", chans, None, NOW, rng)
        assert sorted(ids(out)) == sorted(ids(chans))
        firsts[out[0].provider_id] += 1
        for i, c in enumerate(out):
            positions[(c.provider_id, i)] += 1
    for x in "abcde":
        assert firsts[x] / draws == pytest.approx(0.2, abs=0.02)
        assert positions[(x, 4)] / draws == pytest.approx(0.2, abs=0.02)


def test_round_robin_alias_and_input_untouched() -> None:
    """round-robin means load-balanced; the input list is never reordered."""
    chans = [Ch(x) for x in "abc"]
    before = list(chans)
    out = order("round-robin", chans, None, NOW, random.Random(1))
    assert chans == before
    assert sorted(ids(out)) == sorted(ids(chans))
    assert order("load-balanced", [], None, NOW, NoRandom()) == []


def test_load_balanced_deterministic_for_a_seed() -> None:
    """The same seed gives the same order."""
    chans = [Ch(x) for x in "abcdef"]
    a = order("load-balanced", chans, None, NOW, random.Random(7))
    b = order("load-balanced", chans, None, NOW, random.Random(7))
    assert a == b


# -- fastest -----------------------------------------------------------------------------


def test_fastest_picks_lowest_ewma() -> None:
    """Qualified channels sort by EWMA ascending."""
    chans = [warm(Ch("a"), 90), warm(Ch("b"), 30), warm(Ch("c"), 60)]
    out = order("fastest", chans, None, NOW, random.Random(0), explore=0.0)
    assert ids(out) == ["b:http", "c:http", "a:http"]


def test_fastest_unqualified_after_by_prior_then_id() -> None:
    """Unqualified channels follow, by prior mean (∞ when unmeasured), then provider id."""
    chans = [
        Ch("z"),  # unmeasured: ∞
        warm(Ch("y"), 10, n=2),  # provisional: prior 10
        warm(Ch("x"), 500),  # qualified
        Ch("a"),  # unmeasured: ∞, sorts before z by id
    ]
    out = order("fastest", chans, None, NOW, random.Random(0), explore=0.0)
    assert ids(out) == ["x:http", "y:http", "a:http", "z:http"]


def test_fastest_with_nothing_qualified_uses_prior_order() -> None:
    """No qualified channel: all of them in prior-latency order."""
    chans = [warm(Ch("a"), 80, n=1), warm(Ch("b"), 20, n=2), Ch("c")]
    out = order("fastest", chans, None, NOW, NoRandom())
    assert ids(out) == ["b:http", "a:http", "c:http"]


def test_fastest_stale_row_counts_as_infinite() -> None:
    """A stale row's latency is ∞: it ranks with the unmeasured."""
    chans = [warm(Ch("a"), 5, now=NOW - 400), warm(Ch("b"), 50, n=2), Ch("c")]
    out = order("fastest", chans, None, NOW, NoRandom())
    assert ids(out) == ["b:http", "a:http", "c:http"]


def test_fastest_ties_break_on_p95_then_id_and_transport() -> None:
    """Equal EWMAs rank by p95 (per-method rows), then provider id and transport."""
    m = "eth_call"
    a, b, c = Ch("a"), Ch("b"), Ch("c", transport="ws")
    c2 = Ch("c", transport="http")
    for ch in (a, b, c, c2):
        warm_method(ch, m, 100.0, n=3)
    # Give b an equal EWMA but a lower p95 by rebuilding its ring with a mix.
    rb = b.methods[m]
    rb._ring[:] = [10.0, 10.0, 10.0]
    rb._pct = None
    out = order("fastest", [c, a, c2, b], lookup(m), NOW, random.Random(0), explore=0.0)
    assert ids(out) == ["b:http", "a:http", "c:http", "c:ws"]


def test_fastest_channel_ties_break_on_id() -> None:
    """Channel rows carry no p95: equal means fall back to provider id, then transport."""
    chans = [warm(Ch("b"), 40), warm(Ch("a", transport="ws"), 40), warm(Ch("a"), 40)]
    out = order("fastest", chans, None, NOW, random.Random(0), explore=0.0)
    assert ids(out) == ["a:http", "a:ws", "b:http"]


def test_fastest_prefers_per_method_evidence_when_two_qualify() -> None:
    """getLogs ranks by getLogs latency, not by the channel-wide mean."""
    m = "eth_getLogs"
    a = warm_method(warm(Ch("a"), 10), m, 2000)  # fast overall, slow at getLogs
    b = warm_method(warm(Ch("b"), 50), m, 300)
    out = order("fastest", [a, b], lookup(m), NOW, random.Random(0), explore=0.0)
    assert ids(out) == ["b:http", "a:http"]
    # Channel evidence alone ranks the other way.
    out = order("fastest", [a, b], None, NOW, random.Random(0), explore=0.0)
    assert ids(out) == ["a:http", "b:http"]


def test_fastest_falls_back_to_channel_evidence_with_one_method_row() -> None:
    """With fewer than two qualified per-method rows, channel evidence decides."""
    m = "eth_getLogs"
    a = warm_method(warm(Ch("a"), 10), m, 2000)
    b = warm(Ch("b"), 50)
    out = order("fastest", [a, b], lookup(m), NOW, random.Random(0), explore=0.0)
    assert ids(out) == ["a:http", "b:http"]


def test_fastest_per_method_mode_ranks_missing_rows_after() -> None:
    """In per-method mode a channel without a row for the method is unmeasured."""
    m = "eth_call"
    a = warm_method(Ch("a"), m, 40)
    b = warm_method(Ch("b"), m, 20)
    c = warm(Ch("c"), 1)  # fast overall, never served eth_call
    out = order("fastest", [c, a, b], lookup(m), NOW, random.Random(0), explore=0.0)
    assert ids(out) == ["b:http", "a:http", "c:http"]


def test_fastest_exploration_rate_and_targets() -> None:
    """About 2 % of orders lead with an unqualified, not-failing channel."""
    fast = warm(Ch("fast"), 10)
    cold = Ch("cold")
    broken = Ch("broken")
    for _ in range(3):
        broken.evidence.record_failure(NOW)
    chans = [fast, cold, broken]
    rng = random.Random(3)
    leads: Counter[str] = Counter()
    draws = 50_000
    for _ in range(draws):
        leads[order("fastest", chans, None, NOW, rng)[0].provider_id] += 1
    assert leads["broken"] == 0
    assert leads["cold"] / draws == pytest.approx(EXPLORE_P, abs=0.004)
    assert leads["fast"] + leads["cold"] == draws


def test_fastest_exploration_is_deterministic_and_can_be_disabled() -> None:
    """Same seed, same exploration; explore=0 never draws."""
    chans = [warm(Ch("fast"), 10), Ch("cold1"), Ch("cold2")]
    rng_a, rng_b = random.Random(11), random.Random(11)
    run_a = [ids(order("fastest", chans, None, NOW, rng_a)) for _ in range(500)]
    run_b = [ids(order("fastest", chans, None, NOW, rng_b)) for _ in range(500)]
    assert run_a == run_b
    assert any(run[0] != "fast:http" for run in run_a)
    out = order("fastest", chans, None, NOW, NoRandom(), explore=0.0)
    assert ids(out) == ["fast:http", "cold1:http", "cold2:http"]


def test_fastest_all_qualified_without_exploration_is_pure_ranking() -> None:
    """explore=0: no draw, strict EWMA order."""
    chans = [warm(Ch("a"), 10), warm(Ch("b"), 20)]
    assert ids(order("fastest", chans, None, NOW, NoRandom(), explore=0.0)) == ["a:http", "b:http"]


def test_fastest_re_measures_qualified_runners_up_rarely() -> None:
    """All qualified: a runner-up leads about explore of the time, never a failing one."""
    chans = [warm(Ch("a"), 10), warm(Ch("b"), 20), warm(Ch("c"), 30)]
    rng = random.Random(7)
    leads: Counter[str] = Counter(
        order("fastest", chans, None, NOW, rng)[0].provider_id for _ in range(20_000)
    )
    share = (leads["b"] + leads["c"]) / 20_000
    assert 0.01 < share < 0.03
    assert abs(leads["b"] - leads["c"]) < 0.01 * 20_000


def test_latency_weighted_explores_unqualified_channels() -> None:
    """A provider that missed qualification still leads a small share of requests."""
    q = warm(Ch("q"), 10)
    cold = Ch("cold")
    rng = random.Random(3)
    leads = sum(
        order("latency-weighted", [q, cold], None, NOW, rng)[0].provider_id == "cold"
        for _ in range(20_000)
    )
    assert 0.01 < leads / 20_000 < 0.03


# -- latency-weighted --------------------------------------------------------------------


def test_latency_weighted_matches_weights() -> None:
    """P(first = i) = w_i / sum(w) with w = (min/lat)^beta."""
    chans = [warm(Ch("a"), 100), warm(Ch("b"), 200), warm(Ch("c"), 150)]
    w = {"a": 1.0, "b": (100 / 200) ** 3, "c": (100 / 150) ** 3}
    total = sum(w.values())
    rng = random.Random(2024)
    firsts: Counter[str] = Counter()
    draws = 40_000
    for _ in range(draws):
        firsts[order("latency-weighted", chans, None, NOW, rng)[0].provider_id] += 1
    for x in "abc":
        assert firsts[x] / draws == pytest.approx(w[x] / total, abs=0.01)


def test_latency_weighted_beta_changes_concentration() -> None:
    """beta=1 spreads traffic more than beta=3."""
    chans = [warm(Ch("a"), 100), warm(Ch("b"), 200)]
    rng = random.Random(5)
    draws = 20_000
    lead_b = sum(
        order("latency-weighted", chans, None, NOW, rng, beta=1.0)[0].provider_id == "b"
        for _ in range(draws)
    )
    assert lead_b / draws == pytest.approx(0.5 / 1.5, abs=0.015)


def test_latency_weighted_qualified_then_measured_then_unmeasured() -> None:
    """Qualified first, then provisional with a mean, then unmeasured ones shuffled."""
    q1, q2 = warm(Ch("q1"), 10), warm(Ch("q2"), 1000)
    prov = warm(Ch("prov"), 1, n=2)  # faster, but not qualified
    cold1, cold2 = Ch("cold1"), Ch("cold2")
    rng = random.Random(0)
    seen_cold_orders = set()
    for _ in range(200):
        out = order("latency-weighted", [cold1, prov, q2, cold2, q1], None, NOW, rng, explore=0.0)
        assert {c.provider_id for c in out[:2]} == {"q1", "q2"}
        assert out[2] is prov
        seen_cold_orders.add(tuple(c.provider_id for c in out[3:]))
    assert seen_cold_orders == {("cold1", "cold2"), ("cold2", "cold1")}


def test_latency_weighted_uses_per_method_rows() -> None:
    """Per-method evidence weights the race when two rows qualify."""
    m = "eth_getLogs"
    a = warm_method(warm(Ch("a"), 10), m, 4000)
    b = warm_method(warm(Ch("b"), 50), m, 100)
    rng = random.Random(1)
    leads = sum(
        order("latency-weighted", [a, b], lookup(m), NOW, rng)[0].provider_id == "b"
        for _ in range(1000)
    )
    assert leads > 990


def test_latency_weighted_clamps_zero_draw_and_extreme_ratios() -> None:
    """u=0 is clamped to 2^-53 and a vanishing weight stays positive: no crash."""

    class Zero:
        def random(self) -> float:
            return 0.0

    chans = [warm(Ch("a"), 1e-3), warm(Ch("b"), 1e200)]
    out = order("latency-weighted", chans, None, NOW, Zero())
    assert ids(out) == ["a:http", "b:http"]


def test_latency_weighted_single_and_empty() -> None:
    """One channel needs no draw."""
    one = [warm(Ch("a"), 10)]
    assert order("latency-weighted", one, None, NOW, NoRandom()) == one
    assert order("latency-weighted", [], None, NOW, NoRandom()) == []
