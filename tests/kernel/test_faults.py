"""Channel health: last error, connection state and the once-per-kind report rule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lasso.kernel.clock import FakeClock
from lasso.kernel.faults import (
    CONNECT_CAUSES,
    MAX_PENDING_REPORTS,
    MAX_TRACKED_KINDS,
    REPEAT_REPORT_S,
    ChannelHealth,
    Fault,
)

DNS = Fault(cause="dns", category="network_error", message="cannot resolve x", ts=1000.0)
REFUSED = Fault(cause="refused", category="network_error", message="refused")
HTTP_503 = Fault(cause="http_status", category="server_error", message="HTTP 503", status=503)
HTTP_500 = Fault(cause="http_status", category="server_error", message="HTTP 500", status=500)
TIMEOUT = Fault(cause="timeout", category="timeout", message="no answer")


def test_unknown_until_the_first_outcome_then_up_or_down() -> None:
    """A new channel is unknown; an answer makes it up, a connect failure down."""
    h = ChannelHealth()
    assert (h.link, h.connected, h.last_error(0.0)) == ("unknown", False, None)
    h.reached(1.0)
    assert (h.link, h.connected) == ("up", True)
    assert h.drain() == []  # unknown -> up is the normal start: nothing to say
    h.fault(DNS, 2.0)
    assert (h.link, h.connected) == ("down", False)
    assert h.last_error(5.5) == {
        "category": "network_error",
        "cause": "dns",
        "message": "cannot resolve x",
        "ts": 1000.0,
        "age_s": 3.5,
    }


def test_state_changes_are_reported_once() -> None:
    """Down is reported when it happens, not again while it lasts; up again is reported
    with how long it was down."""
    clock = FakeClock()
    h = ChannelHealth()
    for _ in range(5):
        h.fault(DNS, clock.now())
        clock.advance(1.0)
    reports = h.drain()
    assert [r.kind for r in reports] == ["unreachable"]
    assert reports[0].fault is DNS
    h.reached(clock.now())
    (back,) = h.drain()
    assert back.kind == "reachable" and back.fault is None and back.down_s == 5.0


def test_an_http_error_means_the_upstream_was_reached() -> None:
    """A non-connect fault is an answer: a down channel is up again, and the error is the
    first of its kind."""
    h = ChannelHealth()
    h.fault(REFUSED, 0.0)
    h.fault(HTTP_503, 1.0)
    assert h.link == "up"
    assert [(r.kind, r.fault) for r in h.drain()] == [
        ("unreachable", REFUSED),
        ("reachable", None),
        ("error", HTTP_503),
    ]


def test_each_kind_once_per_period_with_the_repeats_counted() -> None:
    """The first fault of a kind is reported; the same kind again only REPEAT_REPORT_S
    later, carrying how many were not reported; another status is another kind."""
    clock = FakeClock()
    h = ChannelHealth()
    h.reached(clock.now())
    for _ in range(10):
        h.fault(HTTP_503, clock.now())
        clock.advance(1.0)
    h.fault(HTTP_500, clock.now())
    assert [(r.kind, r.fault, r.repeats) for r in h.drain()] == [
        ("error", HTTP_503, 0),
        ("error", HTTP_500, 0),
    ]
    clock.advance(REPEAT_REPORT_S)
    h.fault(HTTP_503, clock.now())
    (again,) = h.drain()
    assert (again.fault, again.repeats) == (HTTP_503, 9)
    h.fault(HTTP_503, clock.now())
    assert h.drain() == []
    assert h.failures == 13


def test_a_new_connect_cause_while_down_is_its_own_kind() -> None:
    """Down for DNS, then refused: the state does not change, but the new cause is said."""
    h = ChannelHealth()
    h.fault(DNS, 0.0)
    h.fault(DNS, 1.0)
    h.fault(REFUSED, 2.0)
    assert [(r.kind, r.fault) for r in h.drain()] == [
        ("unreachable", DNS),
        ("error", REFUSED),
    ]
    assert h.last is REFUSED and h.link == "down"


def test_lost_connection_goes_down_once() -> None:
    """A dropped standing connection is reported as unreachable, once."""
    h = ChannelHealth()
    h.reached(0.0)
    lost = Fault(cause="disconnected", category="network_error", message="lost")
    h.lost(lost, 1.0)
    h.lost(lost, 2.0)
    assert [(r.kind, r.fault) for r in h.drain()] == [("unreachable", lost)]
    assert h.link == "down" and h.failures == 2


def test_pending_reports_and_kinds_are_bounded() -> None:
    """A flood of distinct kinds keeps at most MAX_PENDING_REPORTS reports (the oldest go,
    counted) and remembers at most MAX_TRACKED_KINDS kinds."""
    h = ChannelHealth()
    h.reached(0.0)
    for status in range(400, 600):
        h.fault(Fault(cause="http_status", category="server_error", message="x", status=status), 1)
    reports = h.drain()
    assert len(reports) == MAX_PENDING_REPORTS
    assert reports[-1].fault is not None and reports[-1].fault.status == 599
    assert h.dropped == 200 - MAX_PENDING_REPORTS
    assert len(h._seen) == MAX_TRACKED_KINDS


def test_fault_fields() -> None:
    """Connect causes are the connect-level ones; the dict leaves out unknown fields."""
    assert DNS.connect and REFUSED.connect and not HTTP_503.connect and not TIMEOUT.connect
    assert {"dns", "refused", "tls", "connect_timeout"} <= CONNECT_CAUSES
    assert TIMEOUT.to_dict() == {"category": "timeout", "cause": "timeout", "message": "no answer"}
    assert HTTP_503.to_dict()["status"] == 503
    assert HTTP_503.key == ("http_status", "server_error", 503)
    assert repr(ChannelHealth()) == "<ChannelHealth link=unknown failures=0 pending=0>"


_FAULTS = st.sampled_from([DNS, REFUSED, HTTP_503, HTTP_500, TIMEOUT])
_STEPS = st.lists(
    st.tuples(st.sampled_from(["fault", "lost", "reached"]), _FAULTS, st.floats(0, 200)),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(_STEPS)
def test_invariants(steps: list[tuple[str, Fault, float]]) -> None:
    """Whatever happens: the state follows the latest outcome, reports alternate between
    unreachable and reachable, and no kind is reported twice within REPEAT_REPORT_S."""
    clock = FakeClock()
    h = ChannelHealth()
    reports = []
    for action, fault, dt in steps:
        clock.advance(dt)
        if action == "fault":
            h.fault(fault, clock.now())
            assert h.link == ("down" if fault.connect else "up")
        elif action == "lost":
            h.lost(fault, clock.now())
            assert h.link == "down"
        else:
            h.reached(clock.now())
            assert h.link == "up"
        reports.extend(h.drain())
    changes = [r.kind for r in reports if r.kind != "error"]
    assert all(a != b for a, b in zip(changes, changes[1:], strict=False))
    last_seen: dict[object, float] = {}
    for r in reports:
        if r.kind == "reachable":
            continue
        assert r.fault is not None
        key = r.fault.key
        if r.kind == "error" and key in last_seen:
            assert r.at - last_seen[key] >= REPEAT_REPORT_S
        last_seen[key] = r.at


@pytest.mark.parametrize("cause", sorted(CONNECT_CAUSES))
def test_every_connect_cause_takes_the_channel_down(cause: str) -> None:
    """Each connect-level cause makes an up channel unreachable."""
    h = ChannelHealth()
    h.reached(0.0)
    h.fault(Fault(cause=cause, category="network_error", message=cause), 1.0)
    assert h.link == "down" and [r.kind for r in h.drain()] == ["unreachable"]
