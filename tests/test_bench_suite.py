"""Pure helpers of the benchmark suite (bench/common.py and the benchmarks). No benchmark
runs here: only statistics, parsing, the request mixes and report plumbing."""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import (  # noqa: E402
    common,
    failover,
    get_logs,
    hedging,
    routing_quality,
    run_all,
    soak,
)

# -- statistics -------------------------------------------------------------------------


def test_percentile_interpolates_like_numpy_linear() -> None:
    """Percentiles interpolate linearly between closest ranks (numpy's default)."""
    data = [4.0, 1.0, 3.0, 2.0]
    assert common.percentile(data, 0) == 1.0
    assert common.percentile(data, 100) == 4.0
    assert common.percentile(data, 50) == pytest.approx(2.5)
    assert common.percentile(data, 25) == pytest.approx(1.75)
    assert common.percentile(list(range(101)), 99) == pytest.approx(99.0)


def test_percentile_edge_cases() -> None:
    """An empty input gives None, one value is every percentile, q outside 0..100 raises."""
    assert common.percentile([], 50) is None
    assert common.percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        common.percentile([1.0], 101)


def test_latency_summary() -> None:
    """The summary holds count, mean, p50/p95/p99 and max; all None when empty."""
    s = common.latency_summary(float(v) for v in range(1, 101))
    assert s["n"] == 100
    assert s["mean"] == pytest.approx(50.5)
    assert s["p50"] == pytest.approx(50.5)
    assert s["p99"] == pytest.approx(99.01)
    assert s["max"] == 100.0
    assert common.latency_summary([])["p50"] is None


def test_lstsq_slope_exact_line_and_degenerate_inputs() -> None:
    """The fit recovers an exact line; too few points or constant x give None."""
    fit = common.lstsq_slope([0, 1, 2, 3], [1, 3, 5, 7])
    assert fit is not None
    assert fit[0] == pytest.approx(2.0)
    assert fit[1] == pytest.approx(1.0)
    assert common.lstsq_slope([1.0], [2.0]) is None
    assert common.lstsq_slope([2, 2, 2], [1, 2, 3]) is None
    with pytest.raises(ValueError):
        common.lstsq_slope([1, 2], [1])


def test_lstsq_slope_of_noisy_flat_series_is_small() -> None:
    """A flat series with alternating noise has a near-zero slope."""
    xs = [i / 10 for i in range(100)]
    ys = [50 + (0.3 if i % 2 else -0.3) for i in range(100)]
    fit = common.lstsq_slope(xs, ys)
    assert fit is not None and abs(fit[0]) < 0.01


def test_quartile_medians() -> None:
    """Medians of the first and last quarter, in series order."""
    assert common.quartile_medians([1, 2, 3, 4, 5, 6, 7, 8]) == (1.5, 7.5)
    assert common.quartile_medians([5, 9]) == (5, 9)
    assert common.quartile_medians([3]) is None


@pytest.mark.parametrize(
    ("slope", "first", "last", "verdict"),
    [
        (0.1, 50.0, 50.5, "flat"),  # inside the 2 MB tolerance
        (3.0, 50.0, 80.0, "growing"),  # both measures agree
        (3.0, 50.0, 50.5, "flat"),  # a slope alone (a step early on) is not growth
        (0.0, 50.0, 80.0, "flat"),  # quartiles alone (one spike at the end) neither
        (-3.0, 80.0, 50.0, "shrinking"),
        (None, 50.0, 50.1, "flat"),
        (None, 50.0, 90.0, "inconclusive"),
    ],
)
def test_trend_verdict(slope: float | None, first: float, last: float, verdict: str) -> None:
    """Growth needs both the projected slope and the quartile delta over the tolerance."""
    assert common.trend_verdict(slope, first, last, minutes=10) == verdict


def test_trend_verdict_percentage_tolerance() -> None:
    """For a big process the tolerance is a percentage of its size, not 2 MB."""
    assert common.trend_verdict(0.4, 500.0, 504.0, minutes=10) == "flat"  # 0.8 % < 2 %
    assert common.trend_verdict(2.0, 500.0, 520.0, minutes=10) == "growing"


def test_rss_trend_excludes_warmup() -> None:
    """The soak's RSS trend ignores the warm-up and sees a flat series after it."""
    times = [float(t) for t in range(0, 600, 5)]
    rss = [30.0 + t / 6 if t < 60 else 40.0 + (0.1 if i % 3 else 0.0) for i, t in enumerate(times)]
    trend = soak.rss_trend(times, rss, warmup_s=60)
    assert trend["verdict"] == "flat"
    assert trend["from_s"] == 60
    assert abs(trend["slope_mb_per_min"]) < 0.05
    growing = soak.rss_trend(times, [40 + t / 60 for t in times], warmup_s=60)
    assert growing["verdict"] == "growing"
    assert growing["slope_mb_per_min"] == pytest.approx(1.0)
    assert soak.rss_trend([1.0], [2.0], warmup_s=0)["verdict"] == "inconclusive"


def test_attribute_growth_splits_fault_and_steady_intervals() -> None:
    """Steps in intervals overlapping a fault window count as faults, the rest as steady."""
    times = [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]
    rss = [40.0, 40.5, 41.0, 41.0, 41.2, 41.2]
    out = soak.attribute_growth(times, rss, [(6.0, 12.0)], from_s=5.0)
    assert out["faults"] == pytest.approx(0.5)  # 5-10 and 10-15 touch the window
    assert out["steady"] == pytest.approx(0.2)  # 15-20 (0.2) and 20-25 (0)
    assert soak.attribute_growth([1.0], [2.0], []) == {"faults": 0.0, "steady": 0.0}


def test_cdf_points_thinned_and_ending_at_one() -> None:
    """CDF points are sorted, at most max_points long, and end at (max, 1.0)."""
    xs, ys = common.cdf_points([float(v) for v in range(1000, 0, -1)], max_points=50)
    assert len(xs) <= 51
    assert xs == sorted(xs)
    assert (xs[-1], ys[-1]) == (1000.0, 1.0)
    assert common.cdf_points([]) == ([], [])
    assert common.cdf_points([3.0]) == ([3.0], [1.0])


def test_bucket_series() -> None:
    """Points group into fixed-width buckets, reduced per bucket, empty ones skipped."""
    pts = [(0.1, 1.0), (0.9, 3.0), (2.5, 10.0)]
    xs, ys = common.bucket_series(pts, 1.0, lambda v: sum(v) / len(v))
    assert xs == [0.5, 2.5]
    assert ys == [2.0, 10.0]
    with pytest.raises(ValueError):
        common.bucket_series(pts, 0, max)


# -- parsing ------------------------------------------------------------------------------


def test_decode_meta_with_and_without_padding() -> None:
    """X-Lasso-Meta decodes from base64url JSON with or without padding; junk gives None."""
    doc = {"selected_provider": {"id": "alpha", "protocol": "http"}, "retries": 1}
    raw = base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()
    assert common.decode_meta(raw) == doc
    assert common.decode_meta(raw.rstrip("=")) == doc
    assert common.decode_meta(None) is None
    assert common.decode_meta("!!not base64!!") is None
    assert common.decode_meta(base64.urlsafe_b64encode(b"[1, 2]").decode()) is None


def test_parse_loadavg() -> None:
    """The three load averages come from /proc/loadavg text; junk raises."""
    assert common.parse_loadavg("0.35 0.68 0.95 1/136 23659\n") == (0.35, 0.68, 0.95)
    with pytest.raises(ValueError):
        common.parse_loadavg("")


def test_judge_strict_client_rules() -> None:
    """A call succeeds only with HTTP 200, JSON-RPC 2.0, a result and the same id."""
    ok = b'{"jsonrpc":"2.0","id":5,"result":"0x1"}'
    assert common._judge(200, ok, 5, False) == (True, 200, None)
    assert common._judge(200, ok, 6, False)[2] == "id_mismatch"
    assert common._judge(500, ok, 5, False)[2] == "http_500"
    assert common._judge(200, b"<html>", 5, False)[2] == "invalid_json"
    err = b'{"jsonrpc":"2.0","id":5,"error":{"code":-32000,"message":"x"}}'
    assert common._judge(200, err, 5, False)[2] == "rpc_error"
    batch = b'[{"jsonrpc":"2.0","id":1,"result":1},{"jsonrpc":"2.0","id":2,"result":2}]'
    assert common._judge(200, batch, None, True)[0] is True
    assert common._judge(200, err, None, True)[2] == "rpc_error"


# -- reports ------------------------------------------------------------------------------


def test_markdown_table_and_fmt() -> None:
    """Tables get one alignment rule per column and escape pipes; fmt handles None/inf."""
    lines = common.markdown_table(["a", "b"], [["x|y", 1]])
    assert lines == ["| a | b |", "|---|---:|", "| x\\|y | 1 |"]
    with pytest.raises(ValueError):
        common.markdown_table(["a"], [[1, 2]])
    assert common.fmt(None) == "–"
    assert common.fmt(1.234, 2) == "1.23"
    assert common.fmt(2.0, 1, signed=True) == "+2.0"
    assert common.fmt(float("inf")) == "∞"


def test_save_report_writes_json_and_md(tmp_path: Path) -> None:
    """Without a figure only the JSON and Markdown files are written, named by stamp."""
    paths = common.save_report("demo", "20260101-000000", {"a": 1}, "# hi\n", None, tmp_path)
    assert sorted(paths) == ["json", "md"]
    assert json.loads(Path(paths["json"]).read_text()) == {"a": 1}
    assert Path(paths["md"]).name == "demo-20260101-000000.md"


# -- request mixes ------------------------------------------------------------------------


def test_request_mix_is_deterministic_and_rotates_methods() -> None:
    """The shared mix rotates three methods and is the same for every contender."""
    methods = [common.request_for(k)[0] for k in range(6)]
    assert methods == list(common.MIX_METHODS) * 2
    assert common.request_for(4) == common.request_for(4)
    doc = json.loads(common.request_for(2, request_id=99)[1])
    assert doc["id"] == 99 and doc["method"] == "eth_call"
    assert doc["params"][0]["data"].startswith("0x70a08231")


def test_soak_shapes_cover_the_mix() -> None:
    """Twenty consecutive soak requests hold singles, batches, meta, routes, a
    notification and a bad request, each with a parseable or deliberately bad body."""
    shapes = [soak.shape_for(k, ["a", "b"]) for k in range(20)]
    kinds = {s.kind for s in shapes}
    assert kinds == {"single", "batch", "meta", "route", "notification", "bad"}
    for s in shapes:
        if s.kind == "batch":
            assert 2 <= len(json.loads(s.body)) <= 10 and s.batch
        if s.kind == "notification":
            assert "id" not in json.loads(s.body) and s.expect == "empty"
    bad = {soak.shape_for(k, ["a"]).body for k in range(19, 20 * 6, 20)}
    assert len(bad) == len(soak.BAD_BODIES)


def test_soak_judge_expected() -> None:
    """Bad requests must get JSON-RPC errors below HTTP 500; notifications a 204."""
    bad = soak.Shape("bad", "ethereum", b"{", expect="error")
    err = b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}'
    assert soak.judge_expected(bad, 400, err, "http_400")
    assert not soak.judge_expected(bad, 500, err, "http_500")
    assert not soak.judge_expected(bad, 0, b"", "ServerDisconnectedError")
    assert not soak.judge_expected(bad, 200, b'{"jsonrpc":"2.0","id":1,"result":1}', None)
    note = soak.Shape("notification", "ethereum", b"{}", expect="empty")
    assert soak.judge_expected(note, 204, b"", "http_204")
    assert not soak.judge_expected(note, 200, b'{"result":1}', None)


# -- routing quality and failover -----------------------------------------------------------


def test_oracle_follows_the_outage() -> None:
    """The oracle picks the lowest median among providers that are up."""
    medians = {"a": 15.0, "b": 25.0, "c": 40.0}
    assert routing_quality.oracle_pick(medians, set()) == "a"
    assert routing_quality.oracle_pick(medians, {"a"}) == "b"
    assert routing_quality.oracle_pick(medians, {"a", "b", "c"}) is None


def test_phases_and_ratios() -> None:
    """Send times map to before/outage/after; ratios skip missing or zero bases."""
    assert routing_quality.phase_of(1.0, (5.0, 8.0)) == "before"
    assert routing_quality.phase_of(5.0, (5.0, 8.0)) == "outage"
    assert routing_quality.phase_of(9.0, (5.0, 8.0)) == "after"
    assert routing_quality.phase_of(9.0, None) == "before"
    assert routing_quality.ratio(11.0, 10.0) == pytest.approx(1.1)
    assert routing_quality.ratio(None, 10.0) is None
    assert routing_quality.ratio(1.0, 0.0) is None


def test_routing_summary_and_oracle_ratios() -> None:
    """Warm-up samples are dropped, errors counted apart, ratios taken against the oracle."""
    S = routing_quality.Sample
    fast = [S(-1.0, 999.0, True, None, "a", 0)] + [
        S(float(i), 11.0, True, None, "a", 0) for i in range(10)
    ]
    fast.append(S(5.0, 50.0, False, "timeout", None, None))
    oracle = [S(float(i), 10.0, True, None, "a", None) for i in range(10)]
    summaries = {
        "fastest": routing_quality.summarize_run(fast, None),
        "oracle": routing_quality.summarize_run(oracle, None),
    }
    assert summaries["fastest"]["requests"] == 11
    assert summaries["fastest"]["errors"] == 1
    assert summaries["fastest"]["latency_ms"]["max"] == 11.0
    ratios = routing_quality.ratios_of(summaries)
    assert ratios["fastest"]["p50"] == pytest.approx(1.1)
    assert ratios["fastest"]["p50_before"] == pytest.approx(1.1)


def test_failover_affected_and_summary() -> None:
    """Affected requests failed or were retried during the fault; the failover time is
    the last affected completion, the reroute time the last affected send."""
    S = failover.Sample
    samples = [
        S(-1.0, -0.99, 10.0, True, None, "primary", 0),  # baseline
        S(-0.01, 0.02, 30.0, True, None, "secondary", 1),  # in flight, retried
        S(0.1, 0.7, 600.0, True, None, "secondary", 1),  # hung attempt, then failover
        S(0.2, 0.22, 20.0, True, None, "secondary", 0),  # rerouted cleanly
        S(0.3, 0.31, 1.0, False, "rpc_error", None, 0),  # a client error
        S(20.0, 20.01, 10.0, True, None, "primary", 0),  # after healing
    ]
    assert not failover.is_affected(samples[0], 15.0)
    assert failover.is_affected(samples[2], 15.0)
    assert not failover.is_affected(samples[3], 15.0)
    s = failover.summarize_kind(samples, fault_s=15.0)
    assert s["affected"] == 3
    assert s["failover_s"] == pytest.approx(0.7)
    assert s["reroute_s"] == pytest.approx(0.3)
    assert s["errors"] == 1
    assert s["return_s"] == pytest.approx(5.01)
    assert s["baseline"]["share_faulted"] == 1.0


# -- the suite runner ---------------------------------------------------------------------


def test_hedging_profile_and_metrics_helpers() -> None:
    """The hedge lines land in the chain before its providers; metric samples are summed."""
    profile = common.chain_profile([("a", "http://a", 10)])
    routing = hedging.hedge_yaml(0.9, 5, 50, 15)
    text = hedging.with_routing(profile, routing)
    assert "hedge: {quantile: 0.9, min_delay_ms: 5, max_delay_ms: 50, budget_percent: 15}" in text
    assert text.index("routing:") < text.index("providers:")
    metrics = (
        'lasso_hedges_total{chain="e",outcome="won",profile="p"} 3.0\n'
        'lasso_hedges_total{chain="e",outcome="skipped_budget",profile="p"} 2.0\n'
        'lasso_hedges_total{chain="f",outcome="skipped_budget",profile="p"} 1.0\n'
    )
    assert hedging.metric_value(metrics, "lasso_hedges_total", outcome="skipped_budget") == 3.0
    assert hedging.metric_value(metrics, "lasso_hedges_total", chain="e") == 5.0
    assert hedging.calls_per_request(110, 100) == 1.1
    assert hedging.calls_per_request(5, 0) is None


def test_worst_trailing_share() -> None:
    """The largest hedged share over the trailing minute, judged when a hedge is sent."""
    steady = [(t * 0.1, t % 10 == 0) for t in range(600)]  # 10 % hedged
    assert 0.1 <= hedging.worst_trailing_share(steady, min_requests=20) < 0.15
    assert hedging.worst_trailing_share(steady) == pytest.approx(0.1, abs=0.005)
    burst = steady + [(60.0 + t * 0.1, True) for t in range(30)]  # then a hedged burst
    assert hedging.worst_trailing_share(burst) > 0.1
    assert hedging.worst_trailing_share([(0.0, True)] * 5, min_requests=20) == 0.0  # too few
    # Old traffic leaving the window raises the share between hedges: not judged there.
    aging = [(t * 0.1, False) for t in range(300)] + [(30.0, True)] * 30  # 9 % at t=30
    aging += [(70.0 + t * 0.1, False) for t in range(300)]  # t=30's burst still in window
    assert hedging.worst_trailing_share(aging, 60.0) == pytest.approx(30 / 330)
    assert hedging.last_window_share(aging) == 0.0
    assert hedging.last_window_share([]) is None


def test_hedging_verdicts() -> None:
    """Targets read from the steady window: p99 ratio, extra calls, the budget."""
    summary = {
        "best-single": {"steady": {"latency_ms": {"p99": 500.0}}},
        "hedged": {
            "steady": {"latency_ms": {"p99": 50.0}, "calls_per_request": 1.1},
            "worst_minute_hedge_share": 0.12,
        },
        "hedged-priority": {"worst_minute_hedge_share": 0.155},
    }
    v = hedging.verdicts(summary, 15)
    assert v["hedged/best p99"] == pytest.approx(0.1)
    assert v["extra upstream calls"] == pytest.approx(0.1)
    assert v["worst minute hedge share"] == 0.155 and v["budget held"] is True
    assert hedging.verdicts(summary, 14)["budget held"] is False
    assert hedging.verdicts({}, 15)["hedged/best p99"] is None


def test_supports_flag() -> None:
    """An option is found in argparse help text, not as a substring of another."""
    text = "usage: x [--clients N] [--quick]\n  --clients N   how many\n  --out-dir DIR\n"
    assert run_all.supports_flag(text, "--clients")
    assert run_all.supports_flag(text, "--out-dir")
    assert not run_all.supports_flag(text, "--client")


def test_plan_subscriptions_with_and_without_client_flag() -> None:
    """Subscriptions run for 1,000 and 10,000 clients when it takes --clients, else once."""
    args = run_all.parse_args(["--only", "subscriptions,soak"])
    steps, notes = run_all.plan(args, "py", "  --clients N\n  --out-dir D\n")
    assert [s.label for s in steps] == ["subscriptions 1000", "subscriptions 10000", "soak"]
    assert steps[0].argv[-2:] == ["--out-dir", args.out_dir]
    assert steps[-1].argv[3:5] == ["--minutes", "10"]
    steps, notes = run_all.plan(args, "py", "  --quiet\n")
    assert [s.label for s in steps] == ["subscriptions", "soak"] and notes
    steps, notes = run_all.plan(args, "py", None)
    assert [s.label for s in steps] == ["soak"] and "does not exist" in notes[0]
    quick = run_all.parse_args(["--quick", "--skip", "subscriptions"])
    steps, _ = run_all.plan(quick, "py", None)
    assert all("--quick" in s.argv for s in steps)
    assert "hedging" in [s.name for s in steps]
    assert "subscriptions" not in [s.name for s in steps]


def test_parse_args_rejects_unknown_benchmarks() -> None:
    """An unknown benchmark name is a usage error."""
    with pytest.raises(SystemExit):
        run_all.parse_args(["--only", "nope"])


def test_new_results_matches_name_and_stamp(tmp_path: Path) -> None:
    """Only files named <name>-<date>-<time>.<ext> written after the start are picked."""
    for fname in (
        "soak-20260101-000000.json",
        "soak-20260101-000000.md",
        "soak-20260101-000000.png",
        "soak-notes.md",
        "routing_quality-20260101-000000.json",
    ):
        (tmp_path / fname).write_text("{}")
    found = run_all.new_results(tmp_path, "soak", since=0)
    assert sorted(found) == ["json", "md", "png"]
    assert run_all.new_results(tmp_path, "quality", since=0) == {}
    old = tmp_path / "failover-20250101-000000.json"
    old.write_text("{}")
    os.utime(old, (1000, 1000))
    assert run_all.new_results(tmp_path, "failover", since=10_000) == {}


def test_overhead_headline() -> None:
    """The overhead headline takes lasso's CPU, the ratios and the added p50 at c=1."""
    doc = {
        "summary": {
            "medians": {"lasso": {"proxy_cpu_us_c64": 40.0}, "floor": {"proxy_cpu_us_c64": 140.0}},
            "added": {"lasso": {"p50_us_c1": 90.0}},
            "ratios": {"lasso/floor": 0.29, "floor/lean-floor": 7.0},
        }
    }
    head = run_all.overhead_headline(doc)
    assert head["lasso CPU µs/req"] == 40.0
    assert head["lasso +p50 c=1 µs"] == 90.0
    assert head["CPU lasso/floor"] == 0.29
    assert "CPU floor/lean-floor" not in head


def test_render_index_lists_steps_and_plots() -> None:
    """The index has one row per step, the commands, and embeds each PNG."""
    step = run_all.Step("soak", "soak", ["py", "-m", "bench.soak"], rc=0, wall_s=61.0)
    step.files = {"md": "/x/soak-1-2.md", "png": "/x/soak-1-2.png"}
    step.headline = {"rss verdict": "flat"}
    meta = {
        "timestamp": "t",
        "quick": True,
        "cpus": 2,
        "loadavg_start": [0.1, 0.1, 0.1],
        "loadavg_end": [0.2, 0.2, 0.2],
        "host_busy_pct": 50.0,
        "git": "abc",
        "wall_s": 61.0,
    }
    text = run_all.render_index(meta, [step], ["a note"])
    assert "| soak | ok | 61 | [soak-1-2.md](soak-1-2.md) | rss verdict: flat |" in text
    assert "![soak](soak-1-2.png)" in text
    assert "- a note" in text


def test_benchmark_argument_parsers() -> None:
    """Quick modes shorten the runs and bad values are usage errors."""
    rq = routing_quality.parse_args(["--quick"])
    assert (rq.warmup, rq.duration, rq.outage_s) == (4.0, 15.0, 3.0)
    fo = failover.parse_args(["--quick", "--kinds", "hang"])
    assert fo.kinds == ["hang"] and fo.fault_s == 6.0
    sk = soak.parse_args(["--quick"])
    assert (sk.minutes, sk.warmup) == (1.0, 15.0)
    assert soak.parse_args([]).warmup == 60.0
    for parser, bad in (
        (routing_quality.parse_args, ["--contenders", "nope"]),
        (failover.parse_args, ["--kinds", "nope"]),
        (soak.parse_args, ["--minutes", "0"]),
    ):
        with pytest.raises(SystemExit):
            parser(bad)
    assert isinstance(rq, argparse.Namespace)


def test_get_logs_helpers() -> None:
    """The getLogs bench's fleet, profiles, order check, summary, report and options."""
    fleet = get_logs.fleet(20.0)
    assert fleet["limit100"] == {"latency_ms": 20.0, "max_block_range": 100}
    assert fleet["nolimit"] == {"latency_ms": 20.0}
    urls = {p: f"http://{p}" for p in fleet}
    texts = get_logs.profiles(urls)
    assert set(texts) == {"public", "learned", "direct"}
    assert "max_block_range: 1000" in texts["public"] and "max_block_range" not in texts["learned"]
    assert "nolimit" in texts["direct"] and "nolimit" not in texts["public"]
    log = [{"blockNumber": "0x2", "logIndex": "0x0"}, {"blockNumber": "0x2", "logIndex": "0x1"}]
    assert get_logs.in_block_order(log) and not get_logs.in_block_order(log[::-1])
    assert get_logs.summarize([30.0, 10.0, 20.0]) == {"median_ms": 20.0, "best_ms": 10.0}
    assert get_logs.summarize([]) == {"median_ms": None, "best_ms": None}
    args = get_logs.parse_args(["--quick"])
    assert args.rounds == 2 and args.blocks == 10_000
    with pytest.raises(SystemExit):
        get_logs.parse_args(["--blocks", "20000"])
    row = {"median_ms": 100.0, "best_ms": 90.0, "rounds": 2, "chunks": 10, "proxy_cpu_ms": 5.0}
    result = {
        "range": [1, 10_000],
        "logs": 3,
        "answer_mb": 0.1,
        "contenders": {"direct-unsplit": {**row, "chunks": 1}, "lasso-limited": row},
        "errors": [],
    }
    report = get_logs.render(result, args)
    assert "| lasso-limited | 100 | 90 | 1.00 | 10 |" in report and "Errors: none" in report


# -- bench/profile.py: py-spy samples by stage -------------------------------------------


def test_profile_attributes_a_sample_to_its_innermost_lasso_stage() -> None:
    from bench.profile import LOOP_STAGE, OTHER_STAGE, stage_of

    outer = ["<module> (lasso:10)", "Runner.run (asyncio/runners.py:118)"]
    write = "ServerConn._write (lasso/net/server_conn.py:300)"
    on_done = "ServerConn._on_done (lasso/net/server_conn.py:180)"
    assert stage_of([*outer, on_done, write]).startswith("client write")
    assert stage_of([*outer, on_done]).startswith("request task")
    sel = "ChainRouter.candidates (lasso/kernel/router.py:325)"
    run = "RpcHandler._run_single (lasso/server/rpc.py:281)"
    assert stage_of([*outer, run, sel]).startswith("selection")
    assert stage_of(outer) == LOOP_STAGE
    assert stage_of([*outer, "something (elsewhere.py:1)"]) == OTHER_STAGE


def test_profile_groups_raw_lines_and_scales_shares_to_cpu() -> None:
    from bench.profile import LOOP_STAGE, group_samples, stage_table

    lines = [
        "<module> (lasso:10);Runner.run (asyncio/runners.py:118) 6",
        "<module> (lasso:10);ServerConn._write (lasso/net/server_conn.py:300) 3",
        "<module> (lasso:10);judge (lasso/server/pipeline.py:150) 1",
        "garbage without a count",
    ]
    stages, total = group_samples(lines)
    assert total == 10
    assert stages[LOOP_STAGE] == 6
    rows = stage_table(stages, total, cpu_us=50.0)
    assert [r["samples"] for r in rows] == [6, 3, 1]
    assert rows[0]["share"] == 0.6 and rows[0]["us_per_request"] == 30.0
    assert sum(r["us_per_request"] for r in rows) == 50.0
    assert stage_table(stages, total, None)[0]["us_per_request"] is None


def test_client_limits_expectation_and_report() -> None:
    """bench.client_limits: rps·t + burst, the relative deviation, and a report naming both."""
    from bench import client_limits

    assert client_limits.expected_admitted(100, 50, 60.0) == 6050
    assert client_limits.deviation(5445, 6050) == pytest.approx(-0.1)
    assert client_limits.deviation(1, 0) == 0.0
    result = {
        "meta": {
            "timestamp": "t",
            "nodes": 2,
            "rps": 100,
            "burst": 50,
            "loops": 4,
            "cpus": 2,
            "git": "g",
        },  # fmt: skip
        "phases": [
            {
                "phase": "shared",
                "seconds": 60.0,
                "admitted": 6000,
                "admitted_per_node": [3000, 3000],
                "expected": 6050,
                "deviation": -0.0083,
                "limited": 9,
                "errors": 0,
            },  # fmt: skip
        ],
        "mode_changes": [{"t_s": 0.1, "node": 0, "mode": "redis"}],
    }
    text = client_limits.render(result)
    assert "| shared | 60.0 | 6000 | 3000 / 3000 | 6050 | -0.8 % | 9 | 0 |" in text
    assert "node 0 redis at 0.1 s" in text
    args = client_limits.parse_args(["--quick"])
    assert (args.duration, args.down, args.after) == (12.0, 6.0, 6.0)
    profile = client_limits.profile_text("http://127.0.0.1:1", 10, 5)
    from lasso.profiles import parse_profile

    parsed = parse_profile(profile, "public.yml", {})
    assert parsed.auth is not None and parsed.auth.keys[0].limit.rps == 10  # type: ignore[union-attr]


# -- abuse ------------------------------------------------------------------------------


def test_abuse_verdict_applies_every_target() -> None:
    """p99 <= 100 ms, RSS rise <= 150 MB, no failed call, attack answered with its ids."""
    from bench import abuse

    assert abuse.verdict(99.0, 149.0, 0, True)
    assert not abuse.verdict(101.0, 0.0, 0, True)
    assert not abuse.verdict(10.0, 151.0, 0, True)
    assert not abuse.verdict(10.0, 0.0, 1, True)
    assert not abuse.verdict(10.0, 0.0, 0, False)
    assert not abuse.verdict(None, 0.0, 0, True)


def test_abuse_window_summary_and_report() -> None:
    """A window summarises latency, failures, RSS rise and the attacker's outcome."""
    from bench import abuse

    window = abuse.Window("huge_body", seconds=2.0, latencies_ms=[1.0] * 90 + [500.0] * 10)
    window.rss_start_kb, window.rss_peak_kb = 100 * 1024, 180 * 1024
    window.attacker = {"inputs": 12, "unit": "9 MB bodies", "outcome": "12/12 read", "bad": 0}
    row = window.summary()
    assert row["calls"] == 100 and row["failed"] == 0 and row["max_ms"] == 500.0
    assert row["rss_rise_mb"] == 80.0 and row["p99_ms"] > 100 and not row["meets_targets"]
    meta = {"timestamp": "t", "cpus": 2, "python": "3.11", "git": "g", "nofile": "1024 (soft)"}
    text = abuse.report([row], {**meta, "log_problems": 0})
    assert "| huge_body | 12 9 MB bodies |" in text and "**missed**" in text


def test_abuse_parse_args_picks_attacks() -> None:
    """--attacks selects known attacks in table order; unknown ones are refused."""
    from bench import abuse

    args = abuse.parse_args(["--attacks", "huge_body,slowloris", "--quick"])
    assert [a.name for a in args.chosen] == ["slowloris", "huge_body"]
    assert args.slowloris_conns == 300
    with pytest.raises(SystemExit):
        abuse.parse_args(["--attacks", "nope"])
    names = {a.attacker for a in abuse.ATTACKS}
    from bench import abuse_attacks

    assert names <= set(abuse_attacks.ATTACKERS)
    assert json.loads(abuse_attacks.rpc_body(3))["id"] == 3
