"""``lasso serve --workers N``: a supervisor of N SO_REUSEPORT worker processes.

The parent validates the profiles, creates the node-wide routing table
(:class:`~lasso.server.shared_state.SharedTable`) and a private directory for metrics
snapshots, then re-executes ``lasso serve`` N times with ``LASSO_WORKER_INDEX``,
``LASSO_SHARED_STATE`` and ``LASSO_WORKER_DIR`` set. Every worker binds the same host:port
with ``SO_REUSEPORT`` and the kernel spreads connections over them. The parent forwards
SIGTERM/SIGINT (drain) and SIGHUP (reload) to the workers, restarts a worker that dies, and
exits 0 once every worker has exited after a stop.

Metrics stay node-wide: each worker writes its counters to ``worker-<i>.json`` in the
shared directory every second and when it stops; whichever worker serves ``/metrics``
merges its live counters with the other workers' latest snapshots (so a scrape may lag
another worker by up to a second). When a worker dies, the parent renames its last
snapshot to ``dead-…`` so its counts stay in the sums (counts from its final second are
lost) and counters never go backwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from lasso.server.shared_state import SharedTable

if TYPE_CHECKING:
    from lasso.server.metrics import Metrics
    from lasso.server.runtime import Runtime

__all__ = ["WorkerSnapshots", "supervise", "SNAPSHOT_INTERVAL_S"]

log = logging.getLogger("lasso")

SNAPSHOT_INTERVAL_S = 1.0
RESTART_BACKOFF_S = 1.0


class WorkerSnapshots:
    """One worker's metrics snapshot file, and the reader of the other workers' files."""

    def __init__(self, directory: str, index: int) -> None:
        self.dir = Path(directory)
        self.index = index
        self.path = self.dir / f"worker-{index}.json"
        self._sources: dict[str, Callable[[], Any]] = {}

    def include(self, name: str, source: Callable[[], Any]) -> None:
        """Add ``source()`` (JSON-ready) to every snapshot under ``name`` (other components'
        counters, such as the client counters of :mod:`lasso.auth`)."""
        self._sources[name] = source

    def snapshot(self, metrics: Metrics, runtime: Runtime) -> dict[str, Any]:
        """This worker's counters (``metrics`` and the routers of ``runtime``) as plain
        JSON-ready lists."""
        m = metrics
        upstream: list[list[Any]] = []
        for rt in runtime.chains():
            for ch in rt.router.channels:
                for method, row in ch.methods.items():
                    outcomes = {k: n for k, n in row.outcomes.items() if n}
                    buckets = list(row.bucket_counts) if row.hist_count else []
                    upstream.append(
                        [rt.profile, rt.key, ch.provider.id, ch.transport, method, outcomes]
                        + [buckets, row.hist_sum_s]
                    )
        return {
            "pid": os.getpid(),
            "requests": [[*k, n] for k, n in m.requests.items()],
            "durations": [[*k, list(h.counts), h.total] for k, h in m.durations.items()],
            "failovers": [[*k, n] for k, n in m.failovers.items()],
            "upstream": upstream,
            **{name: source() for name, source in self._sources.items()},
        }

    def write(self, metrics: Metrics, runtime: Runtime) -> None:
        """Replace this worker's file atomically (readers never see half a file)."""
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_bytes(orjson.dumps(self.snapshot(metrics, runtime)))
            os.replace(tmp, self.path)
        except OSError as exc:  # the directory went away (parent gone): nothing to share
            log.debug("snapshot not written: %s", exc)

    def peers(self) -> list[dict[str, Any]]:
        """The latest snapshots of every other worker, live or dead."""
        out: list[dict[str, Any]] = []
        try:
            files = [p for p in self.dir.glob("*.json") if p != self.path]
        except OSError:
            return out
        for p in files:
            try:
                doc = orjson.loads(p.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue  # vanished or replaced between glob and read
            if isinstance(doc, dict):
                out.append(doc)
        return out

    async def run(self, metrics: Metrics, runtime: Callable[[], Runtime]) -> None:
        """Write a snapshot every :data:`SNAPSHOT_INTERVAL_S` until cancelled (``runtime``
        is re-read each time: reloads swap it)."""
        while True:
            self.write(metrics, runtime())
            await asyncio.sleep(SNAPSHOT_INTERVAL_S)


def supervise(worker_argv: list[str], workers: int, channels: int) -> int:
    """Run ``workers`` copies of ``lasso <worker_argv>`` sharing one routing table.

    Args:
        worker_argv: the ``serve`` arguments each worker gets (without ``--workers``).
        workers: how many processes (≥ 2).
        channels: how many channel records the profiles need (sizes the table).

    Returns:
        The exit status: 0 after a clean stop.
    """
    table = SharedTable(capacity=max(1024, 4 * channels))
    directory = tempfile.mkdtemp(prefix="lasso-workers-")
    try:
        return asyncio.run(_supervise(worker_argv, workers, table.name, directory))
    finally:
        table.close()
        shutil.rmtree(directory, ignore_errors=True)


async def _supervise(argv: list[str], n: int, shm_name: str, directory: str) -> int:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    procs: dict[int, asyncio.subprocess.Process] = {}

    async def spawn(index: int) -> asyncio.subprocess.Process:
        env = dict(os.environ)
        env.update(
            LASSO_WORKERS="1",
            LASSO_WORKER_COUNT=str(n),
            LASSO_WORKER_INDEX=str(index),
            LASSO_SHARED_STATE=shm_name,
            LASSO_WORKER_DIR=directory,
        )
        return await asyncio.create_subprocess_exec(sys.executable, "-m", "lasso", *argv, env=env)

    def forward(sig: signal.Signals) -> None:
        if sig is not signal.SIGHUP:
            stopping.set()
        for proc in procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, forward, sig)

    async def keep(index: int) -> None:
        while not stopping.is_set():
            started = time.monotonic()
            proc = procs[index] = await spawn(index)
            log.info("worker started", extra={"event": "worker.started", "worker": index})
            rc = await proc.wait()
            if stopping.is_set():
                return
            log.error(
                "worker exited; restarting",
                extra={"event": "worker.died", "worker": index, "returncode": rc},
            )
            snap = Path(directory) / f"worker-{index}.json"
            with contextlib.suppress(OSError):
                snap.rename(snap.with_name(f"dead-{index}-{time.time_ns()}.json"))
            if time.monotonic() - started < RESTART_BACKOFF_S:  # crash loop: slow down
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stopping.wait(), RESTART_BACKOFF_S)

    await asyncio.gather(*(keep(i) for i in range(n)))
    return 0
