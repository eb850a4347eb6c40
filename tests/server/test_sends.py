"""Idempotent eth_sendRawTransaction through the driver (CONTRACT §8): the hash computed
locally, "already known" and a mined "nonce too low" answered with it, a send that failed
after dispatch sent elsewhere, and routing.broadcast; over in-memory providers."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from lasso.kernel.keccak import tx_hash
from lasso.net.errors import UpstreamConnectError, UpstreamDisconnected
from lasso.net.http_conn import UpstreamResponse
from lasso.net.transport import MemoryRequest, error_answer, result_answer
from lasso.server.pipeline import execute
from lasso.server.runtime import ChainRuntime
from server_pipeline_support import (
    Handler,
    ok,
    raises,
    result_of,
    rpc_error,
    runtime,
    settled,
    transport,
)

RAW = "0x02f86c0180843b9aca00" + "ab" * 40
HASH = tx_hash(RAW)
assert HASH is not None


def node(send: Handler, by_hash: Any = None) -> Handler:
    """A provider: ``send`` answers eth_sendRawTransaction, ``by_hash`` is its
    eth_getTransactionByHash result."""

    def handler(req: MemoryRequest) -> UpstreamResponse | Any:
        if req.method == "eth_getTransactionByHash":
            return result_answer(req, by_hash)
        return send(req)

    return handler


def accepts() -> Handler:
    return lambda req: result_answer(req, req.doc["params"] and HASH)


async def send(rt: ChainRuntime, raw: str = RAW, strategy: str = "priority") -> Any:
    return await execute(rt, "eth_sendRawTransaction", [raw], strategy, None)


def broadcasting(n: int, **handlers: Handler) -> ChainRuntime:
    return runtime(chain_settings={"broadcast": n}, **handlers)


async def test_an_accepted_send_answers_the_providers_hash() -> None:
    """A plain acceptance passes through."""
    rt = runtime(a=node(accepts()))
    out = await send(rt)
    assert out.status == "success" and result_of(out) == HASH


async def test_already_known_is_answered_with_the_hash() -> None:
    """'already known' (a resend) is the transaction's hash, computed locally."""
    for wording in ("already known", "Transaction already imported", "AlreadyKnown"):
        rt = runtime(a=node(rpc_error(-32000, wording)))
        out = await send(rt)
        assert out.status == "success" and result_of(out) == HASH, wording


async def test_nonce_too_low_with_the_transaction_there_is_the_hash() -> None:
    """'nonce too low' from a provider that has this very transaction: the hash."""
    mined = {"hash": HASH, "blockNumber": "0x5"}
    rt = runtime(a=node(rpc_error(-32000, "nonce too low"), by_hash=mined))
    out = await send(rt)
    assert result_of(out) == HASH
    asked = [r.doc for r in transport(rt, "a").requests]
    assert [d["method"] for d in asked] == ["eth_sendRawTransaction", "eth_getTransactionByHash"]
    assert asked[1]["params"] == [HASH]


async def test_nonce_too_low_for_another_transaction_is_the_error() -> None:
    """'nonce too low' when the provider does not have this transaction: the error."""
    rival = {"hash": "0x" + "cd" * 32, "blockNumber": "0x5"}
    for by_hash in (None, rival):
        rt = runtime(a=node(rpc_error(-32000, "nonce too low: next 5"), by_hash=by_hash))
        out = await send(rt)
        assert out.status == "rpc_error" and out.body is not None
        assert orjson.loads(out.body)["error"]["message"] == "nonce too low: next 5"


async def test_other_errors_are_the_clients_answer() -> None:
    """insufficient funds is the client's error, sent once."""
    rt = runtime(a=node(rpc_error(-32000, "insufficient funds for gas")), b=node(accepts()))
    out = await send(rt)
    assert out.status == "rpc_error" and transport(rt, "b").calls == 0


async def test_a_send_lost_after_dispatch_is_sent_to_another_provider() -> None:
    """A reset after the bytes left may have landed: rebroadcasting is harmless, and the
    other provider's 'already known' is the hash."""
    rt = runtime(
        a=raises(UpstreamDisconnected("reset")), b=node(rpc_error(-32000, "already known"))
    )
    out = await send(rt)
    assert out.status == "success" and result_of(out) == HASH and out.retries == 1
    assert transport(rt, "a").requests[0].replay_safe


async def test_a_send_no_provider_answers_is_indeterminate() -> None:
    """When every provider failed after dispatch, the error says it may have landed."""
    rt = runtime(
        a=raises(UpstreamDisconnected("reset")),
        b=raises(UpstreamDisconnected("reset")),
        c=raises(UpstreamConnectError("refused")),
    )
    out = await send(rt)
    assert out.error is not None
    assert out.error["message"] == "Upstream dispatch outcome is indeterminate"


async def test_malformed_raw_goes_to_the_provider_as_sent() -> None:
    """Params that are not one hex string are the provider's to answer."""
    rt = runtime(a=rpc_error(-32602, "invalid argument 0: hex string has odd length"))
    out = await execute(rt, "eth_sendRawTransaction", ["0x123"], "priority", None)
    assert out.status == "rpc_error"
    assert transport(rt, "a").requests[0].doc["params"] == ["0x123"]


async def test_broadcast_sends_to_n_providers_and_the_first_acceptance_answers() -> None:
    """broadcast: 3 sends to three providers at once; the others are counted."""
    gate = asyncio.Event()

    async def slow(req: MemoryRequest) -> UpstreamResponse:
        await gate.wait()
        return error_answer(req, -32000, "already known")

    rt = broadcasting(3, a=node(accepts()), b=slow, c=node(rpc_error(-32000, "already known")))
    out = await send(rt)
    assert result_of(out) == HASH
    meta = out.extra["broadcast"]
    assert meta["providers"] == ["a", "b", "c"] and meta["pending"] >= 1
    assert all(transport(rt, p).calls == 1 for p in "abc")
    assert rt.consistency.legs_out == 1
    gate.set()
    await settled(lambda: rt.consistency.legs_out == 0)
    assert rt.consistency.counts[("legs", "accepted")] == 3


async def test_broadcast_rejection_answers_only_when_no_leg_accepts() -> None:
    """A leg's rejection waits for the others; any acceptance wins."""
    rt = broadcasting(2, a=node(rpc_error(-32000, "insufficient funds")), b=node(accepts()))
    out = await send(rt)
    assert result_of(out) == HASH
    rt2 = broadcasting(
        2, a=node(rpc_error(-32000, "insufficient funds")), b=node(rpc_error(-32000, "underpriced"))
    )
    out = await send(rt2)
    assert out.status == "rpc_error" and out.provider_id in ("a", "b")
    assert rt2.consistency.counts[("legs", "rejected")] == 2


async def test_broadcast_legs_that_all_failed_try_the_other_providers() -> None:
    """Two legs reset after dispatch: the third provider gets the transaction."""
    rt = broadcasting(
        2,
        a=raises(UpstreamDisconnected("reset")),
        b=raises(UpstreamDisconnected("reset")),
        c=node(accepts()),
    )
    out = await send(rt)
    assert result_of(out) == HASH and out.provider_id == "c"
    assert out.extra["broadcast"]["failed"] == 2
    assert rt.consistency.counts[("legs", "failed")] == 2


async def test_broadcast_with_nobody_else_left_answers_the_legs_failure() -> None:
    """Every provider was a failed leg: the answer is their (indeterminate) error."""
    rt = broadcasting(
        2, a=raises(UpstreamDisconnected("reset")), b=raises(UpstreamDisconnected("x"))
    )
    out = await send(rt)
    assert out.error is not None and "indeterminate" in out.error["message"]


async def test_broadcast_with_one_provider_is_a_plain_send() -> None:
    """broadcast: 3 on a one-provider chain sends once."""
    rt = broadcasting(3, a=node(rpc_error(-32000, "already known")))
    out = await send(rt)
    assert result_of(out) == HASH and out.extra is None


async def test_a_send_pinned_to_a_provider_is_not_broadcast() -> None:
    """/rpc/provider/X/...: only X gets it, broadcast or not."""
    rt = broadcasting(2, a=node(accepts()), b=ok(HASH))
    out = await execute(rt, "eth_sendRawTransaction", [RAW], "priority", "b")
    assert out.provider_id == "b" and transport(rt, "a").calls == 0
