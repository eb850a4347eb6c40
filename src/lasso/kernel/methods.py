"""The JSON-RPC method registry: categories, timeouts, replay safety and block parameters.

Everything here is a pure lookup over constant tables (reference §5.4 for the categories,
§2.6 for timeouts and execution safety). The router and the pipeline use it to decide how
long a request may take, how many times it may be dispatched, and which block a request
reads (for the lag and archival filters).

Block references are returned as ``int`` (a block number) or as one of the tags in
:data:`BLOCK_TAGS`. A block *hash* pins no height, so it yields no reference.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import TypeAlias

# --- registry (reference §5.4) -----------------------------------------------------------

CORE = "core"
STATE = "state"
NETWORK = "network"
NODE_ADMIN = "node_admin"
EIP1559 = "eip1559"
EIP4844 = "eip4844"
MEMPOOL = "mempool"
FILTERS = "filters"
SUBSCRIPTIONS = "subscriptions"
BATCH = "batch"
DEBUG = "debug"
TRACE = "trace"
TXPOOL = "txpool"
LOCAL_ONLY = "local_only"

METHODS_BY_CATEGORY: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        CORE: (
            "eth_blockNumber",
            "eth_chainId",
            "eth_gasPrice",
            "eth_getBalance",
            "eth_getCode",
            "eth_getTransactionByHash",
            "eth_getTransactionReceipt",
            "eth_getBlockByNumber",
            "eth_getBlockByHash",
            "eth_getBlockTransactionCountByHash",
            "eth_getBlockTransactionCountByNumber",
            "eth_getUncleCountByBlockHash",
            "eth_getUncleCountByBlockNumber",
            "eth_getUncleByBlockHashAndIndex",
            "eth_getUncleByBlockNumberAndIndex",
            "eth_getTransactionByBlockHashAndIndex",
            "eth_getTransactionByBlockNumberAndIndex",
        ),
        STATE: (
            "eth_call",
            "eth_estimateGas",
            "eth_getStorageAt",
            "eth_getTransactionCount",
            "eth_createAccessList",
            "eth_getProof",
        ),
        NETWORK: ("net_version", "web3_clientVersion", "web3_sha3", "eth_syncing"),
        NODE_ADMIN: ("net_listening", "net_peerCount", "eth_protocolVersion"),
        EIP1559: ("eth_maxPriorityFeePerGas", "eth_feeHistory"),
        EIP4844: ("eth_blobBaseFee",),
        MEMPOOL: ("eth_sendRawTransaction",),
        FILTERS: (
            "eth_getLogs",
            "eth_newFilter",
            "eth_getFilterChanges",
            "eth_getFilterLogs",
            "eth_uninstallFilter",
            "eth_newBlockFilter",
            "eth_newPendingTransactionFilter",
        ),
        SUBSCRIPTIONS: ("eth_subscribe", "eth_unsubscribe"),
        BATCH: ("eth_getBlockReceipts",),
        DEBUG: (
            "debug_traceTransaction",
            "debug_traceBlockByNumber",
            "debug_traceBlockByHash",
            "debug_traceCall",
            "debug_getBadBlocks",
            "debug_storageRangeAt",
            "debug_getModifiedAccountsByNumber",
            "debug_getModifiedAccountsByHash",
        ),
        TRACE: (
            "trace_block",
            "trace_transaction",
            "trace_call",
            "trace_callMany",
            "trace_rawTransaction",
            "trace_replayBlockTransactions",
            "trace_replayTransaction",
            "trace_filter",
            "trace_get",
        ),
        TXPOOL: ("txpool_status", "txpool_content", "txpool_inspect"),
        LOCAL_ONLY: (
            "eth_accounts",
            "eth_sign",
            "eth_signTransaction",
            "eth_sendTransaction",
            "eth_coinbase",
            "eth_mining",
            "eth_hashrate",
            "eth_getWork",
            "eth_submitWork",
            "eth_submitHashrate",
        ),
    }
)
"""Registry category → its methods, in the reference's order."""

_CATEGORY_OF: dict[str, str] = {
    method: category for category, methods in METHODS_BY_CATEGORY.items() for method in methods
}

KNOWN_METHODS: frozenset[str] = frozenset(_CATEGORY_OF)
"""Every registry method. Metric labels collapse anything else to ``"other"``."""

BLOCKED_METHODS: frozenset[str] = frozenset(
    {"eth_sendTransaction", "eth_sign", "personal_sign", "eth_signTransaction", "eth_accounts"}
)
"""Methods that need a key held by the node: answered locally with ``-32601``."""

WS_ONLY_METHODS: frozenset[str] = frozenset({"eth_subscribe", "eth_unsubscribe"})
"""Methods that only make sense on a WebSocket: ``-32601`` over HTTP."""


def method_category(method: str) -> str | None:
    """Return the registry category of ``method``, or ``None`` for an unknown method."""
    return _CATEGORY_OF.get(method)


# --- timeouts and execution safety (reference §2.6) ------------------------------------

DEFAULT_TIMEOUT_S = 10.0

_TIMEOUTS_S: dict[str, float] = {
    "eth_blockNumber": 1.0,
    "eth_chainId": 1.0,
    "net_version": 1.0,
    "web3_clientVersion": 1.0,
    "eth_gasPrice": 2.0,
    "eth_getBalance": 2.0,
    "eth_getTransactionCount": 2.0,
    "eth_getCode": 2.0,
    "eth_getTransactionByHash": 2.0,
    "eth_getBlockByNumber": 2.0,
    "eth_getBlockByHash": 2.0,
    "eth_newFilter": 2.0,
    "eth_getTransactionReceipt": 3.0,
    "eth_call": 5.0,
    "eth_estimateGas": 5.0,
    "eth_getLogs": 5.0,
    "eth_getFilterLogs": 5.0,
    "eth_getProof": 10.0,
    "debug_traceTransaction": 30.0,
    # The reference lists ``debug_traceBlock`` (45 s), which takes an RLP block and is not
    # in the registry. The block tracers clients actually call get the same envelope
    # rather than the 10 s default, which is too short to trace a full block.
    "debug_traceBlock": 45.0,
    "debug_traceBlockByNumber": 45.0,
    "debug_traceBlockByHash": 45.0,
}


def method_timeout_s(method: str) -> float:
    """Return the total time envelope for one request of ``method``, in seconds.

    Every attempt and failover of the request must fit inside it; unknown methods get
    :data:`DEFAULT_TIMEOUT_S`.
    """
    return _TIMEOUTS_S.get(method, DEFAULT_TIMEOUT_S)


_REPLAY_SAFE_CATEGORIES = frozenset(
    {CORE, STATE, NETWORK, NODE_ADMIN, EIP1559, EIP4844, BATCH, DEBUG, TRACE, TXPOOL}
)
REPLAY_SAFE_METHODS: frozenset[str] = frozenset(
    {m for m, c in _CATEGORY_OF.items() if c in _REPLAY_SAFE_CATEGORIES} | {"eth_getLogs"}
)
"""The methods :func:`is_replay_safe` is true for."""


def is_replay_safe(method: str) -> bool:
    """Return whether ``method`` may be sent again after a dispatch that may have landed.

    True for reads (up to 3 dispatches). False for ``eth_sendRawTransaction``, the
    stateful filter methods, subscriptions, local-only and unknown methods: those get a
    single dispatch, and a failure after it was sent is terminal ("indeterminate").
    """
    return method in REPLAY_SAFE_METHODS


# --- block parameters ------------------------------------------------------------------

BLOCK_TAGS: frozenset[str] = frozenset({"latest", "earliest", "pending", "safe", "finalized"})

BlockRef: TypeAlias = int | str
"""A block number, or one of :data:`BLOCK_TAGS`."""

# method -> index of its block parameter. For a trailing (index > 0) block parameter a
# missing value means "latest", as nodes treat it; a missing leading one is malformed.
_BLOCK_PARAM_INDEX: dict[str, int] = {
    "eth_getBlockByNumber": 0,
    "eth_getBlockTransactionCountByNumber": 0,
    "eth_getUncleCountByBlockNumber": 0,
    "eth_getUncleByBlockNumberAndIndex": 0,
    "eth_getTransactionByBlockNumberAndIndex": 0,
    "eth_getBlockReceipts": 0,
    "debug_traceBlockByNumber": 0,
    "trace_block": 0,
    "trace_replayBlockTransactions": 0,
    "eth_call": 1,
    "eth_getBalance": 1,
    "eth_getCode": 1,
    "eth_getTransactionCount": 1,
    "eth_estimateGas": 1,
    "eth_createAccessList": 1,
    "eth_feeHistory": 1,
    "debug_traceCall": 1,
    "trace_callMany": 1,
    "eth_getStorageAt": 2,
    "eth_getProof": 2,
    "trace_call": 2,
}

# A uint64 quantity; 64 hex digits would be a block hash. int() alone would also accept
# "0x-1", "0x_1" and "0x 1".
_HEX_QUANTITY = re.compile(r"0x[0-9a-f]{1,16}")


def parse_block_ref(value: object) -> BlockRef | None:
    """Read one block parameter: a tag, a hex quantity, an int or an EIP-1898 object.

    Returns ``None`` for a block hash (it pins no height) and for anything malformed.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text in BLOCK_TAGS:
            return text
        if _HEX_QUANTITY.fullmatch(text):
            return int(text, 16)
        return None
    if isinstance(value, bool):  # bool is an int subclass, never a block number
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, dict) and "blockNumber" in value:  # EIP-1898
        return parse_block_ref(value["blockNumber"])
    return None


def _param_ref(value: object) -> BlockRef | None:
    return "latest" if value is None else parse_block_ref(value)


def logs_block_range(params: object) -> tuple[BlockRef, BlockRef] | None:
    """Return ``(fromBlock, toBlock)`` of ``eth_getLogs`` params; a missing bound is latest.

    Returns ``None`` for a ``blockHash`` filter (one block, no range) and for malformed
    params. Tags are left for the caller to resolve against its view of the chain head.
    """
    if not isinstance(params, list) or not params or not isinstance(params[0], dict):
        return None
    flt = params[0]
    if flt.get("blockHash") is not None:
        return None
    lo = _param_ref(flt.get("fromBlock"))
    hi = _param_ref(flt.get("toBlock"))
    if lo is None or hi is None:
        return None
    return lo, hi


def block_param_index(method: str) -> int | None:
    """The position of ``method``'s block parameter, ``None`` when it has none (see
    :func:`block_params`: a missing trailing one means ``latest``)."""
    return _BLOCK_PARAM_INDEX.get(method)


def block_params(method: str, params: object) -> list[BlockRef]:
    """Return the block references a request reads, for the lag and archival filters.

    Methods without a block parameter, hashes and malformed params yield ``[]``; this
    never raises. ``eth_getLogs`` yields ``[fromBlock, toBlock]``.
    """
    if method == "eth_getLogs":
        span = logs_block_range(params)
        return [] if span is None else list(span)
    index = _BLOCK_PARAM_INDEX.get(method)
    if index is None or not isinstance(params, list):
        return []
    if index >= len(params):
        return ["latest"] if index == len(params) and index > 0 else []
    ref = _param_ref(params[index]) if index > 0 else parse_block_ref(params[index])
    return [] if ref is None else [ref]
