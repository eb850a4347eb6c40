"""Shared pieces of the benchmark suite: statistics, processes, load, reports.

Pure helpers (unit-tested in ``tests/test_bench_suite.py``): :func:`percentile`,
:func:`latency_summary`, :func:`lstsq_slope`, :func:`quartile_medians`,
:func:`trend_verdict`, :func:`decode_meta`, :func:`cdf_points`, :func:`bucket_series`,
:func:`parse_loadavg`, :func:`markdown_table`, :func:`fmt`, :func:`request_for`.

IO helpers: :class:`SimProcess` (``lasso sim`` with a generated spec and its admin API),
:class:`LassoProcess` (``lasso serve`` with a generated profile), :class:`RpcClient` (one
aiohttp session, a JSON-RPC call with its outcome judged the way a client would),
:func:`host_sample` (load average and whole-machine CPU busy), and :func:`save_report`
(``bench/results/<name>-<stamp>.{json,md,png}``).

Every benchmark runs its upstreams (the simulator) and the proxy as separate processes, so
the load driver in this process measures what a client sees.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as _dt
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # pragma: no cover - run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.overhead import (  # noqa: E402 - after the script-mode path fix
    CLK_TCK,
    Proc,
    Unavailable,
    cpu_delta,
    descendants,
    free_port,
    host_cpu,
    parse_status_kb,
    spawn,
    tree_cpu_ticks,
)

__all__ = [
    "CLK_TCK",
    "MIX_METHODS",
    "RESULTS",
    "ROOT",
    "LassoProcess",
    "Outcome",
    "Proc",
    "RpcClient",
    "SimProcess",
    "Unavailable",
    "admin_update",
    "bucket_series",
    "cdf_points",
    "chain_profile",
    "cpu_delta",
    "decode_meta",
    "env_meta",
    "fmt",
    "free_port",
    "host_busy_pct",
    "host_sample",
    "latency_summary",
    "log",
    "lstsq_slope",
    "markdown_table",
    "open_fds",
    "parse_loadavg",
    "percentile",
    "pyplot",
    "quartile_medians",
    "request_for",
    "run_loop",
    "save_report",
    "spawn",
    "timestamp",
    "tree_cpu_ticks",
    "tree_rss_kb",
    "trend_verdict",
]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LASSO = ROOT / ".venv" / "bin" / "lasso"

# ---------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float, *, presorted: bool = False) -> float | None:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks.

    The same definition as numpy's default (``method="linear"``): rank ``q/100 * (n-1)``.
    Returns ``None`` for an empty sequence.

    Raises:
        ValueError: when ``q`` is outside 0..100.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q!r}")
    if not values:
        return None
    data = values if presorted else sorted(values)
    rank = q / 100 * (len(data) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(data) - 1)
    frac = rank - lo
    return float(data[lo] + (data[hi] - data[lo]) * frac)


def latency_summary(values_ms: Iterable[float]) -> dict[str, float | int | None]:
    """``{n, mean, p50, p95, p99, max}`` of latencies in ms (``None`` values when empty)."""
    data = sorted(values_ms)
    if not data:
        return {"n": 0, "mean": None, "p50": None, "p95": None, "p99": None, "max": None}
    return {
        "n": len(data),
        "mean": sum(data) / len(data),
        "p50": percentile(data, 50, presorted=True),
        "p95": percentile(data, 95, presorted=True),
        "p99": percentile(data, 99, presorted=True),
        "max": data[-1],
    }


def lstsq_slope(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float] | None:
    """``(slope, intercept)`` of the least-squares line through ``(xs, ys)``.

    Returns ``None`` with fewer than two points or when every ``x`` is the same.

    Raises:
        ValueError: when the sequences differ in length.
    """
    if len(xs) != len(ys):
        raise ValueError(f"xs and ys differ in length ({len(xs)} vs {len(ys)})")
    n = len(xs)
    if n < 2:
        return None
    mx = sum(xs) / n
    my = sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    return slope, my - slope * mx


def quartile_medians(values: Sequence[float]) -> tuple[float, float] | None:
    """Medians of the first and the last quarter of ``values`` (in their order).

    A quarter holds ``max(1, n // 4)`` values. Returns ``None`` with fewer than 2 values.
    """
    n = len(values)
    if n < 2:
        return None
    k = max(1, n // 4)
    first = percentile(values[:k], 50)
    last = percentile(values[-k:], 50)
    assert first is not None and last is not None
    return first, last


def trend_verdict(
    slope_per_min: float | None,
    first_q: float,
    last_q: float,
    minutes: float,
    *,
    tolerance_abs: float = 2.0,
    tolerance_pct: float = 2.0,
) -> str:
    """``"growing"``, ``"shrinking"`` or ``"flat"`` for a memory series.

    Growth must show in both measures to count: the last-quarter median exceeds the
    first-quarter median by more than the tolerance, *and* the least-squares slope
    projected over the window (``slope * minutes``) exceeds it too. The tolerance is
    ``max(tolerance_abs, tolerance_pct % of the first-quarter median)`` in the series' unit
    (MB for RSS). A series without a slope (too few samples) is ``"flat"`` only when its
    quartiles agree, else ``"inconclusive"``.
    """
    tol = max(tolerance_abs, abs(first_q) * tolerance_pct / 100)
    delta = last_q - first_q
    if slope_per_min is None:
        return "flat" if abs(delta) <= tol else "inconclusive"
    projected = slope_per_min * minutes
    if delta > tol and projected > tol:
        return "growing"
    if delta < -tol and projected < -tol:
        return "shrinking"
    return "flat"


def decode_meta(value: str | None) -> dict[str, Any] | None:
    """The object in an ``X-Lasso-Meta`` header (base64url JSON, padding optional).

    Returns ``None`` for a missing or undecodable header (never raises).
    """
    if not value:
        return None
    text = value.strip()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        doc = json.loads(raw)
    except (ValueError, TypeError):
        return None
    return doc if isinstance(doc, dict) else None


def cdf_points(values: Iterable[float], max_points: int = 400) -> tuple[list[float], list[float]]:
    """``(xs, ys)`` of the empirical CDF, thinned to at most ``max_points`` points.

    ``ys`` are fractions in (0, 1]; the last point is always the maximum at 1.0.
    """
    data = sorted(values)
    n = len(data)
    if n == 0:
        return [], []
    if max_points < 2:
        max_points = 2
    step = max(1, math.ceil(n / max_points))
    idx = list(range(step - 1, n, step))
    if idx[-1] != n - 1:
        idx.append(n - 1)
    return [data[i] for i in idx], [(i + 1) / n for i in idx]


def bucket_series(
    points: Iterable[tuple[float, float]],
    width: float,
    reduce: Callable[[list[float]], float | None],
) -> tuple[list[float], list[float]]:
    """Group ``(t, value)`` points into buckets of ``width`` seconds and reduce each.

    Returns ``(bucket centers, reduced values)`` in time order, skipping empty buckets and
    buckets where ``reduce`` returns ``None``.

    Raises:
        ValueError: when ``width`` is not positive.
    """
    if width <= 0:
        raise ValueError(f"bucket width must be > 0, got {width!r}")
    buckets: dict[int, list[float]] = {}
    for t, v in points:
        buckets.setdefault(math.floor(t / width), []).append(v)
    xs: list[float] = []
    ys: list[float] = []
    for key in sorted(buckets):
        value = reduce(buckets[key])
        if value is not None:
            xs.append((key + 0.5) * width)
            ys.append(value)
    return xs, ys


def parse_loadavg(text: str) -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages from the text of ``/proc/loadavg``.

    Raises:
        ValueError: when the text does not start with three numbers.
    """
    parts = text.split()
    if len(parts) < 3:
        raise ValueError(f"not a loadavg line: {text!r}")
    return float(parts[0]), float(parts[1]), float(parts[2])


def fmt(value: float | int | None, digits: int = 1, *, signed: bool = False) -> str:
    """A number for a report cell: ``–`` for ``None``, fixed digits, optional sign."""
    if value is None:
        return "–"
    if isinstance(value, float) and not math.isfinite(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def markdown_table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], align: str = ""
) -> list[str]:
    """A Markdown table as lines. ``align`` has one ``l``/``r`` per column (default: the
    first column left, the others right)."""
    spec = align or "l" + "r" * (len(headers) - 1)
    if len(spec) != len(headers):
        raise ValueError("align needs one letter per column")
    rule = ["---:" if a == "r" else "---" for a in spec]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(rule) + "|"]
    for row in rows:
        cells = [str(c).replace("|", "\\|") for c in row]
        if len(cells) != len(headers):
            raise ValueError(f"row has {len(cells)} cells, expected {len(headers)}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


#: The request mix of the routing and failover benchmarks, in turn.
MIX_METHODS = ("eth_blockNumber", "eth_getBalance", "eth_call")
_TOKEN = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"  # a contract of the simulated chain


def request_for(k: int, request_id: int | None = None) -> tuple[str, bytes]:
    """The ``k``-th request of the shared mix: ``(method, JSON-RPC body)``.

    Methods rotate through :data:`MIX_METHODS`; addresses rotate through 16 accounts, so
    every contender gets the same sequence. Deterministic and cheap.
    """
    method = MIX_METHODS[k % len(MIX_METHODS)]
    account = f"0x{(k // len(MIX_METHODS)) % 16 + 1:040x}"
    params: list[Any]
    if method == "eth_blockNumber":
        params = []
    elif method == "eth_getBalance":
        params = [account, "latest"]
    else:
        data = "0x70a08231" + account[2:].rjust(64, "0")  # balanceOf(account)
        params = [{"to": _TOKEN, "data": data}, "latest"]
    body = {"jsonrpc": "2.0", "id": k if request_id is None else request_id, "method": method}
    body["params"] = params
    return method, json.dumps(body, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------------------
# Host and process sampling
# ---------------------------------------------------------------------------------------


def log(msg: str) -> None:
    """Progress to stderr (reports go to stdout)."""
    print(msg, file=sys.stderr, flush=True)


def timestamp() -> tuple[str, str]:
    """``(file stamp, ISO time)`` for result names, e.g. ``20261125-125232``."""
    now = _dt.datetime.now()
    return now.strftime("%Y%m%d-%H%M%S"), now.isoformat(timespec="seconds")


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def host_sample() -> dict[str, Any]:
    """Whole-machine counters to diff later: load averages and ``/proc/stat`` jiffies."""
    busy, total = host_cpu()
    try:
        load = parse_loadavg(_read("/proc/loadavg") or "")
    except ValueError:
        load = (0.0, 0.0, 0.0)
    return {"t": time.monotonic(), "busy": busy, "total": total, "loadavg": list(load)}


def host_busy_pct(before: Mapping[str, Any], after: Mapping[str, Any]) -> float | None:
    """Whole-machine CPU busy % between two :func:`host_sample` results."""
    total = after["total"] - before["total"]
    return (after["busy"] - before["busy"]) / total * 100 if total > 0 else None


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            text = _read(f"/proc/{entry}/stat")
            if text:
                try:
                    parents[int(entry)] = int(text[text.rindex(")") + 2 :].split()[1])
                except (ValueError, IndexError):
                    continue
    return parents


def tree_rss_kb(root: int, key: str = "VmRSS") -> int:
    """Sum of ``key`` (VmRSS, VmHWM) over ``root``'s process tree, in kB."""
    total = 0
    for pid in descendants(root, _parents()):
        text = _read(f"/proc/{pid}/status")
        if text:
            total += parse_status_kb(text, key)
    return total


def open_fds(pid: int) -> int | None:
    """Open file descriptors of ``pid`` (sockets included), ``None`` if unreadable."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


# ---------------------------------------------------------------------------------------
# Processes: the simulator and the proxy
# ---------------------------------------------------------------------------------------


def _lasso_argv(*args: str) -> list[str]:
    if LASSO.exists():
        return [str(LASSO), *args]
    return [sys.executable, "-m", "lasso", *args]


class SimProcess:
    """``lasso sim --spec`` in its own process, with explicit ports and the admin API.

    Args:
        providers: ``{id: behaviour fields}`` (``lasso.sim.Behavior`` names).
        workdir: where the spec file and the log go.
        chain_id: the simulated chain id.
        block_time_ms: the simulated block time.
        seed: chain and fault seed.
        cache_size: blocks the simulated chain keeps built (its default when ``None``).
    """

    def __init__(
        self,
        providers: Mapping[str, Mapping[str, Any]],
        workdir: Path,
        *,
        chain_id: int = 1,
        block_time_ms: int = 2000,
        seed: str = "lasso-bench",
        cache_size: int | None = None,
    ) -> None:
        self.behaviors = {pid: dict(b) for pid, b in providers.items()}
        self.cache_size = cache_size
        self.workdir = workdir
        self.chain_id = chain_id
        self.block_time_ms = block_time_ms
        self.seed = seed
        self.admin_port = free_port()
        self.ports = {pid: free_port() for pid in providers}
        self.proc: Proc | None = None

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def url(self, provider_id: str) -> str:
        return f"http://127.0.0.1:{self.ports[provider_id]}"

    def ws_url(self, provider_id: str) -> str:
        return f"ws://127.0.0.1:{self.ports[provider_id]}/ws"

    def spec(self) -> dict[str, Any]:
        """The ``lasso sim --spec`` document."""
        chain: dict[str, Any] = {"chain_id": self.chain_id, "block_time_ms": self.block_time_ms}
        if self.cache_size is not None:
            chain["cache_size"] = self.cache_size
        return {
            "chains": [chain],
            "providers": [
                {"id": pid, "port": self.ports[pid], **behavior}
                for pid, behavior in self.behaviors.items()
            ],
        }

    def start(self, timeout: float = 20.0) -> None:
        """Write the spec, start the process, wait until the admin API lists the fleet.

        Raises:
            Unavailable: when it exits or does not answer in time.
        """
        path = self.workdir / "sim-spec.json"
        path.write_text(json.dumps(self.spec(), indent=1))
        argv = _lasso_argv(
            "sim", "--spec", str(path), "--base-port", str(self.admin_port), "--seed", self.seed
        )
        self.proc = spawn("sim", argv, self.workdir)
        _wait_http(self.proc, self.admin_port, "/providers", timeout)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def _wait_http(proc: Proc, port: int, path: str, timeout: float) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise Unavailable(f"{proc.name} exited ({proc.popen.returncode})", proc.log_tail())
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                return
            last = f"HTTP {resp.status}"
        except (OSError, http.client.HTTPException) as exc:
            last = type(exc).__name__
        finally:
            conn.close()
        time.sleep(0.05)  # process start-up poll
    raise Unavailable(f"{proc.name} not ready after {timeout:.0f} s ({last})", proc.log_tail())


def chain_profile(
    providers: Sequence[tuple[str, str, int]],
    *,
    chain_key: str = "ethereum",
    chain_id: int = 1,
    block_time_ms: int = 2000,
    default_strategy: str | None = None,
    ws_urls: Mapping[str, str] | None = None,
    cache: bool = True,
) -> str:
    """A ``public`` profile with one chain: ``providers`` as ``(id, url, priority)``.

    ``cache=False`` turns the response cache and coalescing off, for benchmarks that
    measure routing: every request then reaches a provider.
    """
    lines = [
        "---",
        "name: Bench",
        "slug: public",
        "---",
        "chains:",
        f"  {chain_key}:",
        f"    chain_id: {chain_id}",
        f"    block_time_ms: {block_time_ms}",
    ]
    if default_strategy or not cache:
        lines.append("    routing:")
    if default_strategy:
        lines.append(f"      default_strategy: {default_strategy}")
    if not cache:
        lines += ["      coalesce: false", "    cache:", "      enabled: false"]
    lines.append("    providers:")
    for pid, url, priority in providers:
        lines += [f"      - id: {pid}", f"        url: {url}", f"        priority: {priority}"]
        if ws_urls and pid in ws_urls:
            lines.append(f"        ws_url: {ws_urls[pid]}")
    return "\n".join(lines) + "\n"


class LassoProcess:
    """``lasso serve`` with one generated profile, on a free port.

    Args:
        profile: the profile text (slug ``public``).
        workdir: where the profile directory and the log go.
        name: log file name (``<name>.log``).
    """

    def __init__(self, profile: str, workdir: Path, name: str = "lasso") -> None:
        self.profile = profile
        self.workdir = workdir
        self.name = name
        self.port = free_port()
        self.proc: Proc | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        """Write the profile, start the node, wait for ``GET /api/health`` 200.

        Raises:
            Unavailable: when it exits or is not ready in time.
        """
        pdir = self.workdir / f"profiles-{self.name}"
        pdir.mkdir(parents=True, exist_ok=True)
        (pdir / "public.yml").write_text(self.profile)
        argv = _lasso_argv(
            "serve", "--profiles", str(pdir), "--port", str(self.port), "--log-level", "warning"
        )
        self.proc = spawn(self.name, argv, self.workdir)
        _wait_http(self.proc, self.port, "/api/health", timeout)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.popen.poll() is None


# ---------------------------------------------------------------------------------------
# The load driver's client
# ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    """What one JSON-RPC call looked like from the client."""

    ok: bool
    status: int
    latency_ms: float
    error: str | None = None
    meta: dict[str, Any] | None = None
    body: bytes = b""


class RpcClient:
    """One aiohttp session (keep-alive, no connection limit) for a load driver.

    Args:
        timeout_s: total timeout of one call; a call past it is an error ``timeout``.
    """

    def __init__(self, timeout_s: float = 15.0) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        )

    async def close(self) -> None:
        await self.session.close()

    async def call(
        self,
        url: str,
        body: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        expect_id: object = None,
        batch: bool = False,
    ) -> Outcome:
        """POST ``body``; judge the answer like a strict client.

        Success: HTTP 200, JSON, ``jsonrpc`` 2.0, a ``result`` and no ``error`` (for a batch:
        a list whose every item has a ``result``), the same ``id`` when ``expect_id`` is
        given. Anything else is an outcome with ``ok=False`` and a short ``error`` reason;
        never raises for network faults.
        """
        aiohttp = self._aiohttp
        hdrs = {"Content-Type": "application/json"}
        if headers:
            hdrs.update(headers)
        t0 = time.perf_counter()
        try:
            async with self.session.post(url, data=body, headers=hdrs) as resp:
                raw = await resp.read()
                status = resp.status
                meta = decode_meta(resp.headers.get("X-Lasso-Meta"))
        except TimeoutError:
            return Outcome(False, 0, (time.perf_counter() - t0) * 1000, "timeout")
        except aiohttp.ClientError as exc:
            return Outcome(False, 0, (time.perf_counter() - t0) * 1000, type(exc).__name__)
        latency = (time.perf_counter() - t0) * 1000
        ok, status, error = _judge(status, raw, expect_id, batch)
        return Outcome(ok, status, latency, error, meta, raw)


def _judge(status: int, raw: bytes, expect_id: object, batch: bool) -> tuple[bool, int, str | None]:
    if status != 200:
        return False, status, f"http_{status}"
    try:
        doc = json.loads(raw)
    except ValueError:
        return False, status, "invalid_json"
    items = doc if batch and isinstance(doc, list) else [doc]
    if batch and not isinstance(doc, list):
        return False, status, "rpc_error" if isinstance(doc, dict) and "error" in doc else "shape"
    for item in items:
        if not isinstance(item, dict) or item.get("jsonrpc") != "2.0":
            return False, status, "invalid_json_rpc"
        if "error" in item or "result" not in item:
            return False, status, "rpc_error"
    if expect_id is not None and not batch and doc.get("id") != expect_id:
        return False, status, "id_mismatch"
    return True, status, None


def run_loop(main: Any) -> Any:
    """Run a coroutine on uvloop when available (as ``lasso`` does), else asyncio."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def admin_update(
    client: RpcClient, sim: SimProcess, provider_id: str, **changes: Any
) -> dict[str, Any]:
    """Change a simulated provider's behaviour through the admin API; return its state.

    Raises:
        RuntimeError: when the admin API refuses the change.
    """
    url = f"{sim.admin_url}/providers/{provider_id}"
    async with client.session.post(url, data=json.dumps(changes)) as resp:
        raw = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"sim admin {provider_id} {changes}: HTTP {resp.status} {raw!r}")
        doc: dict[str, Any] = json.loads(raw)
        return doc


# ---------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------


def pyplot() -> Any | None:
    """``matplotlib.pyplot`` on the Agg backend, or ``None`` when matplotlib is missing
    (install the ``bench`` extra: ``uv pip install -e '.[bench]'``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_report(
    name: str,
    stamp: str,
    result: Mapping[str, Any],
    markdown: str,
    figure: Any | None,
    out_dir: Path = RESULTS,
) -> dict[str, str]:
    """Write ``<name>-<stamp>.json`` / ``.md`` / ``.png`` (the PNG only with a figure).

    Returns ``{"json": path, "md": path, "png": path?}``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir / f"{name}-{stamp}"
    paths = {"json": str(base) + ".json", "md": str(base) + ".md"}
    if figure is not None:
        paths["png"] = str(base) + ".png"
        figure.savefig(paths["png"], dpi=110, bbox_inches="tight")
        plt = pyplot()
        if plt is not None:
            plt.close(figure)
    Path(paths["json"]).write_text(json.dumps(result, indent=1, default=str) + "\n")
    Path(paths["md"]).write_text(markdown)
    return paths


def env_meta(stamp_iso: str) -> dict[str, Any]:
    """Run metadata shared by every report: time, CPUs, Python, git revision."""
    from bench.overhead import _git

    return {
        "timestamp": stamp_iso,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "git": _git(),
    }
