"""judge(): what an upstream answer means, from results to quota pages and Retry-After."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lasso.config import ErrorRule
from lasso.kernel.classify import MAX_RETRY_AFTER_S, Bucket, Category
from lasso.kernel.judge import ACCEPTED, INVALID_RESPONSE, Judgement, judge

TID = "lasso-t-1"
WALL = 1_750_000_000.0


def run(status: int, body: bytes, headers: dict[bytes, bytes] | None = None, **kw: Any) -> Any:
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        doc = None
    return judge(status, doc, body, headers or {}, tid=TID, wall_now=WALL, **kw)


def answer(**fields: Any) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": TID, **fields})


def test_result_with_our_id_is_accepted() -> None:
    """A 200 result echoing our id is the shared ACCEPTED judgement (no allocation)."""
    assert run(200, answer(result="0x1")) is ACCEPTED
    assert run(200, answer(result=None)) is ACCEPTED
    assert ACCEPTED.ok and ACCEPTED.bucket is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1,2]",
        orjson.dumps({"jsonrpc": "2.0", "id": "other", "result": 1}),
        orjson.dumps({"jsonrpc": "2.0", "id": TID}),
        orjson.dumps({"jsonrpc": "2.0", "id": TID, "error": "text"}),
    ],
)
def test_anything_else_at_200_is_an_invalid_response(body: bytes) -> None:
    """No JSON, a wrong id, no result, or a malformed error is a protocol error."""
    verdict = run(200, body)
    assert verdict is INVALID_RESPONSE
    assert verdict.bucket is Bucket.PROVIDER_FAILURE


def test_error_object_keeps_the_providers_words() -> None:
    """An error answer carries its object, message, category and whether our id came back."""
    verdict = run(200, answer(error={"code": 3, "message": "execution reverted: no"}))
    assert not verdict.ok and verdict.category is Category.EXECUTION_REVERT
    assert verdict.error == {"code": 3, "message": "execution reverted: no"}
    assert verdict.message == "execution reverted: no" and verdict.id_ok
    stranger = orjson.dumps({"jsonrpc": "2.0", "id": 7, "error": {"code": -32602, "message": 5}})
    other = run(200, stranger)
    assert other.category is Category.INVALID_PARAMS and not other.id_ok and other.message == ""


def test_error_rules_and_known_method_reach_the_classifier() -> None:
    """The provider's error_rules come first; known_method decides anvil's WS wording."""
    rules = (ErrorRule(code=-32000, category="rate_limit"),)
    assert run(200, answer(error={"code": -32000, "message": "x"}), rules=rules).category == (
        Category.RATE_LIMIT
    )
    wording = "data did not match any variant of untagged enum EthRpcCall"
    anvil = answer(error={"code": -32602, "message": wording})
    assert run(200, anvil).category is Category.INVALID_PARAMS
    assert run(200, anvil, known_method=False).category is Category.METHOD_NOT_FOUND


@pytest.mark.parametrize(
    ("status", "body", "category"),
    [
        (403, b"Forbidden", "auth_error"),
        (403, b"<html>Your daily quota is used up</html>", "rate_limit"),
        (403, answer(error={"code": -32000, "message": "forbidden: limit"}), "rate_limit"),
        (403, answer(error={"code": -32000, "message": "forbidden"}), "auth_error"),
        (
            403,
            answer(error={"code": 3, "message": "execution reverted: limit"}),
            "execution_revert",
        ),
        (503, b"Too Many Requests", "rate_limit"),
        (500, b"oops", "server_error"),
        (429, answer(error={"code": -32000, "message": "x"}), "rate_limit"),
        (200, answer(error={"code": -32005, "message": "x"}), "rate_limit"),
    ],
)
def test_quota_answers(status: int, body: bytes, category: str) -> None:
    """403 quota wording (JSON or not) and 429 are rate limits; a revert at 403 stays one."""
    verdict = run(status, body)
    assert not verdict.ok
    assert verdict.category == category


def test_http_error_message_names_the_status() -> None:
    """A non-200 without a JSON-RPC error reports the provider's infrastructure status."""
    assert run(502, b"<html>bad gateway</html>").message == (
        "Provider infrastructure error (HTTP 502)"
    )


def test_retry_after_from_data_then_header() -> None:
    """Error data's retry-after wins over the header; the header's date form is read."""
    data = answer(error={"code": 429, "message": "slow", "data": {"retry_after_ms": 1500}})
    assert run(429, data, {b"retry-after": b"9"}).retry_after_s == 1.5
    assert run(429, answer(error={"code": 429, "message": "slow"}), {b"retry-after": b"9"})
    when = datetime.fromtimestamp(time.time() + 42, UTC)
    headers = {b"retry-after": format_datetime(when, usegmt=True).encode()}
    verdict = judge(429, None, b"slow down", headers, tid=TID, wall_now=time.time())
    assert verdict.category == "rate_limit"
    assert 40.0 <= (verdict.retry_after_s or 0) <= 42.0  # the date has a 1 s resolution


def test_absurd_retry_after_is_clamped() -> None:
    """Retry-After: 1e308 and retry_after: 1e306 both read as the one-hour maximum."""
    assert run(429, b"", {b"retry-after": b"1e308"}).retry_after_s == MAX_RETRY_AFTER_S
    huge = answer(error={"code": -32005, "message": "x", "data": {"retry_after": 1e306}})
    assert run(200, huge).retry_after_s == MAX_RETRY_AFTER_S


@given(
    status=st.sampled_from([200, 403, 429, 500]),
    body=st.one_of(
        st.binary(max_size=60),
        st.builds(
            lambda e: answer(error=e),
            st.dictionaries(
                st.sampled_from(["code", "message", "data"]),
                st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.text(),
            ),
        ),
    ),
    header=st.binary(max_size=20),
)
def test_judge_is_total(status: int, body: bytes, header: bytes) -> None:
    """Any status, body and Retry-After give a judgement; a failure has a category."""
    verdict = run(status, body, {b"retry-after": header})
    assert isinstance(verdict, Judgement)
    assert verdict.ok or verdict.category is not None
    ra = verdict.retry_after_s
    assert ra is None or 0.0 <= ra <= MAX_RETRY_AFTER_S
