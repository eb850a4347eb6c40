"""Error classification: provider fixtures, precedence, buckets, breaker penalty."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lasso.config import ErrorRule
from lasso.kernel import classify
from lasso.kernel.classify import (
    Bucket,
    Category,
    bucket_of,
    classify_http_status,
    classify_rpc_error,
    client_error_code,
    penalizes_breaker,
    retry_after_from_error,
)

C = Category

REVERT_DATA = (
    "0x08c379a0"
    "0000000000000000000000000000000000000000000000000000000000000020"
    "0000000000000000000000000000000000000000000000000000000000000006"
    "6e6f706521000000000000000000000000000000000000000000000000000000"
)
PANIC_DATA = "0x4E487B71" + "00" * 31 + "11"

# (provider, code, message, data, expected): messages as the providers send them.
PROVIDER_FIXTURES = [
    (
        "alchemy",
        429,
        "Your app has exceeded its compute units per second capacity. If you have retries "
        "enabled, you can safely ignore this message. If not, check out "
        "https://docs.alchemy.com/reference/throughput",
        None,
        C.RATE_LIMIT,
    ),
    ("alchemy", -32000, "Must be authenticated!", None, C.AUTH_ERROR),
    (
        "alchemy",
        -32602,
        "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block "
        "range and no limit on the response size, or you can request any block range with a "
        "cap of 10K logs in the response.",
        None,
        C.CAPABILITY_VIOLATION,
    ),
    ("infura", -32005, "daily request count exceeded, request rate limited", None, C.RATE_LIMIT),
    (
        "infura",
        -32005,
        "query returned more than 10000 results. Try with this block range [0x10B0A1D, 0x10B0C4E].",
        None,
        C.CAPABILITY_VIOLATION,
    ),
    ("infura", -32005, "project ID request rate exceeded", None, C.RATE_LIMIT),
    (
        "quicknode",
        -32007,
        "100/second request limit reached - reduce calls per second or upgrade your account "
        "at quicknode.com",
        None,
        C.RATE_LIMIT,
    ),
    (
        "drpc",
        35,
        "Request timeout on the free tier, please upgrade your tier to the paid one",
        None,
        C.RATE_LIMIT,
    ),
    ("drpc", 30, "the node is busy, slow down", None, C.RATE_LIMIT),
    ("drpc", 14, "context canceled", None, C.SERVER_ERROR),
    ("drpc", 26, "the requested block is ahead of the network", None, C.BLOCK_NOT_AVAILABLE),
    ("drpc", 35, "this thing is off for you", None, C.CAPABILITY_VIOLATION),
    (
        "publicnode",
        -32701,
        "Please specify an address in your request or, to remove restrictions, order a "
        "dedicated full node here: https://www.allnodes.com/eth/host",
        None,
        C.CAPABILITY_VIOLATION,
    ),
    (
        "publicnode",
        -32000,
        "this range of parameters is not supported",
        None,
        C.CAPABILITY_VIOLATION,
    ),
    ("geth", -32000, "header not found", None, C.BLOCK_NOT_AVAILABLE),
    ("erigon", -32000, "block not found: 0x1234", None, C.BLOCK_NOT_AVAILABLE),
    ("nethermind", -32001, "unknown block", None, C.BLOCK_NOT_AVAILABLE),
    ("nethermind", -32001, "unknown blockchain id", None, C.SERVER_ERROR),
    (
        "geth",
        -32000,
        "missing trie node 3d5c1b41c2ad9cc6f3bbdb3adf2bcf95d2e6c7dbfa01bd4a96d3e4a2a5a1aa6f "
        "(path ) state 0x3d5c… is not available",
        None,
        C.CAPABILITY_VIOLATION,
    ),
    ("geth", 3, "execution reverted: nope!", REVERT_DATA, C.EXECUTION_REVERT),
    ("geth", 3, "execution reverted", PANIC_DATA, C.EXECUTION_REVERT),
    ("geth", 3, "execution reverted", None, C.EXECUTION_REVERT),
    ("anvil", -32003, "execution reverted: custom", {"data": REVERT_DATA}, C.EXECUTION_REVERT),
    ("geth", -32000, "nonce too low: next nonce 5, tx nonce 4", None, C.EXECUTION_REVERT),
    (
        "geth",
        -32000,
        "insufficient funds for gas * price + value: balance 0, tx cost 21000",
        None,
        C.EXECUTION_REVERT,
    ),
    ("geth", -32000, "already known", None, C.EXECUTION_REVERT),
    ("geth", -32602, "invalid argument 0: hex string without 0x prefix", None, C.INVALID_PARAMS),
    ("geth", -32602, "too many arguments, want at most 2", None, C.INVALID_PARAMS),
    (
        "geth",
        -32601,
        "the method eth_foo does not exist/is not available",
        None,
        C.METHOD_NOT_FOUND,
    ),
    ("geth", -32603, "internal error", None, C.INTERNAL_ERROR),
    ("geth", -32000, "some opaque failure", None, C.UNCLASSIFIED_SERVER_ERROR),
    ("ankr", -32000, "Unauthorized: API key is required", None, C.AUTH_ERROR),
    ("llamarpc", -32000, "service temporarily unavailable", None, C.SERVER_ERROR),
    ("pocket", -31002, "relay failed", None, C.SERVER_ERROR),
    ("chainstack", -32046, "cannot fulfill", None, C.RATE_LIMIT),
    ("1rpc", -32000, "eth_getLogs is limited to a 1000 blocks range", None, C.CAPABILITY_VIOLATION),
    ("node", -32000, "tracing not enabled on this node", None, C.CAPABILITY_VIOLATION),
]


@pytest.mark.parametrize(
    ("code", "message", "data", "expected"),
    [f[1:] for f in PROVIDER_FIXTURES],
    ids=[f"{f[0]}-{f[1]}-{i}" for i, f in enumerate(PROVIDER_FIXTURES)],
)
def test_provider_fixtures(code: int, message: str, data: object, expected: Category) -> None:
    """Real provider error objects land in the expected category."""
    assert classify_rpc_error(code, message, data) is expected


# --- precedence ------------------------------------------------------------------------


def test_revert_data_beats_everything_in_the_defaults() -> None:
    """A revert payload wins over code-only codes and messages."""
    assert classify_rpc_error(-32601, "rate limit", REVERT_DATA) is C.EXECUTION_REVERT
    assert classify_rpc_error(-32000, "too many requests", PANIC_DATA) is C.EXECUTION_REVERT


@pytest.mark.parametrize(
    "data",
    ["0x08c379", "0xdeadbeef00", 1234, None, {"data": 7}, {"message": REVERT_DATA}, [REVERT_DATA]],
)
def test_non_revert_data_is_ignored(data: object) -> None:
    """Short, foreign or misplaced data does not make a revert."""
    assert classify_rpc_error(-32000, "", data) is C.UNCLASSIFIED_SERVER_ERROR


@pytest.mark.parametrize(
    ("code", "expected"),
    [(-32700, C.PARSE_ERROR), (-32600, C.INVALID_REQUEST), (-32601, C.METHOD_NOT_FOUND)],
)
def test_code_only_codes_ignore_the_message(code: int, expected: Category) -> None:
    """-32700, -32600 and -32601 are classified by code alone."""
    assert classify_rpc_error(code, "rate limit exceeded, header not found", None) is expected


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # Each pair of phrases comes from two categories; the earlier category wins.
        ("rate limit: unauthorized", C.RATE_LIMIT),
        ("access denied, please retry", C.AUTH_ERROR),
        ("please retry: invalid argument", C.SERVER_ERROR),
        ("invalid argument: execution reverted", C.INVALID_PARAMS),
        ("execution reverted: header not found", C.EXECUTION_REVERT),
        ("header not found, not supported", C.BLOCK_NOT_AVAILABLE),
        ("not supported", C.CAPABILITY_VIOLATION),
    ],
)
def test_message_categories_in_reference_order(message: str, expected: Category) -> None:
    """Message patterns are tried in reference §5.1 order: first category wins."""
    assert classify_rpc_error(-32000, message, None) is expected


def test_message_match_is_case_insensitive() -> None:
    """Messages are lower-cased before matching."""
    assert classify_rpc_error(-32000, "HEADER NOT FOUND", None) is C.BLOCK_NOT_AVAILABLE
    assert classify_rpc_error(-32000, "Too Many Requests", None) is C.RATE_LIMIT


def test_messages_beat_codes() -> None:
    """A matching message outranks the code table."""
    assert classify_rpc_error(-32602, "header not found", None) is C.BLOCK_NOT_AVAILABLE
    assert classify_rpc_error(3, "rate limited", None) is C.RATE_LIMIT


def test_missing_or_huge_message() -> None:
    """A None message falls through to the code; only a bounded prefix is scanned."""
    assert classify_rpc_error(-32005, None, None) is C.RATE_LIMIT
    assert classify_rpc_error(-32000, "", None) is C.UNCLASSIFIED_SERVER_ERROR
    padded = "x" * 5000 + "header not found"
    assert classify_rpc_error(-32000, padded, None) is C.UNCLASSIFIED_SERVER_ERROR


def test_every_listed_phrase_matches_its_category() -> None:
    """Each phrase alone classifies to a category no later than its own list's."""
    order = [category for category, _ in classify._MESSAGE_RULES]
    lists = [
        classify._RATE_LIMIT,
        classify._AUTH,
        classify._TRANSIENT,
        classify._INVALID_PARAMS,
        classify._EXECUTION_REVERT,
        classify._BLOCK_NOT_AVAILABLE,
        classify._CAPABILITY,
    ]
    for index, phrases in enumerate(lists):
        for phrase in phrases:
            got = classify_rpc_error(-32000, f"Error: {phrase.upper()}!", None)
            assert got in order[: index + 1], (phrase, got)


def test_reference_phrases_are_all_present() -> None:
    """Every phrase reference §5.1 spells out is in the matching list."""
    assert {
        "rate limit",
        "too many requests",
        "throttled",
        "quota exceeded",
        "reached your quota",
        "monthly quota",
        "daily quota",
        "capacity exceeded",
        "request count exceeded",
        "maximum requests",
        "credits quota",
        "requests per second",
        "compute units",
        "cannot fulfill request",
        "request units",
        "timeout on the free tier",
    } <= set(classify._RATE_LIMIT)
    assert {
        "unauthorized",
        "authentication",
        "authenticate",
        "api key",
        "forbidden",
        "access denied",
        "permission denied",
    } <= set(classify._AUTH)
    assert {
        "query returned more than",
        "result set too large",
        "too many logs",
        "block range too large",
        "max block range",
        "range too large",
        "too many addresses",
        "archive node required",
        "pruned",
        "missing trie node",
        "tracing not enabled",
        "not supported",
        "not available",
        "upgrade your plan",
        "paid tier",
        "node is syncing",
        "state not available",
    } <= set(classify._CAPABILITY)


# --- code table -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (3, C.EXECUTION_REVERT),
        (-32602, C.INVALID_PARAMS),
        (-32603, C.INTERNAL_ERROR),
        (-32005, C.RATE_LIMIT),
        (-32004, C.NETWORK_ERROR),
        (-32003, C.CLIENT_ERROR),
        (-32002, C.SERVER_ERROR),
        (4001, C.USER_ERROR),
        (4100, C.AUTH_ERROR),
        (4200, C.METHOD_ERROR),
        (4900, C.CHAIN_ERROR),
        (4901, C.NETWORK_ERROR),
        (14, C.SERVER_ERROR),
        (23, C.SERVER_ERROR),
        (26, C.BLOCK_NOT_AVAILABLE),
        (30, C.RATE_LIMIT),
        (35, C.CAPABILITY_VIOLATION),
        (-31001, C.SERVER_ERROR),
        (-31002, C.SERVER_ERROR),
        (-32010, C.EXECUTION_REVERT),
        (-32015, C.EXECUTION_REVERT),
        (-32016, C.EXECUTION_REVERT),
        (-32046, C.RATE_LIMIT),
        (-32701, C.CAPABILITY_VIOLATION),
        (-32000, C.UNCLASSIFIED_SERVER_ERROR),
        (-32001, C.SERVER_ERROR),
        (-32099, C.SERVER_ERROR),
        (-32100, C.UNKNOWN_ERROR),
        (429, C.RATE_LIMIT),
        (500, C.SERVER_ERROR),
        (503, C.SERVER_ERROR),
        (599, C.SERVER_ERROR),
        (400, C.CLIENT_ERROR),
        (404, C.CLIENT_ERROR),
        (499, C.CLIENT_ERROR),
        (0, C.UNKNOWN_ERROR),
        (1, C.UNKNOWN_ERROR),
        (600, C.UNKNOWN_ERROR),
        (123456, C.UNKNOWN_ERROR),
    ],
)
def test_code_table(code: int, expected: Category) -> None:
    """With no matching message, the code table decides."""
    assert classify_rpc_error(code, "no known phrase here", None) is expected


# --- provider rules -------------------------------------------------------------------


def test_rules_take_precedence_over_defaults() -> None:
    """A provider rule wins over revert data, code-only codes and messages."""
    rules = [ErrorRule(code=-32000, category="requires_archival")]
    assert classify_rpc_error(-32000, "header not found", REVERT_DATA, rules) is (
        C.REQUIRES_ARCHIVAL
    )
    rules = [ErrorRule(code=-32601, category="capability_violation")]
    assert classify_rpc_error(-32601, "whatever", None, rules) is C.CAPABILITY_VIOLATION


def test_rules_first_match_wins_top_to_bottom() -> None:
    """The first matching rule decides, even when a later one matches too."""
    rules = (
        ErrorRule(code=-32000, message_contains=("timeout",), category="server_error"),
        ErrorRule(code=-32000, category="rate_limit"),
        ErrorRule(message_contains=("timeout",), category="network_error"),
    )
    assert classify_rpc_error(-32000, "Backend TIMEOUT", None, rules) is C.SERVER_ERROR
    assert classify_rpc_error(-32000, "other", None, rules) is C.RATE_LIMIT
    assert classify_rpc_error(-32001, "timeout", None, rules) is C.NETWORK_ERROR


def test_rule_with_code_and_message_needs_both() -> None:
    """code and message_contains together must both match."""
    rules = [ErrorRule(code=30, message_contains=("archive",), category="requires_archival")]
    assert classify_rpc_error(30, "archive data pruned", None, rules) is C.REQUIRES_ARCHIVAL
    assert classify_rpc_error(30, "slow down", None, rules) is C.RATE_LIMIT  # default table
    assert classify_rpc_error(-32000, "archive", None, rules) is C.UNCLASSIFIED_SERVER_ERROR


def test_rule_message_any_phrase_matches() -> None:
    """Any one phrase of message_contains is enough; matching is case-insensitive."""
    rules = [ErrorRule(message_contains=("foo", "Bar baz"), category="method_error")]
    assert classify_rpc_error(1, "xx BAR BAZ yy", None, rules) is C.METHOD_ERROR
    assert classify_rpc_error(1, "FOO", None, rules) is C.METHOD_ERROR
    assert classify_rpc_error(1, "qux", None, rules) is C.UNKNOWN_ERROR
    assert classify_rpc_error(1, None, None, rules) is C.UNKNOWN_ERROR


def test_empty_and_unknown_category_rules_are_skipped() -> None:
    """A rule with no condition never matches; one naming no category is passed over."""
    rules = [
        ErrorRule(category="rate_limit"),
        ErrorRule(code=-32000, category="no_such_category"),
        ErrorRule(code=-32000, category="auth_error"),
    ]
    assert classify_rpc_error(-32000, "x", None, rules) is C.AUTH_ERROR
    assert classify_rpc_error(-32001, "x", None, rules[:2]) is C.SERVER_ERROR


# --- HTTP statuses --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (429, C.RATE_LIMIT),
        (401, C.AUTH_ERROR),
        (403, C.AUTH_ERROR),
        (500, C.SERVER_ERROR),
        (502, C.SERVER_ERROR),
        (503, C.SERVER_ERROR),
        (504, C.SERVER_ERROR),
        (400, C.SERVER_ERROR),
        (404, C.SERVER_ERROR),
        (413, C.SERVER_ERROR),
        (301, C.SERVER_ERROR),
    ],
)
def test_http_status(status: int, expected: Category) -> None:
    """Statuses without a JSON-RPC body: 429 quota, 401/403 auth, the rest server_error."""
    assert classify_http_status(status) is expected


# --- buckets and breaker penalty ------------------------------------------------------

BUCKETS = {
    Bucket.QUOTA: {C.RATE_LIMIT},
    Bucket.CAPABILITY: {
        C.BLOCK_NOT_AVAILABLE,
        C.CAPABILITY_VIOLATION,
        C.REQUIRES_ARCHIVAL,
        C.METHOD_NOT_FOUND,
        C.METHOD_ERROR,
    },
    Bucket.PROVIDER_FAILURE: {
        C.SERVER_ERROR,
        C.NETWORK_ERROR,
        C.TIMEOUT,
        C.INTERNAL_ERROR,
        C.PROVIDER_ERROR,
        C.AUTH_ERROR,
        C.CHAIN_ERROR,
        C.UNKNOWN_ERROR,
        C.PROTOCOL_ERROR,
    },
    Bucket.DETERMINISTIC: {
        C.INVALID_PARAMS,
        C.INVALID_REQUEST,
        C.PARSE_ERROR,
        C.EXECUTION_REVERT,
        C.USER_ERROR,
        C.CLIENT_ERROR,
        C.UNCLASSIFIED_SERVER_ERROR,
    },
}


def test_buckets_partition_all_categories() -> None:
    """Every category is in exactly one bucket, as in reference §2.5."""
    listed = [c for cs in BUCKETS.values() for c in cs]
    assert sorted(listed) == sorted(Category)
    for bucket, categories in BUCKETS.items():
        for category in categories:
            assert bucket_of(category) is bucket


@pytest.mark.parametrize(
    "category",
    [
        "block_not_available",
        "capability_violation",
        "requires_archival",
        "rate_limit",
        "client_error",
        "execution_revert",
        "user_error",
        "invalid_request",
        "invalid_params",
        "parse_error",
        "method_not_found",
        "unclassified_server_error",
        "method_error",
        "not_a_category",
    ],
)
def test_categories_that_do_not_penalize(category: str) -> None:
    """Reference §5.1's no-penalty list (plus method_error and unknown names) is exempt."""
    assert not penalizes_breaker(category)


@pytest.mark.parametrize("category", sorted(BUCKETS[Bucket.PROVIDER_FAILURE]))
def test_provider_failures_penalize(category: Category) -> None:
    """Provider failures, including timeout and auth_error (not shared mode), penalize."""
    assert penalizes_breaker(category)
    assert penalizes_breaker(category.value)


def test_category_values_are_wire_names() -> None:
    """Category is a StrEnum whose values are the snake_case names."""
    assert Category("rate_limit") is C.RATE_LIMIT
    assert str(C.TIMEOUT) == "timeout"
    assert len(Category) == 22


@pytest.mark.parametrize(
    ("category", "code"),
    [
        (C.TIMEOUT, -32007),
        (C.NETWORK_ERROR, -32004),
        (C.RATE_LIMIT, -32005),
        (C.SERVER_ERROR, -32002),
        (C.CLIENT_ERROR, -32003),
        (C.PARSE_ERROR, -32700),
        (C.INVALID_REQUEST, -32600),
        (C.METHOD_NOT_FOUND, -32601),
        (C.INVALID_PARAMS, -32602),
        (C.INTERNAL_ERROR, -32603),
        (C.PROTOCOL_ERROR, -32000),
        (C.UNKNOWN_ERROR, -32000),
    ],
)
def test_client_error_code(category: Category, code: int) -> None:
    """Transport outcomes map to the client-facing codes of reference §5.3."""
    assert client_error_code(category) == code


@pytest.mark.parametrize(
    ("code", "message"),
    [(-32005, ""), (-32004, ""), (-32002, ""), (-32003, ""), (-32602, ""), (-32603, "")],
)
def test_client_codes_round_trip(code: int, message: str) -> None:
    """Our own client codes classify back to the category that produced them."""
    assert client_error_code(classify_rpc_error(code, message, None)) == code


# --- retry-after ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "seconds"),
    [
        ({"retry_after_ms": 1500}, 1.5),
        ({"retryAfterMs": 250}, 0.25),
        ({"retry_after": 3}, 3.0),
        ({"retryAfter": 2.5}, 2.5),
        ({"retryAfter": "7"}, 7.0),
        ({"retry_after_ms": 0}, 0.0),
        ({"retry_after_ms": "soon", "retry_after": 4}, 4.0),
        ({"retry_after_ms": -5, "retryAfter": 1}, 1.0),
        ({"retry_after_ms": True}, None),
        ({"retry_after": float("nan")}, None),
        ({"retry_after": float("inf")}, None),
        ({"retry_after": None}, None),
        ({"retry_after": [1]}, None),
        ({}, None),
        (None, None),
        ("retry_after_ms=5", None),
        ([{"retry_after_ms": 5}], None),
    ],
)
def test_retry_after_from_error(data: object, seconds: float | None) -> None:
    """Retry-after hints in error data are read in seconds; junk is ignored."""
    assert retry_after_from_error(data) == seconds


# --- never raises ---------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(code=st.integers(), message=st.one_of(st.none(), st.text()), data=JSON)
def test_classify_total(code: int, message: str | None, data: object) -> None:
    """Any code, message and data yield a Category and a bucket."""
    category = classify_rpc_error(code, message, data)
    assert isinstance(category, Category)
    assert isinstance(bucket_of(category), Bucket)
    seconds = retry_after_from_error(data)
    assert seconds is None or seconds >= 0


@given(status=st.integers(min_value=100, max_value=999))
def test_http_status_total(status: int) -> None:
    """Every status classifies to a provider-side category."""
    assert bucket_of(classify_http_status(status)) in (Bucket.QUOTA, Bucket.PROVIDER_FAILURE)


# --- method not found (issue 11) ------------------------------------------------------

METHOD_MISSING = [
    ("anvil/reth/besu", -32601, "Method not found"),
    ("geth/infura", -32601, "the method eth_foo does not exist/is not available"),
    ("alchemy", -32600, "Unsupported method: eth_foo on ETH_MAINNET. See available methods"),
    ("plain -32000", -32000, "Method not found"),
    ("nethermind", -32601, "The method 'eth_foo' is not supported."),
    ("ganache", -32000, "Method shh_newSymKey not supported."),
    ("drpc", -32601, "method not supported"),
    ("generic", -32000, "unknown method eth_foo"),
    ("generic", -32000, "no such method"),
]


@pytest.mark.parametrize(
    ("code", "message"), [m[1:] for m in METHOD_MISSING], ids=[m[0] for m in METHOD_MISSING]
)
def test_method_missing_wordings(code: int, message: str) -> None:
    """Nodes' and providers' "no such method" wordings are method_not_found, whatever code."""
    assert classify_rpc_error(code, message, None) is C.METHOD_NOT_FOUND


def test_anvil_websocket_wording_depends_on_the_method() -> None:
    """anvil's WS "no variant of EthRpcCall" is method_not_found only for unknown methods."""
    message = "data did not match any variant of untagged enum EthRpcCall"
    assert classify_rpc_error(-32602, message, None, known_method=False) is C.METHOD_NOT_FOUND
    assert classify_rpc_error(-32602, message, None) is C.INVALID_PARAMS


def test_method_words_elsewhere_are_not_method_not_found() -> None:
    """A feature or range limit mentioning support is still a capability violation."""
    assert classify_rpc_error(-32000, "tracing not enabled", None) is C.CAPABILITY_VIOLATION
    assert classify_rpc_error(-32000, "range not supported", None) is C.CAPABILITY_VIOLATION


# --- retry-after bounds (issue 11) ----------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [{"retry_after": 1e306}, {"retry_after_ms": 1e308}, {"retryAfter": "1e300"}],
)
def test_absurd_retry_after_in_error_data_is_clamped(data: object) -> None:
    """A retry-after of centuries in error data is read as the one-hour maximum."""
    assert retry_after_from_error(data) == classify.MAX_RETRY_AFTER_S


@given(data=st.dictionaries(st.sampled_from(["retry_after", "retry_after_ms"]), JSON))
def test_retry_after_from_error_is_always_bounded(data: object) -> None:
    """Whatever the data says, the reading is None or within 0..MAX_RETRY_AFTER_S."""
    seconds = retry_after_from_error(data)
    assert seconds is None or 0.0 <= seconds <= classify.MAX_RETRY_AFTER_S


@pytest.mark.parametrize(
    "value",
    [b"1e308", b"99999999999", "Fri, 31 Dec 9999 23:59:59 GMT"],
)
def test_absurd_retry_after_header_is_clamped(value: bytes | str) -> None:
    """Retry-After: 1e308 (or a date in year 9999) reads as one hour, not for ever."""
    assert classify.parse_retry_after(value, 1_750_000_000.0) == classify.MAX_RETRY_AFTER_S


@given(value=st.one_of(st.binary(max_size=40), st.text(max_size=40)))
def test_retry_after_header_is_always_bounded(value: bytes | str) -> None:
    """Any header value reads as None or within 0..MAX_RETRY_AFTER_S."""
    seconds = classify.parse_retry_after(value, 1_750_000_000.0)
    assert seconds is None or 0.0 <= seconds <= classify.MAX_RETRY_AFTER_S
