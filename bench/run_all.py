"""Run the whole benchmark suite with one command and write an index of the results.

    .venv/bin/python -m bench                      # full suite (~30 min: soak 10 min)
    .venv/bin/python -m bench --quick              # every benchmark in its quick mode (~6 min)
    .venv/bin/python -m bench --only failover,soak --soak-minutes 3
    .venv/bin/python -m bench.run_all --list       # the steps and their commands

Each benchmark runs as its own process (``python -m bench.<name> ...``), one after the
other, so they never compete for the cores; a failing one does not stop the others. Each
writes ``bench/results/<name>-<stamp>.{json,md,png}``; this runner adds a PNG for the
overhead benchmark (which writes none itself) and writes
``bench/results/index-<stamp>.{md,json}``: per step the command, exit code, wall time,
files, headline numbers, and the embedded plots.

The subscription fan-out benchmark (``bench/subscriptions.py``) is included when the file
exists: with 1,000 and 10,000 clients if it takes a ``--clients`` flag (1,000 only in
quick mode), else once with its own defaults.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # pragma: no cover - run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    RESULTS,
    ROOT,
    env_meta,
    fmt,
    host_busy_pct,
    host_sample,
    log,
    markdown_table,
    pyplot,
    timestamp,
)

BENCHMARKS = (
    "overhead",
    "routing_quality",
    "failover",
    "hedging",
    "client_limits",
    "cache",
    "get_logs",
    "subscriptions",
    "soak",
)


@dataclass
class Step:
    """One benchmark invocation of the suite."""

    name: str  # the benchmark (file prefix of its results)
    label: str  # shown in the index (e.g. "subscriptions 10000")
    argv: list[str]
    rc: int | None = None
    wall_s: float | None = None
    files: dict[str, str] = field(default_factory=dict)
    headline: dict[str, Any] = field(default_factory=dict)
    note: str = ""


# ---------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------


def supports_flag(help_text: str, flag: str) -> bool:
    """Whether an argparse ``--help`` text lists ``flag`` as an option."""
    for line in help_text.splitlines():
        for token in line.replace(",", " ").split():
            if token == flag or token.startswith(flag + "="):
                return True
    return False


def plan(
    args: argparse.Namespace, python: str, subscriptions_help: str | None
) -> tuple[list[Step], list[str]]:
    """The steps to run and notes on skipped ones, from the parsed options.

    ``subscriptions_help`` is the ``--help`` text of ``bench/subscriptions.py`` (``None``
    when the file does not exist).
    """
    notes: list[str] = []
    steps: list[Step] = []
    out = ["--out-dir", args.out_dir]
    quick = ["--quick"] if args.quick else []

    def module(name: str) -> list[str]:
        return [python, "-m", f"bench.{name}"]

    for name in args.only:
        if name == "overhead":
            steps.append(Step(name, name, [*module(name), *quick, *out]))
        elif name in (
            "routing_quality",
            "failover",
            "hedging",
            "client_limits",
            "cache",
            "get_logs",
        ):
            steps.append(Step(name, name, [*module(name), *quick, *out]))
        elif name == "soak":
            length = ["--quick"] if args.quick else ["--minutes", f"{args.soak_minutes:g}"]
            steps.append(Step(name, name, [*module(name), *length, *out]))
        elif name == "subscriptions":
            if subscriptions_help is None:
                notes.append("subscriptions: bench/subscriptions.py does not exist (yet)")
                continue
            sub_out = out if supports_flag(subscriptions_help, "--out-dir") else []
            if supports_flag(subscriptions_help, "--clients"):
                counts = [1000] if args.quick else [1000, 10000]
                for n in counts:
                    steps.append(
                        Step(
                            name,
                            f"subscriptions {n}",
                            [*module(name), "--clients", str(n), *sub_out],
                        )
                    )
            else:
                notes.append(
                    "subscriptions: bench/subscriptions.py has no --clients flag; "
                    "ran once with its defaults"
                )
                sub_quick = quick if supports_flag(subscriptions_help, "--quick") else []
                steps.append(Step(name, name, [*module(name), *sub_quick, *sub_out]))
    return steps, notes


def new_results(out_dir: Path, name: str, since: float) -> dict[str, str]:
    """The newest ``<name>-<stamp>.{json,md,png}`` in ``out_dir`` written after ``since``.

    Only stamps of the form ``YYYYmmdd-HHMMSS`` match, so ``routing_quality-…`` is never
    taken for another benchmark's prefix.
    """
    found: dict[str, tuple[float, str]] = {}
    if not out_dir.is_dir():
        return {}
    for path in out_dir.iterdir():
        stem, _, ext = path.name.rpartition(".")
        prefix, _, stamp = stem.rpartition("-")
        prefix, _, day = prefix.rpartition("-")
        if prefix != name or not (day.isdigit() and stamp.isdigit()):
            continue
        if ext not in ("json", "md", "png"):
            continue
        mtime = path.stat().st_mtime
        if mtime + 1 < since:
            continue
        if ext not in found or mtime > found[ext][0]:
            found[ext] = (mtime, str(path))
    return {ext: p for ext, (_, p) in found.items()}


def overhead_headline(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Headline numbers of an overhead result: CPU per request, ratios, added p50 at c=1."""
    summary = doc.get("summary", {})
    medians = summary.get("medians", {})
    added = summary.get("added", {})
    out: dict[str, Any] = {}
    for name in ("lasso", "floor", "lean-floor"):
        if name in medians:
            out[f"{name} CPU µs/req"] = medians[name].get("proxy_cpu_us_c64")
    if "lasso" in added:
        out["lasso +p50 c=1 µs"] = added["lasso"].get("p50_us_c1")
    for key, value in summary.get("ratios", {}).items():
        if key.startswith("lasso/"):
            out[f"CPU {key}"] = value
    return out


def render_index(meta: Mapping[str, Any], steps: Sequence[Step], notes: Sequence[str]) -> str:
    lines = [
        f"# Benchmark suite — {meta['timestamp']}",
        "",
        f"Mode: {'quick' if meta['quick'] else 'full'}; {meta['cpus']} CPUs; load average "
        f"{meta['loadavg_start']} at start, {meta['loadavg_end']} at the end; host busy "
        f"{fmt(meta['host_busy_pct'], 0)}% over the suite (includes other users of the "
        f"machine); git {meta['git']}; wall {fmt(meta['wall_s'], 0)} s.",
        "",
    ]
    rows = []
    for s in steps:
        status = "ok" if s.rc == 0 else ("not run" if s.rc is None else f"exit {s.rc}")
        head = "; ".join(f"{k}: {_cell(v)}" for k, v in s.headline.items()) or "–"
        report = Path(s.files["md"]).name if "md" in s.files else "–"
        rows.append(
            [
                s.label,
                status,
                fmt(s.wall_s, 0),
                f"[{report}]({report})" if "md" in s.files else "–",
                head,
            ]
        )
    lines += markdown_table(["benchmark", "status", "wall s", "report", "headline"], rows, "llrll")
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    lines += ["", "## Commands", ""]
    lines += [f"- {s.label}: `{' '.join(_short(a) for a in s.argv)}`" for s in steps]
    for s in steps:
        if "png" in s.files:
            png = Path(s.files["png"]).name
            lines += ["", f"## {s.label}", "", f"![{s.label}]({png})"]
    lines.append("")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return fmt(value, 2)
    return str(value)


def _short(arg: str) -> str:
    try:
        return str(Path(arg).relative_to(ROOT)) if arg.startswith("/") else arg
    except ValueError:
        return arg


# ---------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------


def overhead_figure(doc: Mapping[str, Any]) -> Any | None:
    """Bars: proxy CPU µs/req at c=64 and added p50 at c=1 per overhead contender."""
    plt = pyplot()
    medians = doc.get("summary", {}).get("medians", {})
    if plt is None or not medians:
        return None
    added = doc["summary"].get("added", {})
    names = [n for n in doc["meta"]["contenders"] if n in medians]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    cpu = [medians[n].get("proxy_cpu_us_c64") or 0 for n in names]
    bars = ax1.bar(names, cpu, color=["grey" if n == "direct" else "tab:blue" for n in names])
    ax1.bar_label(bars, fmt="%.0f")
    ax1.axhline(50, color="red", linestyle="--", linewidth=0.8, label="50 µs target")
    ax1.set_ylabel("proxy CPU µs / request (c=64)")
    ax1.set_title("CPU per request (direct: anvil's own)")
    ax1.legend()
    hop = [n for n in names if n != "direct"]
    p50 = [(added.get(n, {}).get("p50_us_c1") or 0) for n in hop]
    bars = ax2.bar(hop, p50, color="tab:orange")
    ax2.bar_label(bars, fmt="%.0f")
    ax2.axhline(150, color="red", linestyle="--", linewidth=0.8, label="150 µs target")
    ax2.set_ylabel("added p50 at c=1 (µs)")
    ax2.set_title("Latency added over calling anvil directly")
    ax2.legend()
    fig.tight_layout()
    return fig


def run_step(step: Step, out_dir: Path) -> None:
    log(f"== {step.label}: {' '.join(step.argv)}")
    started = time.time()
    t0 = time.monotonic()
    try:
        proc = subprocess.run(step.argv, cwd=ROOT, check=False)
        step.rc = proc.returncode
    except OSError as exc:
        step.rc = 127
        step.note = str(exc)
    step.wall_s = time.monotonic() - t0
    step.files = new_results(out_dir, step.name, started)
    if "json" not in step.files:
        return
    try:
        doc = json.loads(Path(step.files["json"]).read_text())
    except (OSError, ValueError):
        return
    if step.name == "overhead":
        step.headline = overhead_headline(doc)
        fig = overhead_figure(doc)
        if fig is not None:
            png = step.files["json"][: -len(".json")] + ".png"
            fig.savefig(png, dpi=110, bbox_inches="tight")
            step.files["png"] = png
    elif isinstance(doc.get("headline"), dict):
        step.headline = doc["headline"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench", description="Run the Lasso benchmark suite and index the results."
    )
    p.add_argument("--quick", action="store_true", help="every benchmark in its quick mode")
    p.add_argument("--only", default=",".join(BENCHMARKS), help=f"subset of {','.join(BENCHMARKS)}")
    p.add_argument("--skip", default="", help="benchmarks to leave out")
    p.add_argument("--soak-minutes", type=float, default=10.0, help="soak length (full mode)")
    p.add_argument("--out-dir", default=str(RESULTS))
    p.add_argument("--list", action="store_true", help="print the steps and exit")
    args = p.parse_args(argv)
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    skip = {n.strip() for n in args.skip.split(",") if n.strip()}
    unknown = [n for n in [*only, *skip] if n not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(unknown)}")
    args.only = [n for n in only if n not in skip]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir = Path(args.out_dir)
    sub_path = ROOT / "bench" / "subscriptions.py"
    sub_help: str | None = None
    if "subscriptions" in args.only and sub_path.exists():
        proc = subprocess.run(
            [sys.executable, "-m", "bench.subscriptions", "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        sub_help = proc.stdout
    steps, notes = plan(args, sys.executable, sub_help)
    if args.list:
        for s in steps:
            print(f"{s.label}: {' '.join(s.argv)}")
        for n in notes:
            print(f"note: {n}")
        return 0
    stamp, iso = timestamp()
    h0 = host_sample()
    t0 = time.monotonic()
    for step in steps:
        run_step(step, out_dir)
    h1 = host_sample()
    meta = {
        **env_meta(iso),
        "quick": args.quick,
        "loadavg_start": h0["loadavg"],
        "loadavg_end": h1["loadavg"],
        "host_busy_pct": host_busy_pct(h0, h1),
        "wall_s": time.monotonic() - t0,
    }
    index = render_index(meta, steps, notes)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / f"index-{stamp}.md"
    md.write_text(index)
    (out_dir / f"index-{stamp}.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "notes": notes,
                "steps": [
                    {
                        "name": s.name,
                        "label": s.label,
                        "argv": s.argv,
                        "rc": s.rc,
                        "wall_s": s.wall_s,
                        "files": s.files,
                        "headline": s.headline,
                        "note": s.note,
                    }
                    for s in steps
                ],
            },
            indent=1,
            default=str,
        )
        + "\n"
    )
    print(index)
    log(f"wrote {md}")
    return 0 if all(s.rc == 0 for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
