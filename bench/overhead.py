"""Overhead benchmark: what one proxy hop costs, measured in ONE run with rotated order.

Contenders (each a separate process between the load driver and one real ``anvil``):

* ``direct``      wrk straight to anvil (reference; "proxy CPU" is anvil's own CPU)
* ``floor``       bare aiohttp forwarder (bench/floor_aiohttp.py)
* ``lean-floor``  raw asyncio.Protocol + httptools server and client (bench/floor_lean.py)
* ``lasso``       the real proxy (``lasso serve`` with a generated profile); every request
                  carries ``Cache-Control: no-cache``, so each one is a hop to anvil (the
                  response cache is skipped on read and refreshed, the costliest path)
* ``lasso-hit``   (opt-in) the same proxy without that header: the answers come from its
                  response cache (the hit path, docs/caching.md)

For each round (order rotated every round) and each contender: start it, validate one
JSON-RPC answer with Python, warm up, then measure a ``wrk -t1 -c64`` window (throughput,
CPU per request of the proxy process tree from /proc/<pid>/stat, latency) and a
``wrk -t1 -c1`` window (latency), read peak RSS (VmHWM), stop it. Medians across rounds.

    .venv/bin/python -m bench.overhead            # 3 rounds, 8 s / 5 s windows
    .venv/bin/python -m bench.overhead --quick    # 1 round, 2 s windows (< 40 s)

Writes bench/results/overhead-<timestamp>.json and .md and prints the Markdown report.
A contender that fails to start is reported as unavailable, the others still run.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import http.client
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
ALL_CONTENDERS = ("direct", "floor", "lean-floor", "lasso")
KEYED = "lasso-key"
"""Lasso with a client key on every request and a per-key limit (never reached): what the
key check and the limit add to a hop (docs/security.md). Add it with --contenders."""
HIT = "lasso-hit"
"""Lasso answering from its response cache: every other Lasso contender sends
``Cache-Control: no-cache`` (a hop each time), this one does not (docs/caching.md). Add it
with --contenders."""
KNOWN_CONTENDERS = (*ALL_CONTENDERS, KEYED, HIT)
NO_CACHE = {"Cache-Control": "no-cache"}
BENCH_KEY = "lasso_bench-overhead-key-000000000000"

DEFAULT_LASSO_CMD = "{root}/.venv/bin/lasso serve --profiles {profiles} --port {port}"
DEFAULT_PROFILE_TEMPLATE = """\
---
name: Bench
slug: public
---
chains:
  anvil:
    chain_id: 31337
    providers:
      - id: anvil
        url: {anvil_url}
"""
DEFAULT_RPC_PATH = "/rpc/anvil"
DEFAULT_HEALTH_PATH = "/api/health"

_ACCOUNT0 = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
METHOD_PARAMS: dict[str, list[Any]] = {
    "eth_blockNumber": [],
    "eth_chainId": [],  # answered by Lasso itself: the floor of a JSON-RPC request
    "eth_syncing": [],  # never cached: the uncacheable path
    "eth_getBalance": [_ACCOUNT0, "latest"],
    "eth_call": [
        {
            "to": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
            "data": "0x70a08231000000000000000000000000" + _ACCOUNT0[2:].lower(),
        },
        "latest",
    ],
}

WRK_MARKER = "WRKJSON "

# ---------------------------------------------------------------------------------------
# Pure helpers (tested in tests/test_bench_helpers.py)
# ---------------------------------------------------------------------------------------


def request_body(method: str, request_id: int = 1) -> bytes:
    """The JSON-RPC request body for one of METHOD_PARAMS (compact, stable)."""
    payload = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": method,
        "params": METHOD_PARAMS[method],
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def wrk_lua_script(body: bytes, headers: Mapping[str, str] | None = None) -> str:
    """wrk script: POST ``body`` (with ``headers``); ``done()`` prints one JSON line prefixed
    with WRK_MARKER."""
    text = body.decode()
    if "]==]" in text:
        raise ValueError("body must not contain ']==]'")
    extra = ""
    for name, value in (headers or {}).items():
        if "]==]" in name + value:
            raise ValueError("headers must not contain ']==]'")
        extra += f"wrk.headers[ [==[{name}]==] ] = [==[{value}]==]\n"
    return f"""\
wrk.method = "POST"
wrk.body = [==[{text}]==]
wrk.headers["Content-Type"] = "application/json"
{extra}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{WRK_MARKER}{{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}},' ..
    '"latency_us":{{"min":%d,"max":%d,"mean":%.2f,"stdev":%.2f,' ..
    '"p50":%d,"p90":%d,"p99":%d,"p999":%d}}}}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.max, latency.mean, latency.stdev,
    latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
"""


def keyed_profile(text: str, key: str) -> str:
    """``text`` (a profile with front matter) requiring ``key`` and limiting it far above
    any load the benchmark makes (so the limit runs on every request and never refuses)."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        raise ValueError("the profile needs front matter")
    block = (
        "rps_limit: 1000000\nburst_limit: 1000000\n"
        f"auth:\n  keys:\n    - id: bench\n      key: {key}\n"
    )
    return lines[0] + block + "".join(lines[1:])


def parse_wrk_output(text: str) -> dict[str, Any]:
    """Parse the JSON line printed by the ``done()`` hook of :func:`wrk_lua_script`.

    Adds ``rps`` (requests / duration), ``non2xx`` (wrk's status errors: HTTP >= 400) and
    ``socket_errors`` (connect + read + write + timeout).
    """
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(WRK_MARKER):
            data: dict[str, Any] = json.loads(line[len(WRK_MARKER) :])
            break
    else:
        raise ValueError("no wrk summary line (" + WRK_MARKER.strip() + ") in output")
    errors = data["errors"]
    duration_s = data["duration_us"] / 1e6
    data["rps"] = data["requests"] / duration_s if duration_s > 0 else 0.0
    data["non2xx"] = errors["status"]
    data["socket_errors"] = errors["connect"] + errors["read"] + errors["write"] + errors["timeout"]
    return data


def parse_proc_stat(text: str) -> tuple[int, int, int]:
    """``(ppid, utime, stime)`` in clock ticks from the text of /proc/<pid>/stat.

    The comm field may hold spaces and parentheses, so split after the LAST ')'.
    """
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    return int(rest[1]), int(rest[11]), int(rest[12])


def parse_status_kb(text: str, key: str = "VmHWM") -> int:
    """A ``kB`` value (e.g. VmHWM, VmRSS) from the text of /proc/<pid>/status; 0 if absent."""
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def parse_proc_cpu_line(text: str) -> tuple[int, int]:
    """``(busy, total)`` jiffies from the aggregate ``cpu`` line of /proc/stat."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]]
            idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
            total = sum(values[:8])  # guest time is already counted in user/nice
            return total - idle, total
    raise ValueError("no aggregate cpu line")


def descendants(root: int, parents: Mapping[int, int]) -> list[int]:
    """``root`` and all its descendants, given a pid -> ppid map."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, ()))
    return out


def rotated(items: Sequence[T], round_index: int) -> list[T]:
    """The order for round ``round_index``: shifted left by the round number."""
    if not items:
        return []
    k = round_index % len(items)
    return list(items[k:]) + list(items[:k])


def median(values: Iterable[float | None]) -> float | None:
    """Median of the non-None values, None when there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def per_request_us(ticks: int, requests: int, clk_tck: int) -> float | None:
    """CPU microseconds per request from a tick delta."""
    if requests <= 0:
        return None
    return ticks * 1e6 / clk_tck / requests


ROUND_METRICS = (
    "rps_c64",
    "proxy_cpu_us_c64",
    "anvil_cpu_us_c64",
    "proxy_cpu_us_c1",
    "host_busy_pct_c64",
    "p50_us_c1",
    "p90_us_c1",
    "p99_us_c1",
    "p50_us_c64",
    "p90_us_c64",
    "p99_us_c64",
    "rps_c1",
    "peak_rss_mb",
)


def summarize(contenders: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Medians per contender, latency added vs ``direct``, and CPU ratios.

    ``contenders[name]["rounds"]`` is a list of dicts with ROUND_METRICS keys (and error
    counts ``errors``). Returns ``{"medians": {...}, "added": {...}, "ratios": {...}}``.
    """
    medians: dict[str, dict[str, float | None]] = {}
    for name, info in contenders.items():
        rounds = info.get("rounds") or []
        if not rounds:
            continue
        medians[name] = {m: median(r.get(m) for r in rounds) for m in ROUND_METRICS}
        medians[name]["errors"] = sum(r.get("errors", 0) for r in rounds)
    added: dict[str, dict[str, float | None]] = {}
    base = medians.get("direct")
    for name, m in medians.items():
        row: dict[str, float | None] = {}
        for key in ("p50_us_c1", "p99_us_c1", "p50_us_c64", "p99_us_c64"):
            if base is None or m.get(key) is None or base.get(key) is None:
                row[key] = None
            else:
                row[key] = m[key] - base[key]  # type: ignore[operator]
        added[name] = row
    ratios: dict[str, float | None] = {}
    for num, den in (
        ("lasso", "floor"),
        ("lasso", "lean-floor"),
        ("floor", "lean-floor"),
        (HIT, "lasso"),
    ):
        a = medians.get(num, {}).get("proxy_cpu_us_c64")
        b = medians.get(den, {}).get("proxy_cpu_us_c64")
        ratios[f"{num}/{den}"] = a / b if a is not None and b else None
    return {"medians": medians, "added": added, "ratios": ratios}


def _fmt(value: float | None, digits: int = 0, signed: bool = False) -> str:
    if value is None:
        return "–"
    text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return text


def render_markdown(result: Mapping[str, Any]) -> str:
    """The Markdown report for one run (``result`` as written to the JSON file)."""
    meta = result["meta"]
    summary = result["summary"]
    medians, added, ratios = summary["medians"], summary["added"], summary["ratios"]
    lines = [
        f"# Overhead benchmark — {meta['timestamp']}",
        "",
        f"`{meta['method']}`, {meta['rounds']} round(s), windows {meta['duration_s']} s at "
        f"c={meta['connections']} / {meta['latency_duration_s']} s at c=1, warmup "
        f"{meta['warmup_s']} s, wrk -t1; {meta['cpus']} CPU(s); git {meta['git']}. "
        "Medians across rounds; order rotated each round.",
        "",
        f"| contender | req/s c={meta['connections']} | proxy CPU µs/req | anvil CPU µs/req "
        f"| p50 c=1 µs | +p50 c=1 | +p99 c=1 | p50 c={meta['connections']} µs "
        f"| +p50 c={meta['connections']} | +p99 c={meta['connections']} | peak RSS MB "
        "| host busy % | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in meta["contenders"]:
        info = result["contenders"].get(name, {})
        if name not in medians:
            reason = info.get("reason", "not run")
            lines.append(f"| {name} | unavailable: {reason} |" + " |" * 11)
            continue
        m, a = medians[name], added[name]
        cpu = _fmt(m["proxy_cpu_us_c64"], 1)
        if name == "direct":
            cpu = f"({_fmt(m['proxy_cpu_us_c64'], 1)} anvil)"
        lines.append(
            f"| {name} | {_fmt(m['rps_c64'])} | {cpu} | {_fmt(m['anvil_cpu_us_c64'], 1)} "
            f"| {_fmt(m['p50_us_c1'])} | {_fmt(a['p50_us_c1'], signed=True)} "
            f"| {_fmt(a['p99_us_c1'], signed=True)} | {_fmt(m['p50_us_c64'])} "
            f"| {_fmt(a['p50_us_c64'], signed=True)} | {_fmt(a['p99_us_c64'], signed=True)} "
            f"| {_fmt(m['peak_rss_mb'], 1)} | {_fmt(m['host_busy_pct_c64'])} "
            f"| {int(m['errors'] or 0)} |"
        )
    lines.append("")
    ratio_parts = [f"{k} = {_fmt(v, 2)}" for k, v in ratios.items() if v is not None]
    if ratio_parts:
        lines.append("CPU ratios (proxy CPU µs/req at c=64): " + ", ".join(ratio_parts) + ".")
        lines.append("")
    lines.append("Per-round proxy CPU µs/req at c=64 (spread shows the noise):")
    lines.append("")
    for name in meta["contenders"]:
        rounds = result["contenders"].get(name, {}).get("rounds") or []
        if rounds:
            values = ", ".join(_fmt(r.get("proxy_cpu_us_c64"), 1) for r in rounds)
            lines.append(f"- {name}: {values}")
    lines += [
        "",
        "Proxy CPU = user+system time of the proxy process tree during the c=64 window / "
        "requests completed (for `direct`: anvil's). Lasso contenders send "
        "`Cache-Control: no-cache` (a hop every time), except `lasso-hit` (answered from the "
        "response cache). `+` columns = latency added vs `direct` "
        "in this run. Identical forwarders differ by up to ±15% between runs: compare within "
        "one run. The load driver, proxy and anvil share the host's cores.",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# /proc sampling
# ---------------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _all_parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            text = _read(f"/proc/{entry}/stat")
            if text:
                parents[int(entry)] = parse_proc_stat(text)[0]
    return parents


def tree_cpu_ticks(root: int) -> dict[int, int]:
    """utime+stime ticks per pid of ``root``'s process tree."""
    out: dict[int, int] = {}
    for pid in descendants(root, _all_parents()):
        text = _read(f"/proc/{pid}/stat")
        if text:
            _, utime, stime = parse_proc_stat(text)
            out[pid] = utime + stime
    return out


def cpu_delta(before: Mapping[int, int], after: Mapping[int, int]) -> int:
    return sum(t - before.get(pid, 0) for pid, t in after.items())


def tree_peak_rss_kb(root: int) -> int:
    total = 0
    for pid in descendants(root, _all_parents()):
        text = _read(f"/proc/{pid}/status")
        if text:
            total += parse_status_kb(text, "VmHWM")
    return total


def host_cpu() -> tuple[int, int]:
    return parse_proc_cpu_line(_read("/proc/stat") or "")


# ---------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------


class Unavailable(Exception):
    """A contender could not be started or answered wrongly."""

    def __init__(self, reason: str, log_tail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.log_tail = log_tail


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, n: int = 1500) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:].strip()
        except OSError:
            return ""

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        # The child was started in its own session: its group id is its pid.
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(timeout=5)


def spawn(name: str, argv: Sequence[str], logdir: Path) -> Proc:
    log = logdir / f"{name}.log"
    with open(log, "ab") as f:
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=ROOT,
            )
        except OSError as exc:
            raise Unavailable(f"cannot start {argv[0]}: {exc}") from exc
    return Proc(name, popen, log)


def http_request(
    port: int, method: str, path: str, body: bytes | None = None, timeout: float = 5.0
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_ready(proc: Proc, port: int, probe: str, timeout: float, body: bytes) -> None:
    """Poll until GET ``probe`` answers 200 (or, for probe "rpc:<path>", a POST does)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            tail = proc.log_tail(400).splitlines()
            raise Unavailable(
                f"exited with code {proc.popen.returncode}: {tail[-1] if tail else 'no output'}",
                proc.log_tail(),
            )
        try:
            if probe.startswith("rpc:"):
                status, _ = http_request(port, "POST", probe[4:], body, timeout=1.0)
            else:
                status, _ = http_request(port, "GET", probe, timeout=1.0)
            if status == 200:
                return
            last = f"HTTP {status}"
        except (OSError, http.client.HTTPException) as exc:
            last = type(exc).__name__
        time.sleep(0.05)
    raise Unavailable(f"not ready after {timeout:.0f} s ({probe}: {last})", proc.log_tail())


def validate(port: int, path: str, method: str, headers: Mapping[str, str] | None = None) -> None:
    """Two requests on one keep-alive connection: HTTP 200, jsonrpc 2.0, same id, a result."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5.0)
    try:
        for request_id in (7, 424242):
            conn.request(
                "POST",
                path,
                body=request_body(method, request_id),
                headers={"Content-Type": "application/json", **(headers or {})},
            )
            resp = conn.getresponse()
            raw = resp.read()
            if resp.status != 200:
                raise Unavailable(f"validation: HTTP {resp.status}: {raw[:200]!r}")
            try:
                doc = json.loads(raw)
            except ValueError as exc:
                raise Unavailable(f"validation: not JSON: {raw[:200]!r}") from exc
            if (
                not isinstance(doc, dict)
                or doc.get("jsonrpc") != "2.0"
                or doc.get("id") != request_id
                or "result" not in doc
                or "error" in doc
            ):
                raise Unavailable(f"validation: bad answer for id {request_id}: {raw[:200]!r}")
    except (OSError, http.client.HTTPException) as exc:
        raise Unavailable(f"validation: {type(exc).__name__}: {exc}") from exc
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------
# Contenders
# ---------------------------------------------------------------------------------------


@dataclass
class Spec:
    """How to start one contender and where to send load."""

    name: str
    argv: list[str] | None  # None: no process (direct)
    path: str
    probe: str
    headers: dict[str, str] = field(default_factory=dict)  # on every request
    hit: bool = False  # lasso-hit: no Cache-Control: no-cache (the shared script)
    script: Path | None = None  # its wrk script when not the shared one
    reason: str = ""  # set when it is unavailable
    log_tail: str = ""
    rounds: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Env:
    args: argparse.Namespace
    anvil: Proc
    anvil_port: int
    workdir: Path
    script: Path
    body: bytes

    @property
    def anvil_url(self) -> str:
        return f"http://127.0.0.1:{self.anvil_port}"


def build_argv(env: Env, name: str, port: int) -> list[str] | None:
    py = sys.executable
    up = env.anvil_url
    if name == "direct":
        return None
    if name == "floor":
        return [py, str(BENCH / "floor_aiohttp.py"), "--port", str(port), "--upstream", up]
    if name == "lean-floor":
        return [py, str(BENCH / "floor_lean.py"), "--port", str(port), "--upstream", up]
    template = env.args.lasso_cmd if name in ("lasso", KEYED, HIT) else env.args.extra[name]
    text = template.format(
        root=ROOT,
        python=py,
        profiles=env.workdir / ("profiles-key" if name == KEYED else "profiles"),
        port=port,
        anvil_url=up,
        anvil_port=env.anvil_port,
    )
    return shlex.split(text)


def write_profiles(env: Env) -> None:
    args = env.args
    template = (
        Path(args.profile_template).read_text()
        if args.profile_template
        else DEFAULT_PROFILE_TEMPLATE
    )
    text = template.replace("{anvil_url}", env.anvil_url).replace(
        "{anvil_port}", str(env.anvil_port)
    )
    pdir = env.workdir / "profiles"
    pdir.mkdir(parents=True, exist_ok=True)
    (pdir / profile_file_name(text)).write_text(text)
    kdir = env.workdir / "profiles-key"
    kdir.mkdir(parents=True, exist_ok=True)
    (kdir / profile_file_name(text)).write_text(keyed_profile(text, BENCH_KEY))


def profile_file_name(text: str) -> str:
    """``<slug>.yml`` from the front matter (the loader wants slug == file name)."""
    lines = text.splitlines()
    if lines and lines[0].strip() == "---":
        for line in lines[1:]:
            if line.strip() == "---":
                break
            key, _, value = line.partition(":")
            if key.strip() == "slug" and value.strip():
                return value.strip().strip("'\"") + ".yml"
    return "bench.yml"


def run_wrk(
    env: Env,
    port: int,
    path: str,
    connections: int,
    duration: float,
    script: Path | None = None,
) -> dict[str, Any]:
    argv = [
        env.args.wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "-s",
        str(script or env.script),
        f"http://127.0.0.1:{port}{path}",
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()[:500]}")
    return parse_wrk_output(proc.stdout)


def measure_window(
    env: Env,
    target_pid: int,
    port: int,
    path: str,
    connections: int,
    duration: float,
    script: Path | None = None,
) -> dict[str, Any]:
    """One measured wrk window with CPU of the target and of anvil sampled around it."""
    t0, a0, h0 = tree_cpu_ticks(target_pid), tree_cpu_ticks(env.anvil.pid), host_cpu()
    wrk = run_wrk(env, port, path, connections, duration, script)
    t1, a1, h1 = tree_cpu_ticks(target_pid), tree_cpu_ticks(env.anvil.pid), host_cpu()
    n = wrk["requests"]
    busy = (h1[0] - h0[0]) / (h1[1] - h0[1]) * 100 if h1[1] > h0[1] else None
    return {
        "wrk": wrk,
        "proxy_cpu_ticks": cpu_delta(t0, t1),
        "anvil_cpu_ticks": cpu_delta(a0, a1),
        "proxy_cpu_us": per_request_us(cpu_delta(t0, t1), n, CLK_TCK),
        "anvil_cpu_us": per_request_us(cpu_delta(a0, a1), n, CLK_TCK),
        "host_busy_pct": busy,
    }


def run_contender_round(env: Env, spec: Spec) -> dict[str, Any]:
    args = env.args
    proc: Proc | None = None
    if spec.argv is None and spec.name == "direct":
        port, pid = env.anvil_port, env.anvil.pid
    else:
        port = free_port()
        argv = build_argv(env, spec.name, port)
        assert argv is not None
        proc = spawn(spec.name, argv, env.workdir)
        pid = proc.pid
    try:
        if proc is not None:
            wait_ready(proc, port, spec.probe, args.start_timeout, env.body)
        validate(port, spec.path, args.method, spec.headers)
        run_wrk(env, port, spec.path, args.connections, args.warmup, spec.script)
        hi = measure_window(env, pid, port, spec.path, args.connections, args.duration, spec.script)
        if args.warmup > 0:
            run_wrk(env, port, spec.path, 1, min(args.warmup, 1.0), spec.script)
        lo = measure_window(env, pid, port, spec.path, 1, args.latency_duration, spec.script)
        rss_kb = tree_peak_rss_kb(pid)
        if proc is not None and proc.popen.poll() is not None:
            raise Unavailable("died during the run", proc.log_tail())
    finally:
        if proc is not None:
            proc.stop()
    errors = sum(w["wrk"]["non2xx"] + w["wrk"]["socket_errors"] for w in (hi, lo))
    return {
        "rps_c64": hi["wrk"]["rps"],
        "rps_c1": lo["wrk"]["rps"],
        "proxy_cpu_us_c64": hi["proxy_cpu_us"],
        "anvil_cpu_us_c64": hi["anvil_cpu_us"],
        "proxy_cpu_us_c1": lo["proxy_cpu_us"],
        "host_busy_pct_c64": hi["host_busy_pct"],
        "p50_us_c1": lo["wrk"]["latency_us"]["p50"],
        "p90_us_c1": lo["wrk"]["latency_us"]["p90"],
        "p99_us_c1": lo["wrk"]["latency_us"]["p99"],
        "p50_us_c64": hi["wrk"]["latency_us"]["p50"],
        "p90_us_c64": hi["wrk"]["latency_us"]["p90"],
        "p99_us_c64": hi["wrk"]["latency_us"]["p99"],
        "peak_rss_mb": rss_kb / 1024,
        "errors": errors,
        "windows": {"c64": hi, "c1": lo},
    }


def make_specs(args: argparse.Namespace) -> list[Spec]:
    specs = []
    for name in args.contenders:
        if name == "direct":
            specs.append(Spec(name, None, "/", "rpc:/"))
        elif name in ("floor", "lean-floor"):
            specs.append(Spec(name, [], DEFAULT_RPC_PATH, DEFAULT_HEALTH_PATH))
        elif name == KEYED:
            headers = {"X-Lasso-Api-Key": BENCH_KEY, **NO_CACHE}
            specs.append(Spec(name, [], args.rpc_path, args.health_path, headers=headers))
        elif name == HIT or (name in args.extra and name.endswith("-hit")):
            specs.append(Spec(name, [], args.rpc_path, args.health_path, hit=True))
        else:  # lasso and --extra contenders speak the lasso protocol: a hop each time
            headers = dict(NO_CACHE)
            specs.append(Spec(name, [], args.rpc_path, args.health_path, headers=headers))
    return specs


def _tool_version(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        text = (out.stdout or out.stderr).strip().splitlines()
        return text[0] if text else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def _git() -> str:
    head = _tool_version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    try:
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        dirty = ""
    return head + ("+dirty" if dirty else "")


def default_anvil() -> str:
    native = ROOT / "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
    if native.exists():
        return str(native)  # skip the node wrapper: one process less on the cores
    return str(ROOT / "node_modules/.bin/anvil")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.overhead",
        description="Cost of one proxy hop: direct vs floors vs lasso, one run, rotated order.",
    )
    p.add_argument(
        "--contenders",
        default=",".join(ALL_CONTENDERS),
        help="comma-separated subset/order of: direct,floor,lean-floor,lasso,lasso-key and "
        "--extra names (default: direct,floor,lean-floor,lasso)",
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=8.0, help="c=64 window, seconds")
    p.add_argument("--latency-duration", type=float, default=5.0, help="c=1 window, seconds")
    p.add_argument("--warmup", type=float, default=2.0, help="warmup before each window, s")
    p.add_argument("--connections", type=int, default=64, help="wrk -c for the throughput window")
    p.add_argument("--quick", action="store_true", help="1 round, 2 s windows, 1 s warmup")
    p.add_argument("--method", choices=sorted(METHOD_PARAMS), default="eth_blockNumber")
    p.add_argument(
        "--lasso-cmd",
        default=DEFAULT_LASSO_CMD,
        help="command template; placeholders {root} {python} {profiles} {port} {anvil_url} "
        "{anvil_port} (default: %(default)s)",
    )
    p.add_argument(
        "--profile-template",
        help="file written as <profiles>/<slug>.yml; {anvil_url} and {anvil_port} are "
        "substituted (default: a one-chain 'public' profile with chain 'anvil')",
    )
    p.add_argument("--rpc-path", default=DEFAULT_RPC_PATH, help="lasso's JSON-RPC route")
    p.add_argument("--health-path", default=DEFAULT_HEALTH_PATH, help="lasso's readiness route")
    p.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="NAME=CMD",
        help="another lasso-like contender (same placeholders, routes and profile as lasso); "
        "add NAME to --contenders (appended automatically)",
    )
    p.add_argument(
        "--start-timeout", type=float, default=15.0, help="readiness wait per start, seconds"
    )
    p.add_argument("--anvil", default=default_anvil(), help="anvil executable")
    p.add_argument("--wrk", default=shutil.which("wrk") or "/usr/bin/wrk")
    p.add_argument("--out-dir", default=str(BENCH / "results"))
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.latency_duration, args.warmup = 1, 2.0, 2.0, 1.0
    extra: dict[str, str] = {}
    for item in args.extra:
        name, sep, cmd = item.partition("=")
        if not sep or not name or not cmd:
            p.error(f"--extra wants NAME=CMD, got {item!r}")
        extra[name] = cmd
    args.extra = extra
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    names += [n for n in extra if n not in names]
    unknown = [n for n in names if n not in KNOWN_CONTENDERS and n not in extra]
    if unknown:
        p.error(f"unknown contender(s): {', '.join(unknown)}")
    args.contenders = names
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(args.wrk).exists():
        log(f"wrk not found at {args.wrk}")
        return 2
    started = _dt.datetime.now()
    stamp = started.strftime("%Y%m%d-%H%M%S")
    body = request_body(args.method)
    specs = make_specs(args)
    with tempfile.TemporaryDirectory(prefix="lasso-bench-") as tmp:
        workdir = Path(tmp)
        script = workdir / "post.lua"
        script.write_text(wrk_lua_script(body))
        for spec in specs:
            if spec.headers:
                spec.script = workdir / f"post-{spec.name}.lua"
                spec.script.write_text(wrk_lua_script(body, spec.headers))
        anvil_port = free_port()
        anvil = spawn(
            "anvil",
            [args.anvil, "--host", "127.0.0.1", "--port", str(anvil_port), "--silent"],
            workdir,
        )
        env = Env(args, anvil, anvil_port, workdir, script, body)
        try:
            try:
                wait_ready(anvil, anvil_port, "rpc:/", args.start_timeout, body)
            except Unavailable as exc:
                log(f"anvil unavailable: {exc}")
                return 2
            write_profiles(env)
            for r in range(args.rounds):
                order = rotated(specs, r)
                log(f"round {r + 1}/{args.rounds}: " + ", ".join(s.name for s in order))
                for spec in order:
                    if spec.reason:
                        continue
                    try:
                        row = run_contender_round(env, spec)
                    except Unavailable as exc:
                        spec.reason = exc.reason.replace("\n", " ")[:300]
                        spec.log_tail = exc.log_tail
                        log(f"  {spec.name}: UNAVAILABLE ({spec.reason})")
                        continue
                    spec.rounds.append(row)
                    log(
                        f"  {spec.name}: {row['rps_c64']:.0f} req/s, proxy CPU "
                        f"{_fmt(row['proxy_cpu_us_c64'], 1)} µs/req, p50 c=1 "
                        f"{row['p50_us_c1']} µs, errors {row['errors']}"
                    )
        finally:
            anvil.stop()
    contenders = {
        s.name: {
            "status": "ok" if s.rounds else "unavailable",
            "reason": s.reason,
            "log_tail": s.log_tail,
            "rounds": s.rounds,
        }
        for s in specs
    }
    result = {
        "meta": {
            "timestamp": started.isoformat(timespec="seconds"),
            "method": args.method,
            "body": body.decode(),
            "rounds": args.rounds,
            "duration_s": args.duration,
            "latency_duration_s": args.latency_duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "contenders": [s.name for s in specs],
            "lasso_cmd": args.lasso_cmd,
            "cpus": os.cpu_count(),
            "clk_tck": CLK_TCK,
            "python": sys.version.split()[0],
            "wrk": _tool_version([args.wrk, "--version"]),
            "anvil": _tool_version([args.anvil, "--version"]),
            "git": _git(),
        },
        "contenders": contenders,
        "summary": summarize(contenders),
    }
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"overhead-{stamp}.json"
    md_path = out_dir / f"overhead-{stamp}.md"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    report = render_markdown(result)
    md_path.write_text(report)
    print(report)
    log(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
