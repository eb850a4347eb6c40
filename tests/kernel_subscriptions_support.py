"""Helpers for the subscription kernel tests: a tiny chain model and stream drivers."""

from __future__ import annotations

import dataclasses
from typing import Any

from lasso.kernel.subscriptions import (
    Backfill,
    Decision,
    Emit,
    Header,
    LogEntry,
    Resubscribe,
    Start,
    Subscribed,
    SubscriptionStream,
    parse_header,
    parse_log,
)

A1 = "0x" + "ab" * 20
A2 = "0x" + "0c" * 20
T1 = "0x" + "11" * 32
T2 = "0x" + "22" * 32
T3 = "0x" + "33" * 32


# -- a tiny chain model ------------------------------------------------------------------------


def bhash(n: int, branch: int = 0) -> str:
    return "0x" + f"{branch:02x}" + f"{n:062x}"


def header(n: int, branch: int = 0, parent_branch: int | None = None) -> Header:
    pb = branch if parent_branch is None else parent_branch
    payload = {"number": hex(n), "hash": bhash(n, branch), "parentHash": bhash(n - 1, pb)}
    h = parse_header(payload)
    assert h is not None
    return h


def chain(lo: int, hi: int, branch: int = 0, fork: int | None = None) -> dict[int, Header]:
    """Blocks lo..hi on ``branch``; at ``fork`` the parent is on branch 0."""
    return {
        n: header(n, branch, 0 if fork is not None and n == fork else branch)
        for n in range(lo, hi + 1)
    }


def log_entry(n: int, i: int, branch: int = 0, removed: bool = False) -> LogEntry:
    payload: dict[str, Any] = {
        "blockNumber": hex(n),
        "blockHash": bhash(n, branch),
        "logIndex": hex(i),
        "data": f"{n}/{i}/{branch}",
    }
    if removed:
        payload["removed"] = True
    e = parse_log(payload)
    assert e is not None
    return e


def numbers(ds: list[Decision]) -> list[int]:
    out = []
    for d in ds:
        if isinstance(d, Emit):
            assert isinstance(d.payload, dict)
            out.append(int(d.payload["number"], 16))
    return out


def emitted_logs(ds: list[Decision]) -> list[tuple[int, int, int, bool]]:
    out = []
    for d in ds:
        if isinstance(d, Emit):
            assert isinstance(d.payload, dict)
            n, i, b = (int(x) for x in d.payload["data"].split("/"))
            out.append((n, i, b, d.removed))
    return out


def active(kind: Any = "newHeads", provider: str = "p1", **kw: Any) -> SubscriptionStream:
    s = SubscriptionStream(kind, **kw)
    assert s.handle(Start()) == [Resubscribe(exclude=frozenset())]
    assert s.handle(Subscribed(provider=provider)) == []
    return s


def backfills(ds: list[Decision]) -> list[Backfill]:
    return [d for d in ds if isinstance(d, Backfill)]


def type_tag(cls: type) -> object:
    """The default of a fact's or decision's ``type`` field: its tag."""
    return {f.name: f.default for f in dataclasses.fields(cls)}["type"]
