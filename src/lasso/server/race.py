"""A hedged request's attempts, raced (CONTRACT §7 "Hedging").

:func:`lasso.server.pipeline.execute` hands a request here when its chain may hedge it. The
planner still decides everything; :class:`Race` carries the decisions out so that a
request that needs no hedge costs little more than an unhedged one:

* an attempt dispatched with nothing else in flight (the first, or a failover) is awaited
  inline, as in the plain pipeline, while a timer waits for the planner's hedge time;
* when the timer fires (a loop callback), the planner is asked again: a hedge ``Dispatch``
  runs as a task; its end is reported to the planner from the task's done callback;
* when a hedge ends the request (it answered first), the driver's inline wait for the
  first attempt is interrupted, the way ``asyncio.timeout`` does it (``Task.cancel`` then
  ``Task.uncancel``): the first attempt's exchange is cancelled (its HTTP connection
  closed, its WebSocket request forgotten) and the driver goes on with the planner's
  ``Cancel`` and ``Answer``;
* with nothing inline (the first attempt failed while a hedge runs), ``Wait(until)`` sleeps
  on one future that a task's end or a timer at ``until`` wakes.

A racing attempt carries its own transport id (two providers may share one upstream
WebSocket, where answers are matched by id).
"""

from __future__ import annotations

import asyncio
from time import monotonic
from typing import Any

from lasso.kernel.attempts import Answer, Cancel, Dispatch, Fact, Fail, Refused, Wait
from lasso.kernel.consistency import ReadPlan
from lasso.kernel.planner import AttemptPlanner, Phase
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

_WAITING = Phase.WAITING


class _Sent:
    """One attempt: where it went, with which id, its task (hedges) and how it ended."""

    __slots__ = ("channel", "closed", "ended", "key", "number", "resp", "started", "task", "tid")

    def __init__(self, number: int, channel: Channel, key: str, tid: bytes, now: float) -> None:
        self.number = number
        self.channel = channel
        self.key = key  # our id as the answer must echo it
        self.tid = tid  # the same, as JSON text
        self.started = now  # admitted; then when its exchange began
        self.ended = 0.0  # when it answered, failed or was cancelled (0: still open)
        self.task: asyncio.Task[_Result] | None = None
        self.resp: UpstreamResponse | None = None
        self.closed = False  # reported or cancelled: recorded once, never again


class Race:
    """A request that may hedge: the first attempt inline, hedges as tasks."""

    __slots__ = (
        "_driver",
        "_inline",
        "_interrupted",
        "_timer",
        "_waiter",
        "body",
        "candidates",
        "docs",
        "key",
        "method",
        "mkey",
        "out",
        "plan",
        "planner",
        "replay_safe",
        "rt",
        "sent",
        "tid",
        "whole",
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
        plan: ReadPlan | None = None,
        docs: dict[int, Any] | None = None,
        whole: bool = False,
    ) -> None:
        self.rt = rt
        self.plan = plan  # the read's consistency plan, checked on every answer
        self.docs = docs  # the judged documents by attempt (the winner's is Outcome.doc)
        self.whole = whole  # the caller reads the result: large answers are parsed whole
        self.planner = planner
        self.candidates = candidates
        self.mkey = mkey
        self.method = method
        self.body = body
        self.key = key
        self.tid = tid
        self.replay_safe = replay_safe
        self.sent: list[_Sent | None] = []  # by attempt number; None: refused
        self.out: Outcome | None = None
        self._driver: asyncio.Task[object] | None = None
        self._inline: _Sent | None = None  # the attempt the driver awaits inline
        self._interrupted = False  # the driver's task was cancelled to end its inline wait
        self._timer: asyncio.TimerHandle | None = None  # the next hedge time
        self._waiter: asyncio.Future[None] | None = None  # what wait() sleeps on

    async def run(self, now: float, out: Outcome) -> Answer | Fail:
        """Carry out decisions until the planner answers or fails; return that decision."""
        self.out = out
        self._driver = asyncio.current_task()
        planner = self.planner
        decision = planner.next(now)
        while True:
            match decision:
                case Dispatch(attempt=number, candidate=candidate, timeout_s=timeout):
                    sent = self.admit(number, candidate, now)
                    if sent is None:
                        planner.receive(Refused(attempt=number))
                    elif self.in_flight():
                        self.spawn(sent, timeout)
                    else:
                        await self.inline(sent, timeout)
                case Wait(until=until):
                    await self.wait(until)
                case Cancel(attempt=number, overdue=overdue):
                    self.cancel(number, overdue)
                case Answer() | Fail():
                    return decision
            now = monotonic()
            decision = planner.next(now)

    # -- attempts -------------------------------------------------------------------------

    def admit(self, number: int, candidate: int, now: float) -> _Sent | None:
        """Breaker admission for a dispatch; ``None`` when it cannot go out."""
        ch = self.candidates[candidate]
        if transport_of(self.rt, ch) is None or not self.rt.router.admit(ch, now):
            self.sent.append(None)
            return None
        key, tid = self.key, self.tid
        if self.sent:  # a racing attempt gets its own id
            key = new_transport_id()
            tid = b'"%s"' % key.encode()
        sent = _Sent(number, ch, key, tid, now)
        self.sent.append(sent)
        return sent

    def in_flight(self) -> bool:
        return self._inline is not None or any(
            s is not None and s.task is not None and not s.closed for s in self.sent
        )

    async def exchange(self, sent: _Sent, timeout: float) -> _Result:
        """One exchange: the fact for the planner, the answer or the transport error, and
        the attempt's latency."""
        ch = sent.channel
        transport = transport_of(self.rt, ch)
        assert transport is not None
        tid = sent.tid
        body = self.body if tid is self.tid else self.body.replace(self.tid, tid, 1)
        t0 = sent.started = monotonic()
        try:
            resp = await transport.exchange(body, tid, timeout, replay_safe=self.replay_safe)
        except UpstreamError as exc:
            return failure_fact(sent.number, exc), None, monotonic() - t0, exc
        lat = monotonic() - t0
        fact = judged(
            self.rt,
            ch,
            self.mkey,
            self.method,
            sent.number,
            resp,
            sent.key,
            self.plan,
            self.docs,
            self.whole,
        )
        return fact, resp, lat, None

    async def inline(self, sent: _Sent, timeout: float) -> None:
        """Await an attempt in the driver, with the hedge timer armed meanwhile."""
        self._inline = sent
        self.arm()
        try:
            result = await self.exchange(sent, timeout)
        except asyncio.CancelledError:
            driver = self._driver
            if self._interrupted and driver is not None:
                self._interrupted = False
                if driver.uncancel() == 0:
                    return  # a hedge ended the request: the planner cancels this attempt
            raise
        finally:
            self._inline = None
            self.disarm()
        self.report(sent, result)

    def spawn(self, sent: _Sent, timeout: float) -> None:
        """Run a racing attempt as a task; its end is reported from its done callback."""
        task = asyncio.get_running_loop().create_task(self.exchange(sent, timeout))
        sent.task = task
        task.add_done_callback(lambda t: self.settled(sent, t))

    def report(self, sent: _Sent, result: _Result) -> None:
        """Hand an attempt's fact to the planner and record its outcome."""
        if sent.closed:
            return
        sent.closed = True
        fact, sent.resp, lat, exc = result
        sent.ended = sent.started + lat
        now = monotonic()
        if self.planner.receive(fact):
            record(self.rt, sent.channel, self.mkey, fact, lat, now, sent.resp, exc)
        else:  # a loser's late outcome: neither success nor failure
            self.rt.router.record_cancelled(sent.channel, self.mkey, now)

    # -- callbacks: a racing attempt ended, a hedge fell due --------------------------------

    def settled(self, sent: _Sent, task: asyncio.Task[_Result]) -> None:
        """A racing attempt's task ended (done callback)."""
        if sent.closed or task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # a bug, not an upstream fault: let the driver raise it
            self.wake()
            return
        self.report(sent, task.result())
        self.advance()

    def arm(self) -> None:
        """Set the timer for the planner's next hedge, if one may fall due."""
        self.disarm()
        if monotonic() >= self.planner.deadline:
            return  # the attempts' own timeouts end them; the driver then fails the request
        decision = self.planner.next(monotonic())
        if type(decision) is Dispatch:  # due right now
            self.dispatch(decision)
            decision = self.planner.next(monotonic())
        if type(decision) is Wait and decision.until < self.planner.deadline:
            delay = decision.until - monotonic()
            self._timer = asyncio.get_running_loop().call_later(max(0.0, delay), self.due)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def due(self) -> None:
        """The hedge timer fired (loop callback)."""
        self._timer = None
        self.advance()

    def advance(self) -> None:
        """After a callback: interrupt the driver if the request is decided, else hedge or
        re-arm while it awaits an attempt inline, else wake it."""
        if self.planner.phase is not _WAITING:
            self.interrupt()
        elif self._inline is not None:
            self.arm()
            if self.planner.phase is not _WAITING:
                self.interrupt()
        else:
            self.wake()

    def dispatch(self, decision: Dispatch) -> None:
        """A hedge the planner decided from a callback: admit it and run it as a task."""
        while True:
            sent = self.admit(decision.attempt, decision.candidate, monotonic())
            if sent is not None:
                self.spawn(sent, decision.timeout_s)
                return
            self.planner.receive(Refused(attempt=decision.attempt))
            nxt = self.planner.next(monotonic())
            if type(nxt) is not Dispatch:
                return  # the Wait it returned is read again by the caller
            decision = nxt

    def interrupt(self) -> None:
        """End the driver's inline wait (a racing attempt decided the request)."""
        if self._inline is not None and self._driver is not None and not self._interrupted:
            self._interrupted = True
            self._driver.cancel()
        else:
            self.wake()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- waiting and cancelling -------------------------------------------------------------

    async def wait(self, until: float) -> None:
        """Sleep until a racing attempt ends (its callback wakes us) or until ``until``."""
        delay = until - monotonic()
        if delay <= 0:
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(delay, self.wake)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        for s in self.sent:  # a task that failed with a bug: raise it here
            if s is not None and s.task is not None and s.task.done() and not s.closed:
                if not s.task.cancelled() and s.task.exception() is not None:
                    s.task.result()

    def cancel(self, number: int, overdue: bool) -> None:
        """Stop a losing attempt: neutral, and its elapsed time a lower bound if overdue."""
        sent = self.sent[number]
        if sent is None or sent.closed:
            return
        sent.closed = True
        if sent.task is not None:
            sent.task.cancel()
        now = sent.ended = monotonic()
        elapsed = now - sent.started if overdue else None
        self.rt.router.record_cancelled(sent.channel, self.mkey, now, elapsed_s=elapsed)

    def abandon(self) -> None:
        """Cancel and release every attempt still open (the request itself was cancelled)."""
        self.disarm()
        for number, sent in enumerate(self.sent):
            if sent is not None and not sent.closed:
                self.cancel(number, False)

    def upstream_time(self) -> float:
        """Seconds during which at least one attempt was in flight: the union of the
        attempts' intervals, so racing attempts count once (their sum would exceed the
        request's own duration)."""
        now = monotonic()
        spans = sorted((s.started, s.ended or now) for s in self.sent if s is not None)
        total = 0.0
        start = end = 0.0
        for a, b in spans:
            if a > end:
                total += end - start
                start, end = a, b
            elif b > end:
                end = b
        return total + end - start

    def finish(self, decision: Answer | Fail, out: Outcome) -> Outcome:
        """Fill ``out`` from the planner's terminal decision (the winner's answer);
        ``upstream_latency`` is the wall time spent with an attempt in flight."""
        out.upstream_latency = self.upstream_time()
        if type(decision) is Answer:
            sent = self.sent[decision.attempt]
            assert sent is not None
            doc = None if self.docs is None else self.docs.get(decision.attempt)
            return finish(
                self.planner, decision, out, sent.channel, sent.resp, sent.tid, doc, self.whole
            )
        return finish(self.planner, decision, out, None, None, self.tid)
