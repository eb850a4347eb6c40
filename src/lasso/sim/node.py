"""What a simulated node answers: JSON-RPC 2.0 dispatch over a :class:`SyntheticChain`.

Pure code (no IO, no clock): the provider adapter builds a :class:`NodeView` per request,
with the head it currently exposes and its capabilities, and this module turns parsed
JSON-RPC payloads into response objects, the way geth does (EIP-1474 error codes and
messages close to geth's so a router's classifier sees realistic text).

Errors a caller can provoke:

| code | when |
|---|---|
| -32700 | body is not JSON (the adapter answers it) |
| -32600 | not a request object, empty batch, batch over the size limit |
| -32601 | unknown or unsupported method: ``the method X does not exist/is not available`` |
| -32602 | bad or missing params |
| -32000 | ``header not found`` (state beyond the head), ``missing trie node`` (pruned state),
|        | ``query exceeds max block range N``, ``already known`` (resent transaction), |
|        | ``filter not found`` (unknown or uninstalled filter id) |
| 3      | ``execution reverted`` (``eth_call`` data starting with ``0xdeadbeef``) |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from Crypto.Hash import keccak as _keccak

from lasso.sim.chain import JSON, ExecutionReverted, SyntheticChain
from lasso.sim.filters import SimFilters

__all__ = [
    "SUPPORTED_METHODS",
    "NodeView",
    "RpcError",
    "answer_call",
    "answer_payload",
    "call_method",
    "error_response",
    "log_matches",
    "parse_log_filter",
]

SAFE_DEPTH = 32
FINALIZED_DEPTH = 64
PRIORITY_FEE = 10**9
#: Blocks one ``eth_getLogs`` may scan when the provider sets no ``max_block_range``.
LOG_SCAN_LIMIT = 10_000
FEE_HISTORY_LIMIT = 1024


class RpcError(Exception):
    """A JSON-RPC error the node answers with (code, message and optional data)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_dict(self) -> JSON:
        """Return the JSON-RPC ``error`` member."""
        error: JSON = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeView:
    """One provider's view of the chain for one request.

    Attributes:
        chain: the shared synthetic chain.
        head: the newest block this provider serves; newer blocks answer null.
        archival: serve state at every block.
        archive_depth: recent blocks of state kept when not archival.
        max_block_range: the largest ``eth_getLogs`` range, or None.
        unsupported_methods: methods answered with -32601.
        client_version: the ``web3_clientVersion`` result.
        mempool: raw transactions received, by hash (owned and shared by the provider).
        filters: the provider's filters (``eth_newFilter`` and friends), or None.
    """

    chain: SyntheticChain
    head: int
    archival: bool = True
    archive_depth: int = 128
    max_block_range: int | None = None
    unsupported_methods: frozenset[str] = frozenset()
    client_version: str = "LassoSim/v0.1.0"
    mempool: dict[str, str] = field(default_factory=dict)
    filters: SimFilters | None = None  # owned by the provider; None: no filter methods


def error_response(request_id: Any, code: int, message: str, data: Any = None) -> JSON:
    """Return a JSON-RPC error response object."""
    return {"jsonrpc": "2.0", "id": request_id, "error": RpcError(code, message, data).to_dict()}


def answer_payload(
    view: NodeView, payload: Any, *, max_batch_size: int | None = None
) -> JSON | list[JSON] | None:
    """Answer a parsed JSON-RPC payload: one request object or a batch array.

    Returns the response object, the list of responses for a batch (notifications left
    out), or None when there is nothing to send (a notification, or a batch of them).
    """
    if isinstance(payload, list):
        if not payload:
            return error_response(None, -32600, "empty batch")
        if max_batch_size is not None and len(payload) > max_batch_size:
            if max_batch_size == 0:
                return error_response(None, -32600, "batch requests are not supported")
            return error_response(
                None, -32600, f"batch too large: {len(payload)} calls, max {max_batch_size}"
            )
        answers = [answer_call(view, item) for item in payload]
        responses = [a for a in answers if a is not None]
        return responses or None
    return answer_call(view, payload)


def answer_call(view: NodeView, request: Any) -> JSON | None:
    """Answer one JSON-RPC request object; None for a valid notification."""
    if not isinstance(request, dict):
        return error_response(None, -32600, "invalid request")
    request_id = request.get("id")
    method = request.get("method")
    if request.get("jsonrpc") != "2.0" or not isinstance(method, str):
        return error_response(request_id, -32600, "invalid request")
    try:
        result = call_method(view, method, request.get("params"))
    except RpcError as exc:
        if "id" not in request:
            return None
        return {"jsonrpc": "2.0", "id": request_id, "error": exc.to_dict()}
    if "id" not in request:
        return None
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def call_method(view: NodeView, method: str, params: Any) -> Any:
    """Run ``method`` with ``params`` against ``view`` and return the JSON result.

    Raises:
        RpcError: with the code and message a geth-like node would answer.
    """
    handler = _HANDLERS.get(method)
    if handler is None or method in view.unsupported_methods:
        raise RpcError(-32601, f"the method {method} does not exist/is not available")
    if view.filters is None and method in _FILTER_METHODS:
        raise RpcError(-32601, f"the method {method} does not exist/is not available")
    if params is None:
        params = []
    if not isinstance(params, list):
        raise RpcError(-32602, "non-array args")
    return handler(view, params)


# -- parameter parsing ---------------------------------------------------------------------


def _arity(params: list[Any], required: int, allowed: int) -> None:
    if len(params) < required:
        raise RpcError(-32602, f"missing value for required argument {len(params)}")
    if len(params) > allowed:
        raise RpcError(-32602, f"too many arguments, want at most {allowed}")


def _hex(value: Any, what: str, arg: int) -> str:
    if not isinstance(value, str) or not value.startswith(("0x", "0X")):
        raise RpcError(-32602, f"invalid argument {arg}: {what} must be a 0x-prefixed hex string")
    digits = value[2:]
    try:
        bytes.fromhex(digits if len(digits) % 2 == 0 else "0" + digits)
    except ValueError:
        raise RpcError(-32602, f"invalid argument {arg}: invalid hex string") from None
    return value.lower()


def _address(value: Any, arg: int) -> str:
    text = _hex(value, "address", arg)
    if len(text) != 42:
        raise RpcError(
            -32602,
            f"invalid argument {arg}: hex string has length {len(text) - 2}, "
            "want 40 for common.Address",
        )
    return text


def _hash(value: Any, arg: int) -> str:
    text = _hex(value, "hash", arg)
    if len(text) != 66:
        raise RpcError(
            -32602,
            f"invalid argument {arg}: hex string has length {len(text) - 2}, "
            "want 64 for common.Hash",
        )
    return text


def _quantity(value: Any, arg: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    text = _hex(value, "quantity", arg)
    if len(text) == 2:
        raise RpcError(-32602, f'invalid argument {arg}: hex string "0x"')
    return int(text, 16)


def _block_number(view: NodeView, tag: Any, arg: int) -> int:
    """Resolve a block tag, number or EIP-1898 object; may be beyond the head."""
    if isinstance(tag, dict):
        if "blockHash" in tag:
            number = view.chain.block_number_of(_hash(tag["blockHash"], arg))
            if number is None or number > view.head:
                raise RpcError(-32000, "header for hash not found")
            return number
        if "blockNumber" in tag:
            return _block_number(view, tag["blockNumber"], arg)
        raise RpcError(-32602, f"invalid argument {arg}: block object without hash or number")
    if tag in ("latest", "pending"):
        return view.head
    if tag == "earliest":
        return 0
    if tag == "safe":
        return max(0, view.head - SAFE_DEPTH)
    if tag == "finalized":
        return max(0, view.head - FINALIZED_DEPTH)
    if isinstance(tag, str) and tag.startswith(("0x", "0X")):
        return _quantity(tag, arg)
    raise RpcError(-32602, f"invalid argument {arg}: invalid block tag {tag!r}")


def _state_block(view: NodeView, params: list[Any], index: int) -> int:
    """Resolve the block of a state method and check that its state is available."""
    tag = params[index] if len(params) > index else "latest"
    number = _block_number(view, tag, index)
    if number > view.head:
        raise RpcError(-32000, "header not found")
    if not view.archival and number < view.head - view.archive_depth:
        root = view.chain.state_root(number)[2:]
        raise RpcError(-32000, f"missing trie node {root} (path ) state is not available")
    return number


def _visible_block(view: NodeView, tag: Any, arg: int) -> int | None:
    number = _block_number(view, tag, arg)
    return number if number <= view.head else None


# -- handlers ------------------------------------------------------------------------------


def _chain_id(view: NodeView, params: list[Any]) -> Any:
    return hex(view.chain.chain_id)


def _net_version(view: NodeView, params: list[Any]) -> Any:
    return str(view.chain.chain_id)


def _client_version(view: NodeView, params: list[Any]) -> Any:
    return view.client_version


def _block_number_method(view: NodeView, params: list[Any]) -> Any:
    return hex(view.head)


def _constant(value: Any) -> Callable[[NodeView, list[Any]], Any]:
    def handler(view: NodeView, params: list[Any]) -> Any:
        return value

    return handler


def _get_block_by_number(view: NodeView, params: list[Any]) -> Any:
    _arity(params, 1, 2)
    full = bool(params[1]) if len(params) > 1 else False
    number = _visible_block(view, params[0], 0)
    return None if number is None else view.chain.block(number, full)


def _get_block_by_hash(view: NodeView, params: list[Any]) -> Any:
    _arity(params, 1, 2)
    full = bool(params[1]) if len(params) > 1 else False
    number = view.chain.block_number_of(_hash(params[0], 0))
    if number is None or number > view.head:
        return None
    return view.chain.block(number, full)


def _block_of(view: NodeView, ref: Any) -> int | None:
    if isinstance(ref, str) and len(ref) == 66:
        number = view.chain.block_number_of(_hash(ref, 0))
        return None if number is None or number > view.head else number
    return _visible_block(view, ref, 0)


def _get_block_receipts(view: NodeView, params: list[Any]) -> Any:
    _arity(params, 1, 1)
    number = _block_of(view, params[0])
    return None if number is None else view.chain.receipts(number)


def _get_tx_count_by_number(view: NodeView, params: list[Any]) -> Any:
    _arity(params, 1, 1)
    number = _block_of(view, params[0])
    return None if number is None else hex(len(view.chain.transactions(number)))


def _get_tx_by_block_and_index(view: NodeView, params: list[Any]) -> Any:
    _arity(params, 2, 2)
    number = _block_of(view, params[0])
    index = _quantity(params[1], 1)
    if number is None:
        return None
    txs = view.chain.transactions(number)
    return txs[index] if index < len(txs) else None


def _get_balance(view: NodeView, params: list[Any]) -> Any:
    _arity(params, 1, 2)
    address = _address(params[0], 0)
    return hex(view.chain.balance(address, _state_block(view, params, 1)))


def _get_transaction_count(view: NodeView, params: list[Any]) -> Any:
    _arity(params, 1, 2)
    address = _address(params[0], 0)
    return hex(view.chain.nonce(address, _state_block(view, params, 1)))


def _get_code(view: NodeView, params: list[Any]) -> Any:
    _arity(params, 1, 2)
    address = _address(params[0], 0)
    _state_block(view, params, 1)
    return view.chain.code(address)


def _get_storage_at(view: NodeView, params: list[Any]) -> Any:
    _arity(params, 2, 3)
    address = _address(params[0], 0)
    slot = _quantity(params[1], 1)
    return view.chain.storage(address, slot, _state_block(view, params, 2))


def _call_args(params: list[Any]) -> tuple[str | None, str]:
    tx = params[0]
    if not isinstance(tx, dict):
        raise RpcError(-32602, "invalid argument 0: transaction call object expected")
    to = None if tx.get("to") is None else _address(tx["to"], 0)
    data = tx.get("input", tx.get("data"))
    data = "0x" if data is None else _hex(data, "data", 0)
    return to, data


def _reverted(exc: ExecutionReverted) -> RpcError:
    return RpcError(3, str(exc), exc.data)


def _eth_call(view: NodeView, params: list[Any]) -> Any:
    _arity(params, 1, 3)
    to, data = _call_args(params)
    _state_block(view, params, 1)
    if to is None:
        return "0x"
    try:
        return view.chain.call(to, data)
    except ExecutionReverted as exc:
        raise _reverted(exc) from None


def _estimate_gas(view: NodeView, params: list[Any]) -> Any:
    _arity(params, 1, 3)
    to, data = _call_args(params)
    _state_block(view, params, 1)
    try:
        return hex(view.chain.estimate_gas(to, data))
    except ExecutionReverted as exc:
        raise _reverted(exc) from None


def _gas_price(view: NodeView, params: list[Any]) -> Any:
    return hex(view.chain.base_fee(view.head) + PRIORITY_FEE)


def _fee_history(view: NodeView, params: list[Any]) -> Any:
    _arity(params, 2, 3)
    count = _quantity(params[0], 0)
    if count == 0:
        return {"oldestBlock": "0x0", "baseFeePerGas": [], "gasUsedRatio": []}
    count = min(count, FEE_HISTORY_LIMIT)
    newest = _block_number(view, params[1], 1)
    if newest > view.head:
        raise RpcError(-32000, f"request beyond head block: requested {newest}, head {view.head}")
    percentiles = params[2] if len(params) > 2 and params[2] is not None else []
    if not isinstance(percentiles, list) or any(
        isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 100
        for p in percentiles
    ):
        raise RpcError(-32602, "invalid argument 2: reward percentiles must be 0..100")
    if percentiles != sorted(percentiles):
        raise RpcError(-32602, "invalid reward percentile: not in ascending order")
    oldest = max(0, newest - count + 1)
    blocks = range(oldest, newest + 1)
    chain = view.chain
    result: JSON = {
        "oldestBlock": hex(oldest),
        "baseFeePerGas": [hex(chain.base_fee(n)) for n in range(oldest, newest + 2)],
        "gasUsedRatio": [int(chain.block(n)["gasUsed"], 16) / 30_000_000 for n in blocks],
    }
    if percentiles:
        result["reward"] = [
            [hex(PRIORITY_FEE + int(p * 10**7)) for p in percentiles] for _ in blocks
        ]
    return result


def _block_range(view: NodeView, spec: JSON) -> tuple[int, int]:
    if "blockHash" in spec:
        if spec.get("fromBlock") is not None or spec.get("toBlock") is not None:
            raise RpcError(-32602, "cannot specify both BlockHash and FromBlock/ToBlock")
        number = view.chain.block_number_of(_hash(spec["blockHash"], 0))
        if number is None or number > view.head:
            raise RpcError(-32000, "unknown block")
        return number, number
    first = _block_number(view, spec.get("fromBlock") or "latest", 0)
    last = _block_number(view, spec.get("toBlock") or "latest", 0)
    if first > last:
        raise RpcError(-32602, "invalid block range params")
    span = last - first + 1
    if view.max_block_range is not None and span > view.max_block_range:
        raise RpcError(-32000, f"query exceeds max block range {view.max_block_range}")
    if span > LOG_SCAN_LIMIT:
        raise RpcError(-32000, f"query returned more than {LOG_SCAN_LIMIT} results")
    return first, last


def parse_log_filter(spec: Any) -> tuple[set[str] | None, list[set[str] | None]]:
    """Parse the ``address`` and ``topics`` members of a log filter.

    Returns the allowed addresses (None = any) and, per topic position, the allowed
    topics (None = any).

    Raises:
        RpcError: -32602 on a malformed filter.
    """
    if not isinstance(spec, dict):
        raise RpcError(-32602, "invalid argument 0: filter object expected")
    raw_address = spec.get("address")
    addresses: set[str] | None
    if raw_address is None:
        addresses = None
    elif isinstance(raw_address, list):
        addresses = {_address(a, 0) for a in raw_address}
    else:
        addresses = {_address(raw_address, 0)}
    topics = spec.get("topics") or []
    if not isinstance(topics, list) or len(topics) > 4:
        raise RpcError(-32602, "invalid argument 0: topics must be a list of at most 4")
    parsed: list[set[str] | None] = []
    for position in topics:
        if position is None:
            parsed.append(None)
        elif isinstance(position, list):
            parsed.append({_hash(t, 0) for t in position if t is not None} or None)
        else:
            parsed.append({_hash(position, 0)})
    return addresses, parsed


def log_matches(log: JSON, addresses: set[str] | None, topics: list[set[str] | None]) -> bool:
    """Return whether ``log`` passes a filter parsed by :func:`parse_log_filter`."""
    if addresses is not None and log["address"] not in addresses:
        return False
    log_topics = log["topics"]
    for i, wanted in enumerate(topics):
        if wanted is None:
            continue
        if i >= len(log_topics) or log_topics[i] not in wanted:
            return False
    return True


def _get_logs(view: NodeView, params: list[Any]) -> Any:
    _arity(params, 1, 1)
    addresses, topics = parse_log_filter(params[0])
    first, last = _block_range(view, params[0])
    last = min(last, view.head)  # like older geth: a range past the head is cut short
    out: list[JSON] = []
    for number in range(first, last + 1):
        out.extend(log for log in view.chain.logs(number) if log_matches(log, addresses, topics))
    return out


def _tx_visible(view: NodeView, tx: JSON | None) -> bool:
    return tx is not None and int(tx["blockNumber"], 16) <= view.head


def _get_transaction_by_hash(view: NodeView, params: list[Any]) -> Any:
    _arity(params, 1, 1)
    tx_hash = _hash(params[0], 0)
    tx = view.chain.transaction(tx_hash)
    if _tx_visible(view, tx):
        return tx
    raw = view.mempool.get(tx_hash)
    if raw is None:
        return None
    pending = {"hash": tx_hash, "input": raw, "chainId": hex(view.chain.chain_id)}
    return {**pending, "blockHash": None, "blockNumber": None, "transactionIndex": None}


def _get_transaction_receipt(view: NodeView, params: list[Any]) -> Any:
    _arity(params, 1, 1)
    tx_hash = _hash(params[0], 0)
    tx = view.chain.transaction(tx_hash)
    return view.chain.receipt(tx_hash) if _tx_visible(view, tx) else None


def _send_raw_transaction(view: NodeView, params: list[Any]) -> Any:
    _arity(params, 1, 1)
    raw = _hex(params[0], "data", 0)
    if len(raw) <= 2 or len(raw) % 2:
        raise RpcError(-32602, "invalid argument 0: empty or odd-length transaction")
    # The same C Keccak as lasso.kernel.keccak (the simulator imports nothing of the proxy).
    tx_hash = "0x" + _keccak.new(digest_bits=256, data=bytes.fromhex(raw[2:])).hexdigest()
    if tx_hash in view.mempool:
        raise RpcError(-32000, "already known")
    view.mempool[tx_hash] = raw
    return tx_hash


def _filters(view: NodeView) -> SimFilters:
    if view.filters is None:  # pragma: no cover - call_method checks first
        raise RpcError(-32601, "filters are not available")
    return view.filters


def _new_filter(view: NodeView, params: list[Any]) -> Any:
    _arity(params, 1, 1)
    parse_log_filter(params[0])  # -32602 on a malformed filter
    spec = params[0]
    if "blockHash" in spec:
        raise RpcError(-32602, "invalid argument 0: blockHash is not allowed in filters")
    for key in ("fromBlock", "toBlock"):
        if spec.get(key) is not None:
            _block_number(view, spec[key], 0)
    return _filters(view).new_log_filter(view, spec)


def _new_block_filter(view: NodeView, params: list[Any]) -> Any:
    _arity(params, 0, 0)
    return _filters(view).new_block_filter(view)


def _new_pending_filter(view: NodeView, params: list[Any]) -> Any:
    _arity(params, 0, 1)
    return _filters(view).new_pending_filter(view)


def _filter_logs(view: NodeView, spec: JSON, lo: int, hi: int) -> list[JSON]:
    addresses, topics = parse_log_filter(spec)
    return [
        log
        for number in range(lo, hi + 1)
        for log in view.chain.logs(number)
        if log_matches(log, addresses, topics)
    ]


def _get_filter_changes(view: NodeView, params: list[Any]) -> Any:
    _arity(params, 1, 1)
    try:
        return _filters(view).changes(view, _hex(params[0], "id", 0), _logs_reader(view))
    except KeyError:
        raise RpcError(-32000, "filter not found") from None


def _logs_reader(view: NodeView) -> Callable[[JSON, int, int], list[JSON]]:
    return lambda spec, lo, hi: _filter_logs(view, spec, lo, hi)


def _get_filter_logs(view: NodeView, params: list[Any]) -> Any:
    _arity(params, 1, 1)
    flt = _filters(view).get(_hex(params[0], "id", 0))
    if flt is None or flt.kind != "logs":
        raise RpcError(-32000, "filter not found")
    return _get_logs(view, [flt.spec])


def _uninstall_filter(view: NodeView, params: list[Any]) -> Any:
    _arity(params, 1, 1)
    return _filters(view).uninstall(_hex(params[0], "id", 0))


_FILTER_METHODS = frozenset(
    {
        "eth_newFilter",
        "eth_newBlockFilter",
        "eth_newPendingTransactionFilter",
        "eth_getFilterChanges",
        "eth_getFilterLogs",
        "eth_uninstallFilter",
    }
)

_HANDLERS: dict[str, Callable[[NodeView, list[Any]], Any]] = {
    "eth_chainId": _chain_id,
    "net_version": _net_version,
    "net_listening": _constant(True),
    "net_peerCount": _constant("0x19"),
    "web3_clientVersion": _client_version,
    "eth_syncing": _constant(False),
    "eth_blockNumber": _block_number_method,
    "eth_getBlockByNumber": _get_block_by_number,
    "eth_getBlockByHash": _get_block_by_hash,
    "eth_getBlockReceipts": _get_block_receipts,
    "eth_getBlockTransactionCountByNumber": _get_tx_count_by_number,
    "eth_getBlockTransactionCountByHash": _get_tx_count_by_number,
    "eth_getTransactionByBlockNumberAndIndex": _get_tx_by_block_and_index,
    "eth_getTransactionByBlockHashAndIndex": _get_tx_by_block_and_index,
    "eth_getBalance": _get_balance,
    "eth_getTransactionCount": _get_transaction_count,
    "eth_getCode": _get_code,
    "eth_getStorageAt": _get_storage_at,
    "eth_call": _eth_call,
    "eth_estimateGas": _estimate_gas,
    "eth_gasPrice": _gas_price,
    "eth_maxPriorityFeePerGas": _constant(hex(PRIORITY_FEE)),
    "eth_blobBaseFee": _constant("0x1"),
    "eth_feeHistory": _fee_history,
    "eth_getLogs": _get_logs,
    "eth_getTransactionByHash": _get_transaction_by_hash,
    "eth_getTransactionReceipt": _get_transaction_receipt,
    "eth_sendRawTransaction": _send_raw_transaction,
    "eth_newFilter": _new_filter,
    "eth_newBlockFilter": _new_block_filter,
    "eth_newPendingTransactionFilter": _new_pending_filter,
    "eth_getFilterChanges": _get_filter_changes,
    "eth_getFilterLogs": _get_filter_logs,
    "eth_uninstallFilter": _uninstall_filter,
}

#: Every method the simulated node implements (before ``unsupported_methods``).
SUPPORTED_METHODS = frozenset(_HANDLERS)
