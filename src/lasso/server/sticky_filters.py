"""Sticky filters: a filter lives on the provider that made it (CONTRACT §8).

The flows of the filter methods (:data:`FILTER_FLOWS`, run by
:func:`lasso.server.pipeline.execute`); the table and its rules are the kernel's
(:mod:`lasso.kernel.filters`), kept per chain across reloads
(:mod:`lasso.server.consistency_state`):

* ``eth_newFilter``, ``eth_newBlockFilter``, ``eth_newPendingTransactionFilter`` run as
  usual (any provider the route allows; a failure after dispatch is retried elsewhere: an
  orphan filter expires upstream by itself). The provider's filter id is bound to a fresh
  Lasso id (``0x`` and 32 random hex digits), which the client gets instead.
* ``eth_getFilterChanges``, ``eth_getFilterLogs``, ``eth_uninstallFilter`` go to the
  provider of the binding with its own id, whatever the route's strategy or provider
  override, as one send (a poll consumes what it returns: never sent twice).
* When the binding is gone (unknown or expired id, a provider that answers "filter not
  found", or one Lasso can no longer reach: removed from the profile, circuit open), the
  answer is geth's ``-32000 "filter not found"``, which viem, ethers and web3.py read as
  "create the filter again"; ``eth_uninstallFilter`` answers ``false``.

Each filter is bound with its *owner*, the client that made it, which bounds how many
filters one client holds (:mod:`lasso.kernel.filters`): the HTTP and WebSocket handlers
set :data:`FILTER_OWNER` in the task serving the request (a context variable, so the
response cache between them and this flow, which never caches or coalesces filter
creation, passes it along untouched).

The table is per process: with ``--workers N`` a poll that lands on another worker than the
one that made the filter is answered "filter not found" (see ``docs/routing.md``).
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from time import monotonic
from typing import Any

import orjson

from lasso.kernel.filters import (
    CREATE_METHODS,
    FILTER_NOT_FOUND,
    USE_METHODS,
    Binding,
    filter_id_of,
    with_filter_id,
)
from lasso.server.exchange import Executor, Outcome
from lasso.server.runtime import ChainRuntime

__all__ = ["FILTER_FLOWS", "FILTER_OWNER", "create_filter", "use_filter"]

FILTER_OWNER: ContextVar[str] = ContextVar("lasso_filter_owner", default="")
"""The client making filters in this context: its rate-limit bucket (``key:<id>``,
``jwt:...``, ``ip:<address>``); set by the request handlers, read by :func:`create_filter`."""

_MAX_UPSTREAM_ID = 130
# How nodes say a filter id is unknown to them (geth, Erigon, reth, anvil: "filter not
# found"; Besu "Filter not found"; Nethermind "Filter with id: '0x1' does not exist.").
_NOT_FOUND = re.compile(r"filter not found|filter with id.*does not exist|unknown filter")
_BAD_ID = {"code": -32602, "message": "invalid argument 0: expected a filter id"}


async def create_filter(
    rt: ChainRuntime,
    method: str,
    params: Any,
    strategy: str,
    provider_id: str | None,
    run: Executor,
) -> Outcome:
    """Create the filter on a provider and answer a Lasso filter id bound to it, owned by
    :data:`FILTER_OWNER`."""
    out = await run(rt, method, params, strategy, provider_id)
    if out.status != "success" or out.provider_id is None or out.body is None:
        return out
    try:
        upstream = orjson.loads(out.body).get("result")
    except (orjson.JSONDecodeError, AttributeError):
        upstream = None
    if not isinstance(upstream, str) or not 0 < len(upstream) <= _MAX_UPSTREAM_ID:
        return out  # not a filter id: the provider's answer, as it is
    client_id = "0x" + os.urandom(16).hex()
    binding = Binding(provider_id=out.provider_id, upstream_id=upstream, method=method)
    rt.consistency.filters.bind(client_id, binding, monotonic(), FILTER_OWNER.get())
    out.answer(b'"%s"' % client_id.encode())
    return out


async def use_filter(
    rt: ChainRuntime,
    method: str,
    params: Any,
    strategy: str,
    provider_id: str | None,
    run: Executor,
) -> Outcome:
    """Send a filter call to the provider that made the filter, with its own id; "filter
    not found" when the binding is gone (see the module docstring)."""
    table = rt.consistency.filters
    client_id = filter_id_of(params)
    if client_id is None:
        out = Outcome([])
        out.fail(dict(_BAD_ID), "rpc_error")
        return out
    binding = table.lookup(client_id, monotonic())
    if binding is None:
        return _not_found(rt, method)
    out = await run(rt, method, with_filter_id(binding.upstream_id), strategy, binding.provider_id)
    if out.status == "error" and out.provider_id is None:
        table.remove(client_id)  # its provider cannot be reached: the filter is lost
        return _not_found(rt, method)
    if out.status == "rpc_error" and _NOT_FOUND.search(out.error_message()[:256].lower()):
        table.remove(client_id)  # the provider dropped it (expired, restarted)
        return _not_found(rt, method)
    if method == "eth_uninstallFilter" and out.status == "success":
        table.remove(client_id)
    return out


def _not_found(rt: ChainRuntime, method: str) -> Outcome:
    rt.consistency.count("filter_not_found")
    out = Outcome([])
    if method == "eth_uninstallFilter":
        out.answer(b"false")
    else:
        out.fail(dict(FILTER_NOT_FOUND), "rpc_error")
    return out


FILTER_FLOWS: dict[str, Any] = {
    **dict.fromkeys(sorted(CREATE_METHODS), create_filter),
    **dict.fromkeys(sorted(USE_METHODS), use_filter),
}
"""The flows of the filter methods, by method."""
