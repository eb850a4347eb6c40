"""Error classification: upstream errors and HTTP statuses mapped to categories and buckets.

The category of a failed attempt decides everything that follows (reference §2.5, §5):

=================  ==================================  =========================
bucket             categories                          pipeline / breaker
=================  ==================================  =========================
DETERMINISTIC      invalid_params, invalid_request,    returned to the client
                   parse_error, execution_revert,      unchanged; no penalty
                   user_error, client_error,
                   unclassified_server_error
QUOTA              rate_limit                          fail over; no penalty;
                                                       rate-limit expiry noted
CAPABILITY         block_not_available,                fail over; no penalty
                   capability_violation,
                   requires_archival, method_not_found,
                   method_error
PROVIDER_FAILURE   server_error, network_error,        fail over if replay-safe;
                   timeout, internal_error,            breaker failure
                   provider_error, auth_error,
                   chain_error, unknown_error,
                   protocol_error
=================  ==================================  =========================

Decision (reference §4, §14.2): the reference runs its breakers in "shared mode", where
``timeout`` and ``auth_error`` are exempt from the breaker. Lasso's breakers are per node
and not shared, so both penalize: two consecutive timeouts (the per-category threshold) or
three auth failures open the circuit. ``method_error`` (EIP-1193 4200, "unsupported
method") is in the reference's penalized set but also in its capability bucket; it follows
the bucket here and does not penalize, so :func:`penalizes_breaker` is exactly
``bucket_of(c) is Bucket.PROVIDER_FAILURE``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC
from email.utils import parsedate_to_datetime
from enum import Enum, StrEnum
from typing import TYPE_CHECKING

from .logs_limits import is_logs_limit

if TYPE_CHECKING:  # the kernel needs no config code at runtime: rules are read by attribute
    from lasso.config import ErrorRule


class Category(StrEnum):
    """Error categories of reference §5.1; the values are the wire/metric names."""

    RATE_LIMIT = "rate_limit"
    AUTH_ERROR = "auth_error"
    SERVER_ERROR = "server_error"
    INVALID_PARAMS = "invalid_params"
    EXECUTION_REVERT = "execution_revert"
    BLOCK_NOT_AVAILABLE = "block_not_available"
    CAPABILITY_VIOLATION = "capability_violation"
    REQUIRES_ARCHIVAL = "requires_archival"
    METHOD_NOT_FOUND = "method_not_found"
    PARSE_ERROR = "parse_error"
    INVALID_REQUEST = "invalid_request"
    INTERNAL_ERROR = "internal_error"
    NETWORK_ERROR = "network_error"
    TIMEOUT = "timeout"
    CLIENT_ERROR = "client_error"
    USER_ERROR = "user_error"
    METHOD_ERROR = "method_error"
    CHAIN_ERROR = "chain_error"
    PROTOCOL_ERROR = "protocol_error"
    UNCLASSIFIED_SERVER_ERROR = "unclassified_server_error"
    UNKNOWN_ERROR = "unknown_error"
    # Infrastructure-level unavailability (no channels, pool errors); never produced by
    # the classifiers below, but reported by the pipeline and penalized like the others.
    PROVIDER_ERROR = "provider_error"


_CATEGORY_BY_VALUE: dict[str, Category] = {c.value: c for c in Category}


class Bucket(Enum):
    """What the pipeline does with a failed attempt (reference §2.5)."""

    DETERMINISTIC = "deterministic"
    QUOTA = "quota"
    CAPABILITY = "capability"
    PROVIDER_FAILURE = "provider_failure"


_C = Category

_BUCKETS: dict[Category, Bucket] = {c: Bucket.DETERMINISTIC for c in Category}
_BUCKETS[_C.RATE_LIMIT] = Bucket.QUOTA
for _c in (
    _C.BLOCK_NOT_AVAILABLE,
    _C.CAPABILITY_VIOLATION,
    _C.REQUIRES_ARCHIVAL,
    _C.METHOD_NOT_FOUND,
    _C.METHOD_ERROR,
):
    _BUCKETS[_c] = Bucket.CAPABILITY
for _c in (
    _C.SERVER_ERROR,
    _C.NETWORK_ERROR,
    _C.TIMEOUT,
    _C.INTERNAL_ERROR,
    _C.PROVIDER_ERROR,
    _C.AUTH_ERROR,
    _C.CHAIN_ERROR,
    _C.UNKNOWN_ERROR,
    _C.PROTOCOL_ERROR,
):
    _BUCKETS[_c] = Bucket.PROVIDER_FAILURE
del _c

_PENALIZED: frozenset[str] = frozenset(
    c.value for c, b in _BUCKETS.items() if b is Bucket.PROVIDER_FAILURE
)


def bucket_of(category: Category) -> Bucket:
    """Return the pipeline bucket of ``category`` (see the module table)."""
    return _BUCKETS[category]


def penalizes_breaker(category: str) -> bool:
    """Return whether a failure of ``category`` counts against the circuit breaker.

    Accepts a plain string so transports can pass their own outcome names; anything that
    is not a provider-failure category (including unknown strings) does not penalize.
    """
    return category in _PENALIZED


# --- client-facing codes (reference §5.3) ----------------------------------------------

_CLIENT_CODES: dict[Category, int] = {
    _C.TIMEOUT: -32007,
    _C.NETWORK_ERROR: -32004,
    _C.RATE_LIMIT: -32005,
    _C.SERVER_ERROR: -32002,
    _C.CLIENT_ERROR: -32003,
    _C.PARSE_ERROR: -32700,
    _C.INVALID_REQUEST: -32600,
    _C.METHOD_NOT_FOUND: -32601,
    _C.INVALID_PARAMS: -32602,
    _C.INTERNAL_ERROR: -32603,
}


def client_error_code(category: Category) -> int:
    """Return the JSON-RPC code a client sees for a *transport* outcome of ``category``.

    Timeout ``-32007``, network ``-32004``, rate limit ``-32005``, server ``-32002``; the
    standard codes map back to themselves, anything else is ``-32000``. Upstream
    application errors keep the provider's own code and never go through this.
    """
    return _CLIENT_CODES.get(category, -32000)


# --- message patterns (reference §5.1 step 3, in order) --------------------------------
# Every phrase the reference lists, completed from its source where the summary elides.
# Phrases marked "Lasso" are additions for real provider messages that would otherwise
# land in the wrong bucket.

_RATE_LIMIT = (
    "rate limit",
    "too many requests",
    "throttled",
    "quota exceeded",
    "reached your quota",
    "monthly quota",
    "daily quota",
    "monthly capacity limit",
    "monthly free request limit",
    "usage limit for your current plan",
    "chain is not available on free plan",
    "capacity exceeded",
    "request count exceeded",
    "maximum requests",
    "credits quota",
    "requests per second",
    "compute units",
    "cannot fulfill request",
    "request units",
    "timeout on the free tier",
    "request limit reached",  # Lasso: QuickNode "100/second request limit reached"
)
_AUTH = (
    "unauthorized",
    "authentication",
    "authenticate",
    "api key",
    "key is deactivated",
    "forbidden",
    "access denied",
    "permission denied",
)
_TRANSIENT = (
    "please retry",
    "temporary internal error",
    "try again",
    "service temporarily unavailable",
    "temporarily unavailable",
    "request timeout",
    "backend timeout",
    "resource unavailable",
    "service overloaded",
)
_INVALID_PARAMS = (
    "invalid argument",
    "cannot unmarshal",
    "unable to decode",
    "invalid hex",
    "odd length hex",
    "hex string without 0x prefix",
    "invalid address",
    "wrong number of arguments",
    "missing value for required argument",
    "abi: cannot marshal",
)
_EXECUTION_REVERT = (
    "execution reverted",
    "gas required exceeds allowance",
    "out of gas",
    "intrinsic gas too low",
    "gas limit below intrinsic gas",
    "gas too low",
    "gas limit reached",
    "gas uint64 overflow",
    "insufficient gas",
    "exceeds block gas limit",
    "base fee exceeds gas limit",
    "transaction gas limit is too low",
    "nonce too low",
    "nonce too high",
    "insufficient funds",
    "already known",
    "replacement transaction underpriced",
    "transaction underpriced",
    "max fee per gas less than block base fee",
    "fee cap less than block base fee",
    "max priority fee per gas higher than max fee per gas",
    "max fee per blob gas",
    "blob base fee",
    "too many blobs",
    "invalid sender",
    "invalid opcode",
    "stack underflow",
    "stack overflow",
    "invalid jump destination",
    "revert",
    "vm exception",
    "evm error",
    "contract creation code storage out of gas",
    "max initcode size exceeded",
    "upfront cost exceeds",
    "does not match sender account nonce",
    "transaction type not supported",
)
# "This method does not exist here", in the wordings of real nodes and providers. Tried
# before the code-only codes: Alchemy answers an unsupported method with -32600.
_METHOD_NOT_FOUND = (
    "method not found",  # anvil, reth, besu, cloudflare (-32601, or -32000 elsewhere)
    "does not exist/is not available",  # geth, erigon, infura
    "unsupported method",  # alchemy (-32600), dRPC
    "method not supported",
    "method is not supported",
    "no such method",
    "unknown method",
    "method does not exist",
)
_METHOD_NOT_FOUND_EXTRA = (
    # nethermind "The method 'eth_foo' is not supported.", ganache "Method shh_x not supported."
    r"method ['\"`]?[\w.]+['\"`]? (?:is )?not supported"
)
# anvil over WebSocket answers -32602 "data did not match any variant of untagged enum
# EthRpcCall" both for an unknown method and for bad params of a known one; the caller
# says which (``known_method``).
_UNKNOWN_CALL = "did not match any variant of untagged enum"

_BLOCK_NOT_AVAILABLE = (
    "header not found",
    "block not found",
    "unknown block number",
    "block is out of range",
)
_CAPABILITY = (
    # result size
    "query returned more than",
    "result set too large",
    "result limit exceeded",
    "too many results",
    "too many logs",
    "response size exceeded",  # Lasso: Alchemy "Log response size exceeded"
    # addresses and block ranges
    "unsupported subscription",
    "free tier",
    "maximum number of addresses",
    "max addresses",
    "too many addresses",
    "specify less number of addresses",
    "specify an address",
    "block range exceeded",
    "max block range",
    "block range too large",
    "range too large",
    "range not supported",
    "this range of parameters is not supported",
    "exceeds maximum block range",
    "invalid block range",
    "max is 1k blocks",
    "range is too large",
    "blocks are not supported",
    "ranges over",
    "is limited to",
    # archival and historical state
    "archive node required",
    "archive requests require a personal token",
    "requires archival",
    "archival data not available",
    "archival not available",
    "historical data not supported",
    "pruned",
    "missing trie node",
    # features
    "tracing not enabled",
    "debug not available",
    "trace not supported",
    "method not available",
    "method unavailable",
    "not supported",
    "not available",
    "not enabled",
    "does not support",
    # parameter limits
    "unsupported parameter range",
    "unsupported param range",
    "limit exceeded for this method",
    "exceeds limit",
    "exceeds maximum",
    "limit reached",
    # plans and tiers
    "dedicated full node",
    "remove restrictions",
    "order a dedicated",
    "upgrade",
    "upgrade your plan",
    "upgrade your tier",
    "premium plan",
    "paid plan",
    "paid tier",
    "feature not enabled",
    "node is syncing",
    "state not available",
)


def _any_of(phrases: Sequence[str], extra: str = "") -> re.Pattern[str]:
    alternatives = [re.escape(p) for p in phrases]
    if extra:
        alternatives.append(extra)
    return re.compile("|".join(alternatives))


# One compiled alternation per category, searched in this order: the lowered message is
# scanned once per category instead of once per phrase (this runs on every error).
_MESSAGE_RULES: tuple[tuple[Category, re.Pattern[str]], ...] = (
    (_C.RATE_LIMIT, _any_of(_RATE_LIMIT)),
    (_C.AUTH_ERROR, _any_of(_AUTH)),
    (_C.SERVER_ERROR, _any_of(_TRANSIENT)),
    (_C.INVALID_PARAMS, _any_of(_INVALID_PARAMS)),
    (_C.EXECUTION_REVERT, _any_of(_EXECUTION_REVERT)),
    # "unknown block" but not "unknown blockchain"
    (_C.BLOCK_NOT_AVAILABLE, _any_of(_BLOCK_NOT_AVAILABLE, r"unknown block(?!chain)")),
    (_C.CAPABILITY_VIOLATION, _any_of(_CAPABILITY)),
)

_METHOD_NOT_FOUND_RE = _any_of(_METHOD_NOT_FOUND, _METHOD_NOT_FOUND_EXTRA)

_MAX_MESSAGE_CHARS = 4096  # bound the work an enormous upstream message can cause

# --- codes (reference §5.1 steps 2 and 4) ------------------------------------------------

_CODE_ONLY: dict[int, Category] = {
    -32700: _C.PARSE_ERROR,
    -32600: _C.INVALID_REQUEST,
    -32601: _C.METHOD_NOT_FOUND,
}

_CODE_TABLE: dict[int, Category] = {
    3: _C.EXECUTION_REVERT,
    -32602: _C.INVALID_PARAMS,
    -32603: _C.INTERNAL_ERROR,
    # Lasso custom codes
    -32005: _C.RATE_LIMIT,
    -32004: _C.NETWORK_ERROR,
    -32003: _C.CLIENT_ERROR,
    -32002: _C.SERVER_ERROR,
    # EIP-1193
    4001: _C.USER_ERROR,
    4100: _C.AUTH_ERROR,
    4200: _C.METHOD_ERROR,
    4900: _C.CHAIN_ERROR,
    4901: _C.NETWORK_ERROR,
    # provider-specific
    14: _C.SERVER_ERROR,  # dRPC: gRPC cancelled
    23: _C.SERVER_ERROR,  # dRPC: unsupported subscription
    26: _C.BLOCK_NOT_AVAILABLE,
    30: _C.RATE_LIMIT,
    35: _C.CAPABILITY_VIOLATION,
    -31001: _C.SERVER_ERROR,  # Pocket
    -31002: _C.SERVER_ERROR,  # Pocket
    -32010: _C.EXECUTION_REVERT,
    -32015: _C.EXECUTION_REVERT,
    -32016: _C.EXECUTION_REVERT,
    -32046: _C.RATE_LIMIT,
    -32701: _C.CAPABILITY_VIOLATION,
    # plain -32000: an opaque application error, returned to the client as is
    -32000: _C.UNCLASSIFIED_SERVER_ERROR,
    # HTTP statuses used as JSON-RPC codes
    429: _C.RATE_LIMIT,
}

_REVERT_SELECTORS = ("0x08c379a0", "0x4e487b71")  # Error(string), Panic(uint256)


def _is_revert_data(data: object) -> bool:
    if isinstance(data, dict):
        data = data.get("data")
    return isinstance(data, str) and data[:10].lower() in _REVERT_SELECTORS


def _classify_code(code: int) -> Category:
    category = _CODE_TABLE.get(code)
    if category is not None:
        return category
    if -32099 <= code <= -32001:
        return _C.SERVER_ERROR
    # Codes in the HTTP status range. The reference says "≥ 500"; we read it as the HTTP
    # range so an arbitrary large provider code stays ``unknown_error`` (both penalize).
    if 500 <= code <= 599:
        return _C.SERVER_ERROR
    if 400 <= code <= 499:
        return _C.CLIENT_ERROR
    return _C.UNKNOWN_ERROR


def _rule_matches(rule: ErrorRule, code: int, lowered: str) -> bool:
    if rule.code is None and not rule.message_contains:
        return False  # config validation rejects these; never let one match everything
    if rule.code is not None and rule.code != code:
        return False
    if rule.message_contains:
        return any(needle.lower() in lowered for needle in rule.message_contains)
    return True


def classify_rpc_error(
    code: int,
    message: str | None,
    data: object = None,
    rules: Sequence[ErrorRule] = (),
    *,
    known_method: bool = True,
) -> Category:
    """Classify an upstream JSON-RPC error object (EIP-1474 codes, provider messages).

    Args:
        code: the error's ``code``.
        message: the error's ``message`` (``None`` is treated as empty).
        data: the error's ``data``, if any: a revert payload (``"0x08c379a0…"``) or an
            object whose ``data`` field is one makes the error an ``execution_revert``.
        rules: the provider's ``capabilities.error_rules``, tried first, top to bottom;
            a rule with both ``code`` and ``message_contains`` needs both, and any of its
            lower-cased phrases matches. Rules naming an unknown category are skipped.
        known_method: whether the request's method is in the method registry. anvil's
            WebSocket wording for "no such call" is also its wording for bad params; it
            means ``method_not_found`` only for a method the registry does not know.

    Returns:
        The category; see :func:`bucket_of` for what the caller does next. Never raises.
    """
    lowered = message[:_MAX_MESSAGE_CHARS].lower() if isinstance(message, str) else ""
    for rule in rules:
        if _rule_matches(rule, code, lowered):
            category = _CATEGORY_BY_VALUE.get(rule.category)
            if category is not None:
                return category
    if _is_revert_data(data):
        return _C.EXECUTION_REVERT
    # eth_getLogs range and result-size limits (issue 13, table in .logs_limits): before
    # the codes, because Alchemy and Ankr send them as -32600 and Infura as -32602.
    if lowered and is_logs_limit(lowered):
        return _C.CAPABILITY_VIOLATION
    if lowered and (
        _METHOD_NOT_FOUND_RE.search(lowered) or (not known_method and _UNKNOWN_CALL in lowered)
    ):
        return _C.METHOD_NOT_FOUND
    category = _CODE_ONLY.get(code)
    if category is not None:
        return category
    if lowered:
        for category, pattern in _MESSAGE_RULES:
            if pattern.search(lowered):
                return category
    return _classify_code(code)


# Quota wording in an HTTP error body (not a JSON-RPC error): a 403 saying any of these is
# a plan or quota limit, not bad credentials; a 5xx saying the narrower ones is a gateway
# shedding load. Bodies are searched case-insensitively, up to _MAX_MESSAGE_CHARS bytes.
_QUOTA_BODY = re.compile(rb"quota|limit|too many|throttl", re.IGNORECASE)
_OVERLOAD_BODY = re.compile(rb"rate.?limit|too many requests|throttl", re.IGNORECASE)


def is_quota_body(status: int, body: bytes | bytearray) -> bool:
    """Return whether an HTTP error ``body`` of ``status`` reads as a rate or quota limit.

    403 bodies mentioning quota, limit, too many or throttling count (providers answer
    "403 Forbidden: daily quota exceeded"); 5xx bodies count only when they say rate limit,
    too many requests or throttled. Any other status never does.
    """
    if not body:
        return False
    if status == 403:
        return _QUOTA_BODY.search(body, 0, _MAX_MESSAGE_CHARS) is not None
    if status >= 500:
        return _OVERLOAD_BODY.search(body, 0, _MAX_MESSAGE_CHARS) is not None
    return False


def classify_http_status(status: int, body: bytes | bytearray = b"") -> Category:
    """Classify a non-2xx upstream HTTP status whose body is not a JSON-RPC response.

    429 is ``rate_limit``, and so are a 403 or 5xx whose ``body`` reads as a quota or
    rate limit (:func:`is_quota_body`); otherwise 401 and 403 are ``auth_error``, and every
    other status, 5xx and 4xx alike, is ``server_error`` ("provider infrastructure error"):
    the provider, not the caller, failed to answer. A 4xx carrying a JSON-RPC error body
    should be classified with :func:`classify_rpc_error` instead.
    """
    if status == 429 or is_quota_body(status, body):
        return _C.RATE_LIMIT
    if status in (401, 403):
        return _C.AUTH_ERROR
    return _C.SERVER_ERROR


# --- retry-after -------------------------------------------------------------------------

MAX_RETRY_AFTER_S = 3600.0
"""The longest wait a provider's retry-after hint is believed for (one hour). Every reading
of one (header or error data) is clamped to ``0..MAX_RETRY_AFTER_S``: a provider answering
``Retry-After: 1e308`` is rate-limited for an hour, not for ever."""

_RETRY_AFTER_KEYS = (
    ("retry_after_ms", 0.001),
    ("retryAfterMs", 0.001),
    ("retry_after", 1.0),
    ("retryAfter", 1.0),
)


def _seconds(value: object, scale: float) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return None
    return min(float(value) * scale, MAX_RETRY_AFTER_S)


def parse_retry_after(value: bytes | str | None, now_wall: float) -> float | None:
    """Return the seconds an HTTP ``Retry-After`` header asks to wait (RFC 9110 §10.2.3).

    Args:
        value: the header value: delay-seconds (``"120"``; a decimal is tolerated) or an
            HTTP-date (``"Wed, 21 Oct 2015 07:28:00 GMT"``).
        now_wall: the current wall-clock time (Unix seconds), to turn a date into a delay.

    Returns:
        A delay in ``0..MAX_RETRY_AFTER_S`` (a date in the past gives 0.0, one beyond the
        hour gives the hour), or ``None`` when the value is missing or unparseable.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    text = value.strip()
    if not text:
        return None
    seconds = _seconds(text, 1.0)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(text)
        if when.tzinfo is None:  # RFC 850 / asctime forms carry no zone: they mean GMT
            when = when.replace(tzinfo=UTC)
        at = when.timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return min(max(0.0, at - now_wall), MAX_RETRY_AFTER_S)


def retry_after_from_error(data: object) -> float | None:
    """Return the retry-after hint of an error's ``data`` object, in seconds.

    Reads ``retry_after_ms`` / ``retryAfterMs`` (milliseconds), then ``retry_after`` /
    ``retryAfter`` (seconds, as in the HTTP header), clamped to ``MAX_RETRY_AFTER_S``.
    Returns ``None`` when there is no usable (finite, non-negative, numeric) value.
    """
    if not isinstance(data, dict):
        return None
    for key, scale in _RETRY_AFTER_KEYS:
        if key in data:
            seconds = _seconds(data[key], scale)
            if seconds is not None:
                return seconds
    return None
