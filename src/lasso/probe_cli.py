"""``lasso probe URL``: what one JSON-RPC endpoint supports, and a profile snippet for it.

An offline tool (reference §11.2): it talks only to the given endpoint, never to a running
Lasso. :mod:`lasso.probes.discovery` does the probing (methods per registry category,
``eth_getLogs`` range limit, batches, archive access, WebSocket subscriptions); this
module parses the options, prints a table (or ``--output json``) and a provider entry
ready to paste under ``chains.<chain>.providers`` of a profile.

Exit status: 0 when the endpoint answered, 1 when it did not or serves another chain than
``--chain-id``, 2 for bad options.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from typing import Any
from urllib.parse import urlsplit

import orjson

from lasso.probes.discovery import LEVELS, probe_endpoint, recommendation

__all__ = ["add_arguments", "render_snippet", "render_table", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``lasso probe`` options to ``parser``."""
    parser.add_argument("url", help="the provider's HTTP(S) JSON-RPC URL")
    parser.add_argument("--ws", dest="ws_url", default=None, help="its WebSocket URL")
    parser.add_argument("--chain-id", type=int, default=None, help="the chain id it must serve")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per request (default 10)"
    )
    parser.add_argument("--output", choices=("table", "json"), default="table")
    parser.add_argument("--level", choices=tuple(LEVELS), default="standard")
    parser.add_argument(
        "--subscription-wait",
        type=float,
        default=15.0,
        help="seconds to wait for a first subscription event (default 15)",
    )
    parser.add_argument("--id", dest="provider_id", default=None, help="id for the snippet")


def _valid_url(url: str, schemes: tuple[str, ...]) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return False
    return parts.scheme in schemes and bool(parts.hostname)


def run(args: argparse.Namespace) -> int:
    """Run the probe from parsed arguments; print the report; return the exit status."""
    for url, schemes, name in (
        (args.url, ("http", "https"), "URL"),
        (args.ws_url, ("ws", "wss"), "--ws"),
    ):
        if url is not None and not _valid_url(url, schemes):
            print(
                f"lasso probe: {name} must be a {'/'.join(schemes)} URL, got {url!r}",
                file=sys.stderr,
            )
            return 2
    if args.timeout <= 0 or args.subscription_wait < 0:
        print("lasso probe: --timeout must be > 0 and --subscription-wait >= 0", file=sys.stderr)
        return 2
    report = asyncio.run(
        probe_endpoint(
            args.url,
            ws_url=args.ws_url,
            chain_id=args.chain_id,
            timeout=args.timeout,
            level=args.level,
            subscription_wait=args.subscription_wait,
        )
    )
    report["recommendation"] = recommendation(report)
    # A snippet is only worth pasting for an endpoint that answered, on the right chain.
    usable = report["reachable"] and report.get("chain_id_ok") is not False
    report["snippet"] = render_snippet(report, args.provider_id) if usable else None
    if args.output == "json":
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render_table(report))
    return 0 if report["reachable"] and report.get("chain_id_ok") is not False else 1


def render_snippet(report: dict[str, Any], provider_id: str | None = None) -> str:
    """A provider entry for ``chains.<chain>.providers`` (indented for pasting there)."""
    host = urlsplit(report["url"]).hostname or "provider"
    pid = provider_id or re.sub(r"[^a-z0-9]+", "-", host.lower()).strip("-") or "provider"
    rec = report.get("recommendation") or recommendation(report)
    lines = [f"      - id: {pid}", f"        url: {report['url']}"]
    if "ws_url" in rec:
        lines.append(f"        ws_url: {rec['ws_url']}")
    if rec.get("archival") is False:
        lines.append("        archival: false")
    if rec.get("subscribe_new_heads") is False:
        lines.append("        subscribe_new_heads: false")
    caps: list[str] = []
    for key in ("unsupported_categories", "unsupported_methods"):
        names = rec.get(key)
        if names and len(names) <= 3:
            caps.append(f"          {key}: [{', '.join(names)}]")
        elif names:
            caps += [f"          {key}:", *(f"            - {n}" for n in names)]
    if "max_block_range" in rec:
        caps += ["          limits:", f"            max_block_range: {rec['max_block_range']}"]
    if caps:
        lines += ["        capabilities:", *caps]
    return "\n".join(lines) + "\n"


def render_table(report: dict[str, Any]) -> str:
    """The human-readable report."""
    out = [f"Provider   {report['url']}"]
    if not report["reachable"]:
        out.append(f"  unreachable: {report.get('error', 'no answer')}")
        return "\n".join(out) + "\n"
    cid = report["chain_id"]
    check = {True: "  (matches --chain-id)", False: "  (MISMATCH with --chain-id)", None: ""}
    out += [
        f"  chain id     {cid} ({hex(cid)}){check[report['chain_id_ok']]}",
        f"  head         {report.get('head')}",
        f"  client       {report.get('client_version')}",
        f"  latency      {report['latency_ms']} ms",
        "",
        f"Methods ({report['level']}: {', '.join(LEVELS[report['level']])})",
        f"  {'method':<42} {'category':<11} {'status':<13} {'ms':>8}  detail",
    ]
    for r in report["methods"]:
        code = f"[{r['code']}] " if r["code"] is not None else ""
        out.append(
            f"  {r['method']:<42} {r['category']:<11} {r['status']:<13} {r['ms']:>8.1f}  "
            f"{code}{r['detail']}".rstrip()
        )
    logs, batch, archive = report["logs"], report["batch"], report["archive"]
    word = {True: "ok", False: "range error", None: "n/a"}
    tried = ", ".join(f"{t['range']} {word[t['accepted']]}" for t in logs["tested"])
    batch_text = f"up to {batch['max_size']}" if batch["supported"] else "not supported"
    failed = [t for t in batch["tested"] if not t["ok"]]
    if failed:
        batch_text += f" ({failed[0]['size']}: {failed[0]['detail'][:60]})"
    arch = {True: "yes", False: "no", None: "unknown"}[archive["archival"]]
    archive_label = f"archive (block {archive['block']})"
    out += [
        "",
        "Limits",
        f"  {'eth_getLogs range':<24}{logs['verdict']} [{tried}]",
        f"  {'batch':<24}{batch_text}",
        f"  {archive_label:<24}{arch}"
        + (f" ({archive['detail'][:60]})" if archive["detail"] else ""),
    ]
    ws = report.get("websocket")
    if ws:
        out += ["", f"WebSocket  {ws['url']}"]
        if not ws["connected"]:
            out.append(f"  {'connect':<24}failed: {ws.get('error', '')}")
        else:
            out.append(f"  {'connect':<24}ok, {ws['connect_ms']} ms")
            for kind, sub in ws["subscriptions"].items():
                out.append(f"  {kind:<24}{sub['status']}: {sub['detail']}".rstrip(": "))
    if report.get("snippet"):
        out += ["", "Profile snippet (paste under chains.<chain>.providers):", report["snippet"]]
    elif report.get("chain_id_ok") is False:
        out += [
            "",
            f"No profile snippet: this endpoint serves chain {cid}, not the --chain-id asked "
            "for. Check the URL, or probe it without --chain-id to add it to that chain.",
            "",
        ]
    return "\n".join(out)
