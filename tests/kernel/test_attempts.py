"""The planner's vocabulary: policies, frozen facts and decisions, client error shapes."""

from __future__ import annotations

import dataclasses

import pytest

from lasso.kernel.attempts import (
    FILTER_CREATE,
    IDEMPOTENT_WRITE,
    READ,
    WRITE,
    Dispatch,
    exhausted_error,
    indeterminate_error,
    method_not_found_error,
    no_channels_error,
    policy_for,
)
from lasso.kernel.classify import Category
from lasso.kernel.judge import Judgement


def test_policies_by_method() -> None:
    """Reads get READ; sends IDEMPOTENT_WRITE; filter creations FILTER_CREATE; filter
    polls and unknown methods WRITE (one send)."""
    assert policy_for("eth_getBalance") is READ
    assert policy_for("eth_sendRawTransaction") is IDEMPOTENT_WRITE
    assert policy_for("eth_newFilter") is FILTER_CREATE
    assert policy_for("eth_newBlockFilter") is FILTER_CREATE
    assert policy_for("eth_getFilterChanges") is WRITE
    assert policy_for("made_up") is WRITE
    assert (READ.max_dispatches, READ.hedge, READ.first_share) == (3, True, 0.6)
    assert (WRITE.max_dispatches, WRITE.replay_safe, WRITE.writes) == (1, False, True)
    idem = IDEMPOTENT_WRITE
    assert (idem.max_dispatches, idem.replay_safe, idem.writes, idem.hedge) == (
        3,
        True,
        True,
        False,
    )
    create = FILTER_CREATE
    assert (create.replay_safe, create.writes, create.hedge) == (True, False, False)


def test_decisions_are_frozen_values() -> None:
    """Decisions compare by value and cannot be changed."""
    a = Dispatch(attempt=0, candidate=1, timeout_s=1.0, reason="first")
    assert a == Dispatch(attempt=0, candidate=1, timeout_s=1.0, reason="first")
    assert a.kind == "dispatch"
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.attempt = 3  # type: ignore[misc]


def test_no_channels_error_shapes() -> None:
    """-32000, with data.retry_after_ms (at least 1) only when circuits are open."""
    assert no_channels_error("eth_call", None) == {
        "code": -32000,
        "message": "No available providers for eth_call",
    }
    err = no_channels_error("eth_call", 0.0001)
    assert err["data"] == {"retry_after_ms": 1}
    assert "circuits open, retry after 0.0s" in err["message"]


def test_indeterminate_and_method_not_found_shapes() -> None:
    """An unsafe failure names the provider and reason; a missing method is -32601."""
    err = indeterminate_error("a", "Request timeout")
    assert err["message"] == "Upstream dispatch outcome is indeterminate"
    assert err["data"]["provider"] == "a" and err["data"]["reason"] == "Request timeout"
    assert method_not_found_error(["a", "b"]) == {
        "code": -32601,
        "message": "Method not found",
        "data": {"providers_tried": ["a", "b"]},
    }


def test_exhausted_error_reports_the_last_failure() -> None:
    """The provider's own code for an error answer; the client code of a transport outcome."""
    answer = Judgement(
        ok=False,
        category=Category.SERVER_ERROR,
        error={"code": -32603, "message": "boom"},
        message="boom",
    )
    err = exhausted_error(answer, "a", ["a"], None)
    assert err["message"] == "All providers failed: boom"
    assert err["data"]["last_error"] == {
        "provider": "a",
        "code": -32603,
        "message": "boom",
        "category": "server_error",
    }
    timeout = Judgement(ok=False, category=Category.TIMEOUT, message="Request timeout")
    assert exhausted_error(timeout, "b", ["b"], 2.5)["data"]["last_error"]["code"] == -32007
    assert exhausted_error(timeout, "b", ["b"], 2.5)["data"]["retry_after_ms"] == 2500
    assert exhausted_error(None, None, [], None) == {
        "code": -32000,
        "message": "All providers failed: no provider answered",
        "data": {"providers_tried": []},
    }


def test_rate_limited_last_answer_carries_its_hint() -> None:
    """A rate-limited last answer's retry-after beats the open-circuit hint."""
    limited = Judgement(ok=False, category=Category.RATE_LIMIT, retry_after_s=3600.0)
    err = exhausted_error(limited, "a", ["a"], 5.0)
    assert err["data"]["retry_after_ms"] == 3_600_000
    assert err["data"]["last_error"]["code"] == -32005


def test_usual_facts_and_answers_are_shared_values() -> None:
    """A result's fact and answer are built once per attempt number; others are new."""
    from lasso.kernel.attempts import answer, answered
    from lasso.kernel.judge import ACCEPTED

    assert answered(2, ACCEPTED) is answered(2, ACCEPTED)
    assert answer(2, ACCEPTED) is answer(2, ACCEPTED)
    assert answered(40, ACCEPTED) == answered(40, ACCEPTED)  # past the table: equal values
    assert answered(40, ACCEPTED) is not answered(40, ACCEPTED)
    failed = Judgement(ok=False, category=Category.SERVER_ERROR)
    assert answered(0, failed).judgement is failed and answer(0, failed).judgement is failed
