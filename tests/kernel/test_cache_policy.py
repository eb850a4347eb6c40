"""Cache policy: what answers depend on, when they are stored, when they are served."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lasso.kernel.blockwindow import BlockWindow, Finality
from lasso.kernel.cache_policy import (
    RULES,
    Depends,
    Kind,
    Request,
    Stamp,
    Verify,
    admit,
    answer_identity,
    classify,
    from_answer,
    normalize,
    ticket,
    valid,
)
from lasso.kernel.methods import KNOWN_METHODS
from lasso.sim.chain import SyntheticChain
from lasso.sim.node import NodeView, RpcError, call_method

ADDR = "0x" + "ab" * 20
H = "0x" + "11" * 32


def bh(n: int, fork: int = 0) -> str:
    return f"0x{fork:032x}{n:032x}"


def window_to(top: int, bottom: int = 90, fork: int = 0) -> BlockWindow:
    w = BlockWindow()
    for n in range(bottom, top + 1):
        w.observe(n, bh(n, fork), bh(n - 1, fork))
    return w


@pytest.mark.parametrize(
    ("method", "params", "expected"),
    [
        ("eth_chainId", [], Request(Depends.STATIC)),
        ("net_version", [], Request(Depends.STATIC)),
        ("eth_blockNumber", [], Request(Depends.HEAD, head_value=True)),
        ("eth_gasPrice", [], Request(Depends.HEAD)),
        ("eth_getBalance", [ADDR, "0x10"], Request(Depends.BLOCK, number=16)),
        ("eth_getBalance", [ADDR, 16], Request(Depends.BLOCK, number=16)),
        ("eth_getBalance", [ADDR, "latest"], Request(Depends.HEAD, tag="latest")),
        ("eth_getBalance", [ADDR], Request(Depends.HEAD, tag="latest")),
        ("eth_getBalance", [ADDR, "pending"], Request(Depends.NEVER)),
        ("eth_getBalance", [ADDR, "safe"], Request(Depends.HEAD, tag="safe")),
        ("eth_getBalance", [ADDR, "earliest"], Request(Depends.BLOCK, number=0)),
        ("eth_getBalance", [ADDR, {"blockHash": H}], Request(Depends.HASH, block_hash=H)),
        ("eth_getBalance", [ADDR, {"blockNumber": "0x5"}], Request(Depends.BLOCK, number=5)),
        ("eth_getBalance", [ADDR, {"blockHash": "0x12"}], Request(Depends.NEVER)),
        ("eth_getBalance", [ADDR, "nonsense"], Request(Depends.NEVER)),
        ("eth_getBalance", {"address": ADDR}, Request(Depends.NEVER)),
        ("eth_estimateGas", [{"to": ADDR}], Request(Depends.NEVER)),
        ("eth_getStorageAt", [ADDR, "0x0"], Request(Depends.HEAD, tag="latest")),
        ("eth_getProof", [ADDR, []], Request(Depends.NEVER)),
        (
            "eth_getBlockByNumber",
            ["0x64", False],
            Request(Depends.BLOCK, Verify.BLOCK, number=100),
        ),
        (
            "eth_getBlockByNumber",
            ["finalized", True],
            Request(Depends.HEAD, Verify.BLOCK, tag="finalized"),
        ),
        ("eth_getBlockByNumber", [], Request(Depends.NEVER)),
        (
            "eth_getBlockByHash",
            [H.upper().replace("0X", "0x"), False],
            Request(Depends.HASH, Verify.BLOCK, block_hash=H),
        ),
        ("eth_getBlockByHash", ["0x1234"], Request(Depends.NEVER)),
        ("eth_getBlockByHash", [], Request(Depends.NEVER)),
        (
            "eth_getBlockReceipts",
            [H],
            Request(Depends.HASH, Verify.LIST, block_hash=H),
        ),
        ("eth_getBlockReceipts", ["0x5"], Request(Depends.BLOCK, Verify.LIST, number=5)),
        ("eth_getTransactionReceipt", [H], Request(Depends.TX, Verify.ITEM)),
        ("eth_getTransactionReceipt", ["0x1"], Request(Depends.NEVER)),
        (
            "eth_getLogs",
            [{"fromBlock": "0x5", "toBlock": "0x9"}],
            Request(Depends.BLOCK, Verify.LIST, number=9, low=5),
        ),
        (
            "eth_getLogs",
            [{"fromBlock": "earliest", "toBlock": "0x9"}],
            Request(Depends.BLOCK, Verify.LIST, number=9, low=0),
        ),
        (
            "eth_getLogs",
            [{"fromBlock": "0x5"}],
            Request(Depends.HEAD, Verify.LIST, tag="latest"),
        ),
        ("eth_getLogs", [{"fromBlock": "0x5", "toBlock": "pending"}], Request(Depends.NEVER)),
        ("eth_getLogs", [{"fromBlock": "0x9", "toBlock": "0x5"}], Request(Depends.NEVER)),
        ("eth_getLogs", [{"blockHash": H}], Request(Depends.HASH, Verify.LIST, block_hash=H)),
        ("eth_getLogs", [{"blockHash": 7}], Request(Depends.NEVER)),
        ("eth_getLogs", ["x"], Request(Depends.NEVER)),
        ("eth_getLogs", [], Request(Depends.NEVER)),
        ("eth_sendRawTransaction", ["0x00"], Request(Depends.NEVER)),
        ("eth_newFilter", [{}], Request(Depends.NEVER)),
        ("eth_getFilterChanges", ["0x1"], Request(Depends.NEVER)),
        ("eth_subscribe", ["newHeads"], Request(Depends.NEVER)),
        ("debug_traceTransaction", [H], Request(Depends.NEVER)),
        ("made_up", [], Request(Depends.NEVER)),
    ],
)
def test_classify(method: str, params: Any, expected: Request) -> None:
    """Each method and parameter shape maps to what its answer depends on."""
    assert classify(method, params) == expected


def test_every_rule_names_a_known_method() -> None:
    """The table holds registry methods only, and no write, filter or subscription."""
    assert set(RULES) <= KNOWN_METHODS
    never = {"eth_sendRawTransaction", "eth_newFilter", "eth_getFilterChanges", "eth_subscribe"}
    assert not never & set(RULES)


def test_normalize_lowercases_hex_only() -> None:
    """Hex strings lose their case; tags, numbers and other strings stay as written."""
    raw = [{"to": "0xAbC", "data": "0XDEAD"}, "Latest", 5, "0x01", None]
    assert normalize(raw) == [{"to": "0xabc", "data": "0xdead"}, "Latest", 5, "0x01", None]


# -- tickets -------------------------------------------------------------------------------


def make(req: Request, head: int | None = 110, finalized: int | None = 100, **kw: Any) -> Any:
    w = kw.pop("window", None) or window_to(110)
    return ticket(req, head=head, finalized=finalized, window=w, now=50.0, ttl_s=kw.get("ttl", 1))


def test_ticket_static_and_final() -> None:
    """Constants are static; a block at or under the finalized height is final."""
    assert make(classify("eth_chainId", [])).kind is Kind.STATIC
    assert make(classify("eth_getBalance", [ADDR, "0x64"])).kind is Kind.FINAL


def test_ticket_anchors_unfinalized_blocks_to_the_window() -> None:
    """An unfinalized block is anchored to its hash; without one, nothing is stored."""
    stamp = make(classify("eth_getBalance", [ADDR, "0x69"]))
    assert stamp == Stamp(Kind.ANCHORED, number=105, block_hash=bh(105))
    w = BlockWindow()
    w.observe(110, bh(110), bh(109))
    assert make(classify("eth_getBalance", [ADDR, "0x69"]), window=w) is None


def test_ticket_refuses_blocks_above_the_head_or_without_a_head() -> None:
    """A block above the known head may still appear; an unknown head decides nothing."""
    assert make(classify("eth_getBlockByNumber", ["0x6f", False])) is None
    assert make(classify("eth_getBalance", [ADDR, "0x10"]), head=None) is None


def test_ticket_head_answers() -> None:
    """Head answers are bound to the head, the window's epoch and a TTL; TTL 0 is off."""
    stamp = make(classify("eth_gasPrice", []))
    assert stamp == Stamp(Kind.HEAD, number=110, epoch=0, expires=51.0)
    assert make(classify("eth_gasPrice", []), ttl=0) is None
    assert make(classify("eth_gasPrice", []), head=None) is None


def test_ticket_by_hash() -> None:
    """A hash in the window is anchored (final under the finalized height); otherwise the
    answer decides, unless it names no block."""
    assert make(classify("eth_getBlockByHash", [bh(105)])) == Stamp(
        Kind.ANCHORED, number=105, block_hash=bh(105)
    )
    assert make(classify("eth_getBlockByHash", [bh(95)])) == Stamp(Kind.FINAL, number=95)
    assert make(classify("eth_getBlockByHash", [bh(5)])) == from_answer(100)
    assert make(classify("eth_getBlockTransactionCountByHash", [bh(5)])) is None
    assert make(classify("eth_getTransactionReceipt", [H])) == from_answer(100)
    assert make(classify("eth_sendRawTransaction", ["0x00"])) is None


# -- admission -----------------------------------------------------------------------------


def admit_now(req: Request, stamp: Any, result: Any, **kw: Any) -> Stamp | None:
    return admit(
        req,
        stamp,
        result,
        head=kw.get("head", 110),
        window=kw.get("window") or window_to(110),
        provider_has_block=kw.get("has", True),
    )


def block(n: int, fork: int = 0) -> dict[str, Any]:
    return {"number": hex(n), "hash": bh(n, fork), "parentHash": bh(n - 1, fork)}


def item(n: int, fork: int = 0) -> dict[str, Any]:
    return {"blockNumber": hex(n), "blockHash": bh(n, fork), "transactionHash": H}


def test_null_is_never_stored() -> None:
    """A null block, receipt or transaction may still appear."""
    for method, params in (
        ("eth_getBlockByNumber", ["0x64", False]),
        ("eth_getTransactionReceipt", [H]),
        ("eth_chainId", []),
    ):
        req = classify(method, params)
        assert admit_now(req, make(req), None) is None


def test_state_read_needs_a_provider_at_the_block() -> None:
    """An answer from a provider known to be below the block is not kept."""
    req = classify("eth_getBalance", [ADDR, "0x64"])
    assert admit_now(req, make(req), "0x1") is not None
    assert admit_now(req, make(req), "0x1", has=False) is None


def test_block_answers_are_checked_against_the_window() -> None:
    """A block whose hash is not the one the node holds (another fork) is not kept."""
    req = classify("eth_getBlockByNumber", ["0x69", False])
    stamp = make(req)
    assert admit_now(req, stamp, block(105)) == stamp
    assert admit_now(req, stamp, block(105, fork=3)) is None
    assert admit_now(req, stamp, block(104)) is None  # not the block asked for
    assert admit_now(req, stamp, {"number": "0x69"}) is None  # no hash
    final = classify("eth_getBlockByNumber", ["0x5f", False])
    assert admit_now(final, make(final), block(95)) is not None
    assert admit_now(final, make(final), block(95, fork=2)) is None


def test_anchor_replaced_during_the_call_refuses_the_answer() -> None:
    """A reorg seen while the call was out makes its answer unstorable."""
    req = classify("eth_getBalance", [ADDR, "0x69"])
    w = window_to(110)
    stamp = make(req, window=w)
    w.observe(105, bh(105, 1), bh(104))
    assert admit_now(req, stamp, "0x1", window=w) is None


def test_lists_must_agree_with_the_window_and_the_range() -> None:
    """Logs and receipts name blocks inside the range, with hashes the node holds."""
    req = classify("eth_getLogs", [{"fromBlock": "0x68", "toBlock": "0x69"}])
    stamp = make(req)
    assert admit_now(req, stamp, []) == stamp  # no logs in a known, closed range
    assert admit_now(req, stamp, [item(104), item(105)]) == stamp
    assert admit_now(req, stamp, [item(105, fork=1)]) is None
    assert admit_now(req, stamp, [item(107)]) is None
    assert admit_now(req, stamp, [{"blockNumber": "0x69"}]) is None
    assert admit_now(req, stamp, {"not": "a list"}) is None


def test_transactions_take_their_block_from_the_answer() -> None:
    """A mined transaction is final under the finalized height, anchored above it while
    the node holds its block, and never stored while pending or on another fork."""
    req = classify("eth_getTransactionReceipt", [H])
    assert admit_now(req, from_answer(100), item(95)).kind is Kind.FINAL
    assert admit_now(req, from_answer(100), item(105)) == Stamp(
        Kind.ANCHORED, number=105, block_hash=bh(105)
    )
    assert admit_now(req, from_answer(100), item(105, fork=1)) is None
    assert admit_now(req, from_answer(100), item(95, fork=1)) is None  # contradicts the window
    assert admit_now(req, from_answer(100), item(111)) is None  # above the head
    pending = {"blockNumber": None, "blockHash": None}
    assert admit_now(req, from_answer(100), pending) is None
    assert admit_now(req, from_answer(100), item(50), head=None) is None


def test_blocks_by_hash_must_be_the_block_asked_for() -> None:
    """The answer's hash is the requested one; its number says final or not."""
    req = classify("eth_getBlockByHash", [bh(50)])
    assert admit_now(req, from_answer(100), block(50)).kind is Kind.FINAL
    assert admit_now(req, from_answer(100), block(51)) is None
    receipts = classify("eth_getBlockReceipts", [bh(50)])
    assert admit_now(receipts, from_answer(100), [item(50), item(50)]).kind is Kind.FINAL
    assert admit_now(receipts, from_answer(100), []) is None
    assert admit_now(receipts, from_answer(100), [{"x": 1}]) is None
    in_window = classify("eth_getBlockByHash", [bh(105)])
    stamp = make(in_window)
    assert admit_now(in_window, stamp, block(105)) == stamp
    assert admit_now(in_window, stamp, block(105, fork=1)) is None
    hashed_logs = classify("eth_getLogs", [{"blockHash": bh(105)}])
    assert admit_now(hashed_logs, make(hashed_logs), []) is not None


def test_head_answers_keep_the_head_they_were_answered_at() -> None:
    """A head answer is stored only if the head and the epoch did not move."""
    req = classify("eth_gasPrice", [])
    stamp = make(req)
    assert admit_now(req, stamp, "0x5") == stamp
    assert admit_now(req, stamp, "0x5", head=111) is None
    assert admit_now(req, stamp, "0x5", has=False) is None
    w = window_to(110)
    w.observe(110, bh(110, 1), bh(109))
    assert admit_now(req, stamp, "0x5", window=w) is None


def test_block_number_and_latest_block_are_stamped_with_their_own_value() -> None:
    """eth_blockNumber and the latest block are kept only when they are the node's head."""
    bn = classify("eth_blockNumber", [])
    stamp = make(bn, head=109)
    assert admit_now(bn, stamp, "0x6e").number == 110
    assert admit_now(bn, stamp, "0x6d") is None
    assert admit_now(bn, stamp, "nope") is None
    latest = classify("eth_getBlockByNumber", ["latest", False])
    assert admit_now(latest, make(latest), block(110)).number == 110
    assert admit_now(latest, make(latest), block(109)) is None


def test_answer_identity() -> None:
    """Blocks name themselves by number and hash, items by blockNumber and blockHash."""
    assert answer_identity(Verify.BLOCK, block(7)) == (7, bh(7))
    assert answer_identity(Verify.ITEM, item(7)) == (7, bh(7))
    assert answer_identity(Verify.ITEM, {"blockNumber": "0x", "blockHash": H}) is None
    assert answer_identity(Verify.ITEM, {"blockNumber": "0xzz", "blockHash": H}) is None
    assert answer_identity(Verify.BLOCK, "0x1") is None


# -- validity ------------------------------------------------------------------------------


def test_valid_rules() -> None:
    """Final and static always; anchored while the hash is held; head until it moves."""
    w = window_to(110)
    assert valid(Stamp(Kind.STATIC), head=None, window=w, now=0)
    assert valid(Stamp(Kind.FINAL), head=None, window=w, now=0)
    anchored = Stamp(Kind.ANCHORED, number=105, block_hash=bh(105))
    assert valid(anchored, head=110, window=w, now=0)
    head = Stamp(Kind.HEAD, number=110, epoch=0, expires=10.0)
    assert valid(head, head=110, window=w, now=9.9)
    assert not valid(head, head=110, window=w, now=10.0)
    assert not valid(head, head=111, window=w, now=1.0)
    w.observe(105, bh(105, 1), bh(104))
    assert not valid(anchored, head=110, window=w, now=0)
    assert not valid(head, head=110, window=w, now=1.0)  # the epoch moved
    assert not valid(from_answer(100), head=110, window=w, now=0)  # a ticket, never stored


# -- property: random interleavings of heads, reorgs and requests -------------------------

DEPTH = 8  # finality depth; reorgs stay shallower, as finality means


def _requests(chain: SyntheticChain, head: int, pick: int) -> tuple[str, list[Any]]:
    """One request among the shapes dApps and indexers send, around the head."""
    n = head + (1, -2, -5, -11)[(pick // 20) % 4]  # above, unfinalized, deeper, final
    shapes: list[tuple[str, list[Any]]] = [
        ("eth_blockNumber", []),
        ("eth_chainId", []),
        ("eth_gasPrice", []),
        ("eth_getBlockByNumber", [hex(n), False]),
        ("eth_getBlockByNumber", ["latest", False]),
        ("eth_getBlockByNumber", ["finalized", False]),
        ("eth_getBlockByHash", [chain.block_hash(min(n, head)), False]),
        ("eth_getBlockReceipts", [hex(n)]),
        ("eth_getTransactionReceipt", [chain.tx_hash(min(n, head), 0)]),
        ("eth_getTransactionByHash", [chain.tx_hash(min(n, head), 1)]),
        ("eth_getLogs", [{"fromBlock": hex(max(0, n - 2)), "toBlock": hex(n)}]),
        ("eth_getLogs", [{"blockHash": chain.block_hash(min(n, head))}]),
        ("eth_getBalance", ["0x" + "ab" * 20, hex(n)]),
        ("eth_getBalance", ["0x" + "ab" * 20, "latest"]),
        ("eth_getBlockTransactionCountByNumber", [hex(n)]),
        ("eth_getBlockReceipts", ["latest"]),
        ("eth_getTransactionByBlockNumberAndIndex", ["latest", "0x0"]),
        ("eth_getLogs", [{"fromBlock": "latest"}]),
        ("eth_getBlockByNumber", ["latest", True]),
        ("eth_getBlockByNumber", ["safe", False]),
    ]
    return shapes[pick % len(shapes)]


def _truth(chain: SyntheticChain, head: int, method: str, params: list[Any]) -> Any:
    return call_method(NodeView(chain=chain, head=head), method, params)


_start = st.tuples(st.just("start"), st.integers(0, 79), st.booleans())
_finish = st.tuples(st.just("finish"), st.integers(0, 3), st.booleans())
_lookup = st.tuples(st.just("lookup"), st.integers(0, 79), st.booleans())
ops = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.integers(1, 3), st.booleans()),
        st.tuples(st.just("reorg"), st.integers(1, DEPTH - 1), st.booleans()),
        _start,
        _start,
        _finish,
        _finish,
        _lookup,
        _lookup,
        _lookup,
        st.tuples(st.just("walk"), st.integers(1, 5), st.booleans()),
        st.tuples(st.just("tick"), st.integers(1, 900), st.booleans()),
    ),
    min_size=40,
    max_size=160,
)


@settings(max_examples=250, deadline=None)
@given(ops, st.integers(0, 2**32))
def test_a_cached_answer_is_always_one_the_chain_still_gives(
    history: list[tuple[str, int, bool]], seed: int
) -> None:
    """New heads (in order or with gaps), reorgs below finality, requests that start
    before a reorg and finish after it, answers feeding the window, walk-backs: every
    answer served from the cache equals what the chain answers at that moment."""
    chain = SyntheticChain(1, 1.0, seed, start_height=1000, start_time=0.0)
    clock = 0.5  # seconds; the chain's head is 1000 + floor(clock)
    ms = 0.0  # the node's monotonic clock (for TTLs), advanced by "tick"
    window = BlockWindow(capacity=128)
    finality = Finality(DEPTH)
    known_head: int | None = None
    store: dict[bytes, tuple[Any, Stamp]] = {}
    asked: dict[bytes, tuple[str, list[Any]]] = {}
    inflight: list[tuple[bytes, str, list[Any], Request, Stamp, Any]] = []
    served = 0

    def observe_head(every: bool) -> None:
        nonlocal known_head
        head = chain.height(clock)
        first = head if not every or known_head is None else max(known_head + 1, head - 5)
        for n in range(min(first, head), head + 1):
            window.observe(n, chain.block_hash(n), chain.block_hash(n - 1))
        known_head = head if known_head is None else max(known_head, head)

    observe_head(True)
    for op, arg, flag in history:
        head = chain.height(clock)
        if op == "advance":
            clock += arg
            observe_head(flag)  # flag: every head in order; else only the newest (a gap)
        elif op == "reorg":
            chain.reorg(arg, clock)
            observe_head(flag)
        elif op == "tick":
            ms += arg / 1000
        elif op == "walk":
            for _ in range(arg):
                want = window.wanted(finality.height(known_head, ms), head - 12)
                if want is None:
                    break
                window.fetched()
                n = chain.block_number_of(want)
                if n is None or n > head:
                    window.fetch_failed()
                else:
                    window.observe(n, want, chain.block_hash(n - 1), head=False)
        elif op == "start":
            method, params = _requests(chain, head, arg)
            req = classify(method, params)
            stamp = ticket(
                req,
                head=known_head,
                finalized=finality.height(known_head, ms),
                window=window,
                now=ms,
                ttl_s=0.5,
            )
            try:
                answer = _truth(chain, head, method, params)  # computed now, stored later
            except RpcError:
                continue
            if stamp is not None:
                key = method.encode() + orjson.dumps(normalize(params))
                inflight.append((key, method, params, req, stamp, answer))
        elif op == "finish" and inflight:
            key, method, params, req, stamp, answer = inflight.pop(-1 - arg % len(inflight))
            if isinstance(answer, dict) and "parentHash" in answer:  # blocks feed the window
                number = int(answer["number"], 16)
                window.observe(number, answer["hash"], answer["parentHash"], head=False)
            kept = admit(
                req,
                stamp,
                answer,
                head=known_head,
                window=window,
                provider_has_block=True,
            )
            if kept is not None:
                store[key] = (answer, kept)
                asked[key] = (method, params)
        elif op == "lookup":
            if flag and asked:  # something stored, maybe long ago
                key = sorted(asked)[arg % len(asked)]
                method, params = asked[key]
            else:
                method, params = _requests(chain, head, arg)
                key = method.encode() + orjson.dumps(normalize(params))
            entry = store.get(key)
            if entry is None or not valid(entry[1], head=known_head, window=window, now=ms):
                continue
            served += 1
            try:
                truth = _truth(chain, head, method, params)
            except RpcError as exc:  # pragma: no cover - the assertion's message
                raise AssertionError(f"served {method}{params}; the chain errs: {exc}") from exc
            assert entry[0] == truth, (method, params, entry[1])
