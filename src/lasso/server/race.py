"""A hedged request's attempts, raced as tasks (CONTRACT §7 "Hedging").

:func:`lasso.server.pipeline.execute` hands a request here when its chain hedges it. The
planner still decides everything; :class:`Race` runs each ``Dispatch`` as a task, turns
``Wait(until)`` into ``asyncio.wait`` on the tasks in flight, and ``Cancel(attempt)`` into
cancelling a loser's task (its HTTP connection is closed, its WebSocket request forgotten)
and recording it neutral. A racing attempt carries its own transport id.
"""

from __future__ import annotations

import asyncio
from time import monotonic

from lasso.kernel.attempts import Answer, Cancel, Dispatch, Fact, Fail, Refused, Wait
from lasso.kernel.planner import AttemptPlanner
from lasso.kernel.router import Channel
from lasso.net.errors import UpstreamError
from lasso.net.http_conn import UpstreamResponse
from lasso.server.exchange import (
    Outcome,
    failure_fact,
    finish,
    judged,
    new_transport_id,
    record,
    transport_of,
)
from lasso.server.runtime import ChainRuntime

__all__ = ["Race"]

_Result = tuple[Fact, UpstreamResponse | None, float, UpstreamError | None]
"""An attempt's end: the planner's fact, the answer, its latency, the transport error."""


class _Sent:
    """One raced attempt: where it went, with which id, its task and how it ended."""

    __slots__ = ("channel", "closed", "key", "resp", "started", "task", "tid")

    def __init__(self, channel: Channel, key: str, tid: bytes, started: float) -> None:
        self.channel = channel
        self.key = key  # our id as the answer must echo it
        self.tid = tid  # the same, as JSON text
        self.started = started
        self.task: asyncio.Task[_Result] | None = None
        self.resp: UpstreamResponse | None = None
        self.closed = False  # reported or cancelled: recorded once, never again


class Race:
    """A hedged request: its attempts run as tasks, and the planner decides who wins."""

    __slots__ = (
        "body",
        "candidates",
        "key",
        "method",
        "mkey",
        "planner",
        "replay_safe",
        "rt",
        "sent",
        "tid",
    )

    def __init__(
        self,
        rt: ChainRuntime,
        planner: AttemptPlanner,
        candidates: list[Channel],
        mkey: str,
        method: str,
        body: bytes,
        key: str,
        tid: bytes,
        replay_safe: bool,
    ) -> None:
        self.rt = rt
        self.planner = planner
        self.candidates = candidates
        self.mkey = mkey
        self.method = method
        self.body = body
        self.key = key
        self.tid = tid
        self.replay_safe = replay_safe
        self.sent: list[_Sent | None] = []  # by attempt number; None: refused

    async def run(self, now: float, out: Outcome) -> Answer | Fail:
        """Carry out decisions until the planner answers or fails; return that decision."""
        planner = self.planner
        decision = planner.next(now)
        while True:
            match decision:
                case Dispatch(attempt=number, candidate=candidate, timeout_s=timeout):
                    sent = self.admit(candidate, now)
                    if sent is None:
                        planner.receive(Refused(attempt=number))
                    else:
                        coro = self.attempt(number, sent, timeout)
                        sent.task = asyncio.get_running_loop().create_task(coro)
                case Wait(until=until):
                    for number, sent, result in await self.wait(until):
                        out.upstream_latency += result[2]
                        self.report(number, sent, result)
                case Cancel(attempt=number, overdue=overdue):
                    self.cancel(number, overdue)
                case Answer() | Fail():
                    return decision
            now = monotonic()
            decision = planner.next(now)

    def admit(self, candidate: int, now: float) -> _Sent | None:
        """Breaker admission for a dispatch; ``None`` when it cannot go out."""
        ch = self.candidates[candidate]
        if transport_of(self.rt, ch) is None or not self.rt.router.admit(ch, now):
            self.sent.append(None)
            return None
        key, tid = self.key, self.tid
        if self.sent:
            # A racing attempt gets its own id, in case two providers share one upstream
            # WebSocket (answers are matched by id).
            key = new_transport_id()
            tid = b'"%s"' % key.encode()
        sent = _Sent(ch, key, tid, now)
        self.sent.append(sent)
        return sent

    async def attempt(self, number: int, sent: _Sent, timeout: float) -> _Result:
        """One exchange: the fact for the planner, the answer or the transport error, and
        the attempt's latency."""
        ch = sent.channel
        transport = transport_of(self.rt, ch)
        assert transport is not None
        tid = sent.tid
        body = self.body if tid is self.tid else self.body.replace(self.tid, tid, 1)
        t0 = monotonic()
        try:
            resp = await transport.exchange(body, tid, timeout, replay_safe=self.replay_safe)
        except UpstreamError as exc:
            return failure_fact(number, exc), None, monotonic() - t0, exc
        lat = monotonic() - t0
        fact = judged(self.rt, ch, self.mkey, self.method, number, resp, sent.key)
        return fact, resp, lat, None

    async def wait(self, until: float) -> list[tuple[int, _Sent, _Result]]:
        """Wait for an attempt in flight to finish, or until ``until``: what finished."""
        tasks = {
            s.task: (n, s)
            for n, s in enumerate(self.sent)
            if s is not None and s.task is not None and not s.closed
        }
        timeout = until - monotonic()
        done, _ = await asyncio.wait(
            tasks, timeout=timeout if timeout > 0 else 0, return_when=asyncio.FIRST_COMPLETED
        )
        return [(*tasks[task], task.result()) for task in done]

    def report(
        self,
        number: int,
        sent: _Sent,
        result: _Result,
    ) -> None:
        """Hand an attempt's fact to the planner and record its outcome."""
        if sent.closed:
            return
        sent.closed = True
        fact, sent.resp, lat, exc = result
        now = monotonic()
        if self.planner.receive(fact):
            record(self.rt, sent.channel, self.mkey, fact, lat, now, sent.resp, exc)
        else:  # a loser's late outcome: neither success nor failure
            self.rt.router.record_cancelled(sent.channel, self.mkey, now)

    def cancel(self, number: int, overdue: bool) -> None:
        """Stop a losing attempt: neutral, and its elapsed time a lower bound if overdue."""
        sent = self.sent[number]
        if sent is None or sent.closed:
            return
        sent.closed = True
        if sent.task is not None:
            sent.task.cancel()
        now = monotonic()
        elapsed = now - sent.started if overdue else None
        self.rt.router.record_cancelled(sent.channel, self.mkey, now, elapsed_s=elapsed)

    def abandon(self) -> None:
        """Cancel and release every attempt still open (the request itself was cancelled)."""
        for number, sent in enumerate(self.sent):
            if sent is not None and not sent.closed:
                self.cancel(number, False)

    def finish(self, decision: Answer | Fail, out: Outcome) -> Outcome:
        """Fill ``out`` from the planner's terminal decision (the winner's answer)."""
        if type(decision) is Answer:
            sent = self.sent[decision.attempt]
            assert sent is not None
            return finish(self.planner, decision, out, sent.channel, sent.resp, sent.tid)
        return finish(self.planner, decision, out, None, None, self.tid)
