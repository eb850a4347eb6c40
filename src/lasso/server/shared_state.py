"""Node-wide routing state for ``lasso serve --workers N``: a table in shared memory.

Every worker process routes from its own kernel objects; this module keeps them in step.
The parent creates one :class:`SharedTable` (a fixed array of records in
``multiprocessing.shared_memory``) and passes its name to the workers. Each channel of each
profile owns one record; workers agree on the index because they all sort the same keys
``(profile, chain, provider id, transport)``, and every record carries a 64-bit hash of its
key so a worker that has not reloaded yet ignores (and does not trust) a slot whose owner
changed.

Write-through: after a ``router.record_*`` call the pipeline calls
:meth:`ChainShared.publish`, which packs the channel's evidence and breaker state into its
record and bumps the record's sequence number. Read-before-decide: before
``router.candidates()`` the pipeline calls :meth:`ChainShared.refresh`, which compares each
record's sequence with the last one seen (a 4-byte read per channel) and applies changed
records to the local channel: evidence fields as written; a shared OPEN breaker whose deadline
is still ahead opens the local breaker until that deadline; a shared CLOSED breaker closes a
local OPEN/HALF_OPEN one.

Races, by design (no locks on the hot path):

* last writer wins: two workers publishing the same channel at once can lose one EWMA sample
  or one failure count; the next publish repairs the drift;
* a torn record (two writers interleaving) is detected by the odd/changed sequence only when
  one writer is mid-write; a fully interleaved pair leaves a mix of two valid records;
* after an open period each worker goes half-open on its own, so up to N probes (one per
  worker) reach a recovering provider;
* a breaker trips when the *node-wide* consecutive failure count reaches the category's
  threshold (counted through the shared evidence), so a bad provider sees about threshold
  failures in total, plus whatever was already in flight on other workers.

``time.monotonic`` is ``CLOCK_MONOTONIC`` on Linux, one clock for every process of the host,
so deadlines and ``last_observed`` stamps are valid across workers.
"""

from __future__ import annotations

import hashlib
import math
import struct
from multiprocessing import shared_memory
from typing import TYPE_CHECKING

from lasso.kernel.breaker import BreakerState
from lasso.kernel.classify import penalizes_breaker

if TYPE_CHECKING:
    from lasso.kernel.router import Channel
    from lasso.server.runtime import ChainRuntime, Runtime

__all__ = ["RECORD", "ChainShared", "SharedTable", "key_hash", "pack_channel", "apply_record"]

# seq, keyhash, breaker state, breaker deadline, rate_limited_until, ewma_ms, success_prob,
# last_observed, usable_successes, consecutive_failures, total_failures, comparable_attempts.
RECORD = struct.Struct("<IxxxxQB7xdddddIIII")
_SEQ = struct.Struct("<I")
_BODY_OFFSET = 4
_BODY = struct.Struct("<QB7xdddddIIII")
DEFAULT_CAPACITY = 4096
_NAN = float("nan")


def key_hash(profile: str, chain: str, provider: str, transport: str) -> int:
    """A stable 64-bit id of a channel, the same in every process (never 0)."""
    raw = f"{profile}\0{chain}\0{provider}\0{transport}".encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little") or 1


def pack_channel(ch: Channel, khash: int, now: float) -> tuple[object, ...]:
    """The record body (without seq) for ``ch`` as of ``now``."""
    ev = ch.evidence
    br = ch.breaker
    state = br.state(now)
    deadline = br.recovery_deadline if state is BreakerState.OPEN else None
    rl = ev.rate_limited_until
    return (
        khash,
        int(state),
        deadline if deadline is not None else 0.0,
        rl if math.isfinite(rl) else -1.0,
        ev.ewma_ms,
        _NAN if ev.success_prob is None else ev.success_prob,
        _NAN if ev.last_observed is None else ev.last_observed,
        min(ev.usable_successes, 0xFFFFFFFF),
        min(ev.consecutive_failures, 0xFFFFFFFF),
        min(ev.total_failures, 0xFFFFFFFF),
        min(ev.comparable_attempts, 0xFFFFFFFF),
    )


def apply_record(ch: Channel, body: tuple[object, ...], now: float) -> object | None:
    """Apply a record body read from the table to the local channel.

    Returns:
        The local breaker transition the record caused (to publish as an event), if any.
    """
    (_, state, deadline, rl, ewma, prob, last, succ, cfail, tfail, attempts) = body
    assert isinstance(deadline, float) and isinstance(rl, float)
    assert isinstance(ewma, float) and isinstance(prob, float) and isinstance(last, float)
    assert isinstance(state, int)
    ev = ch.evidence
    ev.ewma_ms = ewma
    ev.success_prob = None if math.isnan(prob) else prob
    ev.last_observed = None if math.isnan(last) else last
    ev.usable_successes = int(succ)  # type: ignore[call-overload]
    ev.consecutive_failures = int(cfail)  # type: ignore[call-overload]
    ev.total_failures = int(tfail)  # type: ignore[call-overload]
    ev.comparable_attempts = int(attempts)  # type: ignore[call-overload]
    ev.rate_limited_until = rl if rl >= 0 else float("-inf")
    br = ch.breaker
    local = br.state(now)
    if state == BreakerState.OPEN and deadline > now and local is not BreakerState.OPEN:
        return br.force_open(now, retry_after_s=deadline - now)
    if state == BreakerState.CLOSED and local is not BreakerState.CLOSED:
        return br.force_close(now)
    return None


class SharedTable:
    """The shared-memory array of channel records (create in the parent, attach in workers).

    Args:
        name: attach to this existing segment; ``None`` creates a new one.
        capacity: records to allocate when creating.
    """

    def __init__(self, name: str | None = None, capacity: int = DEFAULT_CAPACITY) -> None:
        if name is None:
            self.shm = shared_memory.SharedMemory(create=True, size=capacity * RECORD.size)
            self.owner = True
        else:
            # track=False (3.13+) is unavailable on 3.11; attaching registers the segment
            # with the resource tracker, which we undo so that a worker's exit does not
            # unlink the parent's segment.
            self.shm = shared_memory.SharedMemory(name=name)
            self.owner = False
            _untrack(self.shm)
        self.name = self.shm.name
        buf = self.shm.buf
        assert buf is not None
        self.buf: memoryview = buf
        self.capacity = len(self.buf) // RECORD.size

    def attach(self, runtime: Runtime) -> None:
        """Give every chain of ``runtime`` its :class:`ChainShared` view (after a build or a
        reload), applying what the table already holds."""
        keys: list[tuple[str, str, str, str, ChainRuntime, Channel]] = []
        for rt in runtime.chains():
            for ch in rt.router.channels:
                keys.append((rt.profile, rt.key, ch.provider.id, ch.transport, rt, ch))
        keys.sort(key=lambda k: k[:4])
        views: dict[int, ChainShared] = {}
        for index, (profile, chain, pid, transport, rt, ch) in enumerate(keys):
            if index >= self.capacity:
                break  # more channels than slots: the rest stay per worker
            view = views.get(id(rt))
            if view is None:
                view = views[id(rt)] = ChainShared(self, rt)
            view.add(ch, index * RECORD.size, key_hash(profile, chain, pid, transport))
        for rt in runtime.chains():
            rt.shared = views.get(id(rt))
            if rt.shared is not None:
                rt.shared.refresh()

    def close(self) -> None:
        """Detach; the creating process also unlinks the segment."""
        try:
            self.shm.close()
        except BufferError:  # a view is still alive somewhere: leave it to process exit
            pass
        if self.owner:
            try:
                self.shm.unlink()
            except FileNotFoundError:
                pass


def _untrack(shm: shared_memory.SharedMemory) -> None:
    try:
        from multiprocessing import resource_tracker

        resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
    except Exception:  # best effort: at worst the tracker warns at exit
        pass


class ChainShared:
    """One chain's slice of the table: the record offset and last seen seq per channel."""

    __slots__ = ("table", "rt", "chans", "offsets", "hashes", "seen")

    def __init__(self, table: SharedTable, rt: ChainRuntime) -> None:
        self.table = table
        self.rt = rt
        self.chans: list[Channel] = []
        self.offsets: list[int] = []
        self.hashes: list[int] = []
        self.seen: list[int] = []
        # Channel → position, by identity (Channel defines no __hash__ override).

    def add(self, ch: Channel, offset: int, khash: int) -> None:
        self.chans.append(ch)
        self.offsets.append(offset)
        self.hashes.append(khash)
        self.seen.append(-1)

    def refresh(self, now: float | None = None) -> None:
        """Apply records other workers changed since we last looked (O(channels) reads)."""
        buf = self.table.buf
        seen = self.seen
        for i, off in enumerate(self.offsets):
            seq = _SEQ.unpack_from(buf, off)[0]
            if seq == seen[i] or seq & 1:
                continue  # unchanged, or a writer is mid-update: next time
            body = _BODY.unpack_from(buf, off + _BODY_OFFSET)
            if _SEQ.unpack_from(buf, off)[0] != seq:
                continue  # torn read
            seen[i] = seq
            if seq == 0 or body[0] != self.hashes[i]:
                continue  # never written, or another generation's channel
            if now is None:
                from time import monotonic

                now = monotonic()
            tr = apply_record(self.chans[i], body, now)
            if tr is not None:
                self.rt.events.transition(self.rt, self.chans[i], tr)  # type: ignore[arg-type]

    def publish(self, ch: Channel, category: str | None, now: float) -> None:
        """Write ``ch``'s state through to its record after a ``record_*`` call.

        ``category`` is the failure category just recorded (``None`` for a success): when it
        penalizes the breaker and the node-wide consecutive failure count has reached its
        threshold, the local breaker trips now instead of after N × threshold failures.
        """
        try:
            i = self.chans.index(ch)
        except ValueError:
            return
        br = ch.breaker
        buf = self.table.buf
        off = self.offsets[i]
        seq = _SEQ.unpack_from(buf, off)[0]
        if seq != self.seen[i] and not seq & 1:
            # Another worker wrote since our last refresh: never overwrite its OPEN breaker
            # with our stale CLOSED one (that would let the provider's traffic back in).
            body = _BODY.unpack_from(buf, off + _BODY_OFFSET)
            deadline = body[2]
            if (
                body[0] == self.hashes[i]
                and body[1] == BreakerState.OPEN
                and deadline > now
                and br.state(now) is BreakerState.CLOSED
            ):
                tr = br.force_open(now, retry_after_s=deadline - now)
                if tr is not None:
                    self.rt.events.transition(self.rt, ch, tr)
        if category is not None and penalizes_breaker(category):
            cfg = br.config
            limit = cfg.category_thresholds.get(category, cfg.failure_threshold)
            if ch.evidence.consecutive_failures >= limit and br.state(now) is BreakerState.CLOSED:
                tr = br.force_open(now)
                if tr is not None:
                    self.rt.events.transition(self.rt, ch, tr)
        seq |= 1  # odd: writing
        _SEQ.pack_into(buf, off, seq)
        _BODY.pack_into(buf, off + _BODY_OFFSET, *pack_channel(ch, self.hashes[i], now))
        seq = (seq + 1) & 0xFFFFFFFF or 2
        _SEQ.pack_into(buf, off, seq)
        self.seen[i] = seq

    def __repr__(self) -> str:
        return f"<ChainShared {self.rt.profile}/{self.rt.key} channels={len(self.chans)}>"
