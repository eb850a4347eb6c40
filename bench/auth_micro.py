"""Micro-benchmark of the client checks' per-request work (not a test).

Two tables, in µs of this process's CPU (``time.process_time``), the median of
``--rounds`` rounds of ``-n`` requests each:

1. ``RpcHandler.handle`` of one request answered locally (``eth_chainId``), on an open
   profile and on one requiring a key with a per-key limit, alternated round by round:
   the difference is everything a key adds to an HTTP request before routing (the gate's
   checks, the coroutine they run in, the outcome count).
2. ``identify`` (the credential, its SHA-256 lookup or the cached JWT, the address rules) +
   ``screen`` (scopes, one token from the in-memory bucket) + the outcome count, per kind
   of client.

It complements ``bench.overhead``'s ``lasso`` vs ``lasso-key`` comparison, whose difference
of a few µs drowns in run-to-run noise on a shared machine. Run:

    .venv/bin/python -m bench.auth_micro [-n 200000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import jwt

from lasso.auth.service import ClientAccess
from lasso.profiles import parse_profile

KEY = "lasso_bench-auth-micro-key-00000000000"
SECRET = "s" * 32
PROFILE = f"""---
name: Micro
rps_limit: 1000000
burst_limit: 1000000
auth:
  required: false
  keys:
    - id: plain
      key: {KEY}
    - id: scoped
      key: {KEY}-scoped
      chains: [anvil]
      methods: {{allow: ["eth_*", "net_*"], deny: ["debug_*", "trace_*"]}}
  jwt:
    secret: '{SECRET}'
---
chains:
  anvil:
    chain_id: 31337
    providers: [{{id: a, url: "http://127.0.0.1:1"}}]
"""


class Item:
    __slots__ = ("method", "id_json", "notification", "early", "early_status")

    def __init__(self) -> None:
        self.method = "eth_blockNumber"
        self.id_json = b"1"
        self.notification = False
        self.early: bytes | None = None
        self.early_status = 200


def cases() -> dict[str, tuple[dict[str, str], str]]:
    token = jwt.encode({"sub": "u", "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")
    base = {"host": "127.0.0.1", "content-type": "application/json", "content-length": "63"}
    return {
        "api key (header)": ({**base, "x-lasso-api-key": KEY}, ""),
        "api key + scopes": ({**base, "x-lasso-api-key": KEY + "-scoped"}, ""),
        "api key (?key=)": (base, f"key={KEY}"),
        "jwt (cached)": ({**base, "authorization": f"Bearer {token}"}, ""),
        "anonymous (per address)": (base, ""),
    }


def handle_rows(n: int, rounds: int) -> dict[str, list[float]]:
    """``RpcHandler.handle`` per request on an open and on a keyed profile (eth_chainId)."""
    from lasso.app import LassoApp, Settings
    from lasso.net.http_server import HttpRequest, Response

    chains = PROFILE[PROFILE.rindex("\nchains:") + 1 :]
    open_profile = parse_profile(f"---\nname: Open\n---\n{chains}", "public.yml", {})
    keyed = parse_profile(PROFILE.replace("required: false", "required: true"), "keyed.yml", {})
    app = LassoApp({"public": open_profile, "keyed": keyed}, Settings(probes=False))
    body = b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}'
    base = {"host": "127.0.0.1", "content-type": "application/json", "content-length": "59"}
    requests = {
        "open profile": HttpRequest("POST", "/rpc/anvil", "", base, body, "127.0.0.1", True),
        "key required": HttpRequest(
            "POST",
            "/rpc/profile/keyed/anvil",
            "",
            {**base, "x-lasso-api-key": KEY},
            body,
            "127.0.0.1",
            True,
        ),
    }

    def one(req: HttpRequest) -> None:
        answer = app.rpc.handle(req)
        if not isinstance(answer, Response):  # the gated path is a coroutine: run it
            try:
                answer.send(None)  # type: ignore[attr-defined]
            except StopIteration as done:
                answer = done.value
        assert answer.status == 200

    out: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, req in requests.items():
            out.setdefault(name, []).append(measure(lambda req=req: one(req), n))
    return out


def measure(fn: Callable[[], None], n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.auth_micro", description=__doc__)
    p.add_argument("-n", type=int, default=200_000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    handle = handle_rows(args.n, args.rounds)
    print("| RpcHandler.handle, eth_chainId | µs per request (median) | rounds |")
    print("|---|---:|---|")
    for name, values in handle.items():
        rounds = ", ".join(f"{v:.2f}" for v in values)
        print(f"| {name} | {statistics.median(values):.2f} | {rounds} |")
    added = [k - o for o, k in zip(handle["open profile"], handle["key required"], strict=True)]
    print(f"| added by the key (median of differences) | {statistics.median(added):.2f} | |")
    print()
    access = ClientAccess({"public": parse_profile(PROFILE, "public.yml", {})})
    gate = access.gate("public")
    assert gate is not None
    results: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name, (headers, query) in cases().items():

            def one(headers: dict[str, str] = headers, query: str = query) -> None:
                now = time.monotonic()
                client = gate.identify(headers, query, "127.0.0.1", now)
                assert not hasattr(client, "status"), client
                item = Item()
                gate.screen(client, "anvil", (item,), now)  # type: ignore[arg-type]
                client.count("success")  # type: ignore[union-attr]

            results.setdefault(name, []).append(measure(one, args.n))
    print("| client | µs per request (median) | rounds |")
    print("|---|---:|---|")
    for name, values in results.items():
        rounds = ", ".join(f"{v:.2f}" for v in values)
        print(f"| {name} | {statistics.median(values):.2f} | {rounds} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
