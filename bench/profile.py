"""Where one hop's CPU goes: a py-spy profile of ``lasso serve`` under load, by stage.

Starts anvil and ``lasso serve`` (the overhead benchmark's profile and route), warms up,
drives ``wrk -t1 -c64`` and samples the proxy with py-spy (1 kHz, no instrumentation
overhead) for the window. Each sample is attributed to a stage of the hop by its innermost
Lasso frame (:data:`STAGES`); the report gives each stage's share of the proxy's CPU and
its µs per request (share × measured CPU per request).

    .venv/bin/python -m bench.profile                 # 8 s window at c=64
    .venv/bin/python -m bench.profile --connections 1 # the same at concurrency 1

Needs py-spy (``uv pip install --python .venv/bin/python py-spy``) and, like the overhead
benchmark, wrk and anvil. Writes ``bench/results/profile-<ts>.{json,md}`` and the raw
py-spy samples next to them (``.raw``, one ``stack count`` line per distinct stack).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # pragma: no cover - run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.overhead import (  # noqa: E402
    BENCH,
    CLK_TCK,
    DEFAULT_PROFILE_TEMPLATE,
    DEFAULT_RPC_PATH,
    NO_CACHE,
    Unavailable,
    _git,
    cpu_delta,
    default_anvil,
    free_port,
    parse_wrk_output,
    profile_file_name,
    request_body,
    spawn,
    tree_cpu_ticks,
    wait_ready,
    wrk_lua_script,
)

#: (stage, substrings of a py-spy frame "function (file:line)") in matching order: a
#: sample belongs to the first stage whose key occurs in its innermost matching frame.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("client write (transport.write: kernel TCP path)", ("ServerConn._write (",)),
    ("upstream write (transport.write: kernel TCP path)", ("_Connection.send (",)),
    (
        "upstream response parse (httptools, connection release)",
        ("_Connection.data_received", "_Connection.on_", "_Connection._finish", "_release ("),
    ),
    (
        "client request parse (httptools callbacks)",
        ("RequestReader.", "ServerConn.data_received", "ServerConn.on_"),
    ),
    (
        "request task (create, done callback)",
        ("ServerConn._dispatch", "ServerConn._on_done", "WeakSet"),
    ),
    (
        "route and validate",
        ("RpcHandler.handle", "validate_item", "RouteResolver", "parse_rpc_path", "App.handle"),
    ),
    (
        "selection (candidates, tiers, strategy, admission)",
        ("ChainRouter.candidates", "selection.py", "tiering.py", ".admit (", "Breaker.state"),
    ),
    ("judge the upstream answer", ("judge (",)),
    ("attempt planner (decisions, facts)", ("planner.py", "attempts.py", "hedge.py")),
    (
        "record (evidence, method row, breaker, height)",
        (
            "record_success",
            "observe_height",
            "on_success",
            "breaker.py",
            "chainstate.py",
            "_record (",
        ),
    ),
    ("metrics and decision feed", ("record_request", "Histogram.observe", "EventBus")),
    (
        "pipeline glue (execute loop, coroutine resumes, upstream body)",
        (
            "execute (",
            "_judged (",
            "_finish (",
            "_run_single",
            "finish_item",
            "encode_upstream_request",
            "new_transport_id",
            "HttpUpstreamPool.request",
            "methods.py",
        ),
    ),
    ("encode the response", ("encode_response",)),
)
LOOP_STAGE = "event loop in C (uvloop: epoll, socket reads, callback dispatch)"
OTHER_STAGE = "other"


def stage_of(frames: Sequence[str]) -> str:
    """The stage of one sample, given its frames outermost first."""
    for frame in reversed(frames):
        for name, keys in STAGES:
            if any(k in frame for k in keys):
                return name
    leaf = frames[-1] if frames else ""
    if leaf.startswith(("Runner.run", "run (asyncio", "run_until_complete", "run_forever")):
        return LOOP_STAGE
    return OTHER_STAGE


def group_samples(lines: Iterable[str]) -> tuple[Counter[str], int]:
    """Sum py-spy ``--format raw`` lines (``f1;f2;...;fn count``) per stage."""
    stages: Counter[str] = Counter()
    total = 0
    for line in lines:
        line = line.rstrip("\n")
        stack, sep, count = line.rpartition(" ")
        if not sep or not count.isdigit():
            continue
        n = int(count)
        total += n
        stages[stage_of(stack.split(";"))] += n
    return stages, total


def stage_table(
    stages: Mapping[str, int], total: int, cpu_us: float | None
) -> list[dict[str, Any]]:
    rows = []
    for name, n in sorted(stages.items(), key=lambda kv: -kv[1]):
        share = n / total if total else 0.0
        rows.append(
            {
                "stage": name,
                "samples": n,
                "share": round(share, 4),
                "us_per_request": None if cpu_us is None else round(share * cpu_us, 2),
            }
        )
    return rows


def render(result: Mapping[str, Any]) -> str:
    meta = result["meta"]
    out = [
        f"# Hot-path profile — {meta['timestamp']}",
        "",
        f"`lasso serve`, `{meta['method']}` to anvil, wrk -t1 -c{meta['connections']} for "
        f"{meta['duration_s']} s; py-spy at {meta['rate_hz']} Hz; git {meta['git']}; "
        f"{meta['cpus']} CPUs; load average at start {meta['loadavg']}.",
        "",
        f"Throughput {result['rps']:.0f} req/s; proxy CPU "
        f"{result['cpu_us_per_request']:.1f} µs/request; {result['samples']} samples.",
        "",
        "| stage | share | µs/request |",
        "|---|---:|---:|",
    ]
    for row in result["stages"]:
        us = "–" if row["us_per_request"] is None else f"{row['us_per_request']:.1f}"
        out.append(f"| {row['stage']} | {row['share'] * 100:.1f} % | {us} |")
    out += [
        "",
        "A sample counts for the stage of its innermost Lasso frame; time in C code called "
        "from a line (a system call in `transport.write`, httptools in `feed_data`) counts "
        "for that line's stage. µs/request = share × the proxy's CPU per request in the "
        "window (user + system, from /proc).",
        "",
    ]
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--duration", type=float, default=8.0, help="sampled window, s")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    p.add_argument("--method", default="eth_blockNumber")
    p.add_argument("--lasso-args", default="", help="extra `lasso serve` arguments")
    p.add_argument("--anvil", default=default_anvil())
    p.add_argument("--wrk", default=shutil.which("wrk") or "/usr/bin/wrk")
    p.add_argument(
        "--py-spy", default=shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    )
    p.add_argument("--out-dir", default=str(BENCH / "results"))
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for tool, path in (("wrk", args.wrk), ("py-spy", args.py_spy)):
        if not Path(path).exists():
            print(f"{tool} not found at {path}", file=sys.stderr)
            return 2
    started = _dt.datetime.now()
    stamp = started.strftime("%Y%m%d-%H%M%S")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / f"profile-{stamp}.raw"
    body = request_body(args.method)
    loadavg = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="lasso-profile-") as tmp:
        work = Path(tmp)
        script = work / "post.lua"
        script.write_text(wrk_lua_script(body, NO_CACHE))
        anvil_port, port = free_port(), free_port()
        anvil = spawn("anvil", [args.anvil, "--port", str(anvil_port), "--silent"], work)
        lasso = None
        try:
            wait_ready(anvil, anvil_port, "rpc:/", 15.0, body)
            text = DEFAULT_PROFILE_TEMPLATE.replace("{anvil_url}", f"http://127.0.0.1:{anvil_port}")
            (work / "profiles").mkdir()
            (work / "profiles" / profile_file_name(text)).write_text(text)
            argv_lasso = [
                str(Path(sys.executable).parent / "lasso"),
                "serve",
                "--profiles",
                str(work / "profiles"),
                "--port",
                str(port),
                *args.lasso_args.split(),
            ]
            lasso = spawn("lasso", argv_lasso, work)
            wait_ready(lasso, port, "/api/health", 15.0, body)
            url = f"http://127.0.0.1:{port}{DEFAULT_RPC_PATH}"
            wrk = [args.wrk, "-t1", f"-c{args.connections}", "-s", str(script), url]
            subprocess.run(
                [*wrk[:3], f"-d{max(1, round(args.warmup))}s", *wrk[3:]],
                capture_output=True,
                timeout=args.warmup + 60,
                check=True,
            )
            duration = max(1, round(args.duration))
            c0 = tree_cpu_ticks(lasso.pid)
            load = subprocess.Popen(
                [*wrk[:3], f"-d{duration + 1}s", *wrk[3:]],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            spy = subprocess.run(
                [
                    args.py_spy,
                    "record",
                    "-p",
                    str(lasso.pid),
                    "-d",
                    str(duration),
                    "-r",
                    str(args.rate),
                    "-f",
                    "raw",
                    "-o",
                    str(raw),
                    "--nonblocking",
                ],
                capture_output=True,
                text=True,
                timeout=duration + 60,
            )
            stdout, _ = load.communicate(timeout=duration + 60)
            c1 = tree_cpu_ticks(lasso.pid)
        except Unavailable as exc:
            print(f"cannot start: {exc}", file=sys.stderr)
            return 2
        finally:
            if lasso is not None:
                lasso.stop()
            anvil.stop()
    if spy.returncode != 0 or not raw.exists():
        print(f"py-spy failed: {spy.stderr.strip()[-500:]}", file=sys.stderr)
        return 1
    stats = parse_wrk_output(stdout)
    seconds = duration + 1
    cpu_us = cpu_delta(c0, c1) / CLK_TCK * 1e6 / max(1, stats["requests"])
    stages, total = group_samples(raw.read_text().splitlines())
    result = {
        "meta": {
            "timestamp": started.isoformat(timespec="seconds"),
            "method": args.method,
            "connections": args.connections,
            "duration_s": seconds,
            "rate_hz": args.rate,
            "lasso_args": args.lasso_args,
            "git": _git(),
            "cpus": os.cpu_count(),
            "loadavg": loadavg,
        },
        "rps": stats["requests"] / seconds,
        "cpu_us_per_request": round(cpu_us, 2),
        "samples": total,
        "stages": stage_table(stages, total, cpu_us),
    }
    md = render(result)
    (out_dir / f"profile-{stamp}.json").write_text(json.dumps(result, indent=2))
    (out_dir / f"profile-{stamp}.md").write_text(md)
    print(md)
    print(f"wrote {out_dir}/profile-{stamp}.{{json,md,raw}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
