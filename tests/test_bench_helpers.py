"""Pure helpers of bench/overhead.py on fixed strings. Benchmarks never run in the suite."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import overhead  # noqa: E402

WRK_STDOUT = """\
Running 2s test @ http://127.0.0.1:40001/rpc/anvil
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.78ms  312.05us   9.01ms   90.12%
    Req/Sec    31.91k     1.02k   33.10k    85.00%
  63500 requests in 2.00s, 7.21MB read
  Non-2xx or 3xx responses: 3
Requests/sec:  31750.00
Transfer/sec:      3.60MB
WRKJSON {"requests":63500,"duration_us":2000000,"bytes":7560000,"errors":{"connect":0,\
"read":1,"write":0,"status":3,"timeout":2},"latency_us":{"min":210,"max":9010,\
"mean":1780.25,"stdev":312.05,"p50":1782,"p90":2010,"p99":3100,"p999":8000}}
"""

# comm with spaces and parentheses; ppid 4242, utime 1500, stime 250.
PROC_STAT = (
    "12345 (python (my) proc) S 4242 12345 12345 0 -1 4194560 9057 0 0 0 "
    "1500 250 0 0 20 0 3 0 123456 456789012 6000 18446744073709551615 1 1 0 0 0 0 0 "
    "16781312 16386 0 0 0 17 1 0 0 0 0 0\n"
)

PROC_STATUS = """\
Name:\tpython
Umask:\t0022
State:\tS (sleeping)
VmPeak:\t  120000 kB
VmHWM:\t   43520 kB
VmRSS:\t   40000 kB
Threads:\t3
"""

PROC_CPU = """\
cpu  1000 10 500 8000 100 0 50 0 0 0
cpu0 500 5 250 4000 50 0 25 0 0 0
intr 0
"""


def test_parse_wrk_output() -> None:
    data = overhead.parse_wrk_output(WRK_STDOUT)
    assert data["requests"] == 63500
    assert data["rps"] == pytest.approx(31750.0)
    assert data["non2xx"] == 3
    assert data["socket_errors"] == 3
    assert data["latency_us"]["p50"] == 1782
    assert data["latency_us"]["p99"] == 3100


def test_parse_wrk_output_without_summary_line() -> None:
    with pytest.raises(ValueError):
        overhead.parse_wrk_output("Running 2s test\nRequests/sec: 1\n")


def test_wrk_script_embeds_body_and_marker() -> None:
    body = overhead.request_body("eth_blockNumber")
    assert json.loads(body) == {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "eth_blockNumber",
        "params": [],
    }
    script = overhead.wrk_lua_script(body)
    assert "[==[" + body.decode() + "]==]" in script
    assert overhead.WRK_MARKER in script and "done = function" in script
    for method in overhead.METHOD_PARAMS:
        assert json.loads(overhead.request_body(method, 9))["id"] == 9


def test_parse_proc_files() -> None:
    assert overhead.parse_proc_stat(PROC_STAT) == (4242, 1500, 250)
    assert overhead.parse_status_kb(PROC_STATUS) == 43520
    assert overhead.parse_status_kb(PROC_STATUS, "VmRSS") == 40000
    assert overhead.parse_status_kb("Name:\tx\n") == 0
    busy, total = overhead.parse_proc_cpu_line(PROC_CPU)
    assert (busy, total) == (1560, 9660)


def test_tree_and_cpu_arithmetic() -> None:
    parents = {1: 0, 10: 1, 11: 10, 12: 10, 13: 11, 20: 1}
    assert sorted(overhead.descendants(10, parents)) == [10, 11, 12, 13]
    assert overhead.descendants(99, parents) == [99]
    assert overhead.cpu_delta({10: 100, 11: 5}, {10: 150, 11: 5, 12: 7}) == 57
    assert overhead.per_request_us(100, 50_000, 100) == pytest.approx(20.0)
    assert overhead.per_request_us(100, 0, 100) is None


def test_rotation_and_median() -> None:
    items = ["direct", "floor", "lean-floor", "lasso"]
    assert overhead.rotated(items, 0) == items
    assert overhead.rotated(items, 1) == ["floor", "lean-floor", "lasso", "direct"]
    assert overhead.rotated(items, 5) == overhead.rotated(items, 1)
    assert overhead.rotated([], 3) == []
    assert overhead.median([3.0, 1.0, 2.0]) == 2.0
    assert overhead.median([4.0, None, 2.0]) == 3.0
    assert overhead.median([None]) is None


def _round(cpu: float, p50_c1: float, p99_c1: float = 0.0) -> dict[str, float]:
    row = dict.fromkeys(overhead.ROUND_METRICS, 1.0)
    row.update(proxy_cpu_us_c64=cpu, p50_us_c1=p50_c1, p99_us_c1=p99_c1, errors=0)
    return row


def test_summarize_and_render() -> None:
    contenders: dict[str, dict[str, Any]] = {
        "direct": {"rounds": [_round(15, 80), _round(17, 90), _round(16, 70)]},
        "floor": {"rounds": [_round(150, 400), _round(140, 380), _round(160, 420)]},
        "lean-floor": {"rounds": [_round(24, 160)]},
        "lasso": {"rounds": [_round(45, 200)]},
        "broken": {"rounds": [], "reason": "exited with code 1"},
    }
    summary = overhead.summarize(contenders)
    assert summary["medians"]["floor"]["proxy_cpu_us_c64"] == 150
    assert summary["added"]["floor"]["p50_us_c1"] == 400 - 80
    assert summary["added"]["direct"]["p50_us_c1"] == 0
    assert summary["ratios"]["lasso/floor"] == pytest.approx(0.3)
    assert summary["ratios"]["lasso/lean-floor"] == pytest.approx(45 / 24)
    assert "broken" not in summary["medians"]
    meta = {
        "timestamp": "t",
        "method": "eth_blockNumber",
        "rounds": 3,
        "duration_s": 8,
        "latency_duration_s": 5,
        "warmup_s": 2,
        "connections": 64,
        "cpus": 2,
        "git": "abc",
        "contenders": list(contenders),
    }
    report = overhead.render_markdown({"meta": meta, "contenders": contenders, "summary": summary})
    assert "| floor | 1 | 150.0 |" in report
    assert "| broken | unavailable: exited with code 1 |" in report
    assert "lasso/floor = 0.30" in report


def test_quick_args() -> None:
    args = overhead.parse_args(["--quick", "--contenders", "direct,floor"])
    assert (args.rounds, args.duration, args.latency_duration) == (1, 2.0, 2.0)
    assert args.contenders == ["direct", "floor"]
    args = overhead.parse_args(["--extra", "other={python} x.py --port {port}"])
    assert args.contenders[-1] == "other"
    with pytest.raises(SystemExit):
        overhead.parse_args(["--contenders", "nope"])


def test_profile_file_name() -> None:
    assert overhead.profile_file_name(overhead.DEFAULT_PROFILE_TEMPLATE) == "public.yml"
    assert overhead.profile_file_name("---\nname: X\nslug: 'fast'\n---\nchains: {}\n") == "fast.yml"
    assert overhead.profile_file_name("chains: {}\n") == "bench.yml"


def test_keyed_profile_requires_the_bench_key_and_parses() -> None:
    """The lasso-key contender's profile: the template plus a key and a never-reached limit."""
    from lasso.profiles import parse_profile

    text = overhead.keyed_profile(overhead.DEFAULT_PROFILE_TEMPLATE, overhead.BENCH_KEY)
    profile = parse_profile(text.replace("{anvil_url}", "http://127.0.0.1:1"), "public.yml", {})
    assert profile.auth is not None and profile.auth.required
    assert profile.auth.keys[0].id == "bench" and profile.rps_limit == 1_000_000
    with pytest.raises(ValueError):
        overhead.keyed_profile("chains: {}\n", overhead.BENCH_KEY)


def test_wrk_script_sets_extra_headers() -> None:
    """Headers given to the wrk script are set on every request, safely quoted."""
    script = overhead.wrk_lua_script(b"{}", {"X-Lasso-Api-Key": "abc"})
    assert "wrk.headers[ [==[X-Lasso-Api-Key]==] ] = [==[abc]==]" in script
    with pytest.raises(ValueError):
        overhead.wrk_lua_script(b"{}", {"X": "]==]"})
