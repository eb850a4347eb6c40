"""The bounds on what one client or one upstream may make Lasso hold.

Every limit here is a field of :class:`Limits` with its default, chosen against servers
that have faced the open internet for years (nginx, h11/uvicorn, Node.js, websockets; see
``docs/operations.md#limits`` for the table and the reasons). An operator changes one with
an environment variable ``LASSO_<NAME>`` (``LASSO_MAX_CONNECTIONS=20000``) or the flag
``--limit name=value`` of ``lasso serve``; both go through :meth:`Limits.with_changes`,
which names the bad value.

Times are seconds, sizes bytes. The time limits are deadlines measured from the start of
what the client must send (the first byte of a request), never reset by each byte
received, so a client trickling bytes cannot hold a connection open for ever.

:func:`raise_open_file_limit` lifts the process's soft ``RLIMIT_NOFILE`` to its hard
limit at start, and :func:`connection_cap` derives the number of client connections
Lasso accepts from it, keeping a reserve for upstream connections, log files and the
like: at the cap the server stops accepting (clients wait in the kernel's backlog) rather
than failing ``accept`` with ``EMFILE``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

__all__ = ["Limits", "raise_open_file_limit", "connection_cap", "MIN_RESERVED_FILES"]

MIN_RESERVED_FILES = 256
"""File descriptors kept out of the connection cap at least (upstream pools, logs, NATS)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Transport limits of one node (client connections, WebSockets, upstream answers).

    Attributes:
        max_connections: client connections (HTTP and WebSocket) open at once; the
            effective cap is also kept under the open-file limit (:func:`connection_cap`).
            Beyond it the server stops accepting until it is back under 90 % of the cap,
            first closing idle keep-alive connections and stalled requests to make room.
        max_header_line: bytes of the request line (414 beyond) or of one header line
            (431 beyond); nginx's ``large_client_header_buffers`` 8k.
        max_head: bytes of the request line and all headers together (431 beyond);
            nginx's 4 x 8k.
        max_headers: header lines in one request, repeats of one name included (431
            beyond); Apache's ``LimitRequestFields``.
        head_timeout: seconds from a request's first byte (or from the connection's
            opening, for its first request) to the end of its headers (408 beyond).
        request_timeout: seconds from a request's first byte to the end of its body
            (408 beyond).
        keepalive_timeout: seconds an idle keep-alive connection stays open; nginx's
            ``keepalive_timeout``.
        max_pipeline: requests read ahead on one connection while earlier ones are
            answered; beyond, the server stops reading that connection until they are.
        lingering_time: after an early refusal (413, 431...), seconds the server keeps
            reading and discarding what the client still sends, so that it can read the
            answer instead of a reset (nginx's ``lingering_time``).
        lingering_timeout: the lingering read ends after this many seconds without data
            (nginx's ``lingering_timeout``).
        ws_control_frames_per_s: control frames (ping, pong) a WebSocket client may send
            per second, with as many again as a burst; beyond, close 1008.
        ws_frames_per_read: frames handled per read of one WebSocket before the loop
            serves others (the rest waits, reading paused, for the next loop turn).
        max_upstream_response: bytes of one upstream answer (HTTP response or WebSocket
            message); beyond, the answer is dropped as a provider failure.
        max_redis_pending_bytes: bytes of the response cache's writes to Redis queued or
            being sent (with ``LASSO_REDIS_URL``); beyond, a write is dropped and counted
            (``lasso_cache_redis_dropped_writes_total``), the answer itself unaffected.
    """

    max_connections: int = 10_000
    max_header_line: int = 8192
    max_head: int = 32768
    max_headers: int = 100
    head_timeout: float = 10.0
    request_timeout: float = 60.0
    keepalive_timeout: float = 75.0
    max_pipeline: int = 20
    lingering_time: float = 30.0
    lingering_timeout: float = 5.0
    ws_control_frames_per_s: float = 100.0
    ws_frames_per_read: int = 256
    max_upstream_response: int = 128 * 1024 * 1024
    max_redis_pending_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "int" or f.type is int:
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"{f.name} must be an integer >= 1, got {value!r}")
            else:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"{f.name} must be a number of seconds, got {value!r}")
                if not 0 < value < 1e9:
                    raise ValueError(f"{f.name} must be > 0 (seconds), got {value!r}")
                object.__setattr__(self, f.name, float(value))
        if self.max_header_line > self.max_head:
            raise ValueError(
                f"max_header_line ({self.max_header_line}) must not exceed max_head"
                f" ({self.max_head})"
            )
        if self.head_timeout > self.request_timeout:
            raise ValueError(
                f"head_timeout ({self.head_timeout}) must not exceed request_timeout"
                f" ({self.request_timeout})"
            )

    @staticmethod
    def names() -> tuple[str, ...]:
        """Every limit's name, as ``--limit`` and ``LASSO_<NAME>`` spell it (lower-case)."""
        return tuple(f.name for f in fields(Limits))

    def with_changes(self, changes: Mapping[str, Any], source: str = "limit") -> Limits:
        """A copy with ``changes`` (name to value; strings are parsed) applied.

        Raises:
            ValueError: an unknown name or a bad value, naming ``source`` and the limit.
        """
        parsed: dict[str, Any] = {}
        kinds = {f.name: f.type for f in fields(Limits)}
        for name, raw in changes.items():
            if name not in kinds:
                raise ValueError(
                    f"{source}: unknown limit {name!r} (known: {', '.join(self.names())})"
                )
            value: Any = raw
            if isinstance(raw, str):
                text = raw.strip().replace("_", "")
                try:
                    value = int(text) if kinds[name] in ("int", int) else float(text)
                except ValueError:
                    raise ValueError(f"{source}: {name}={raw!r} is not a number") from None
            parsed[name] = value
        try:
            return replace(self, **parsed)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None

    @classmethod
    def from_sources(cls, environ: Mapping[str, str], flags: Iterable[str] = ()) -> Limits:
        """The defaults, then ``LASSO_<NAME>`` variables, then ``name=value`` flags.

        Raises:
            ValueError: an unknown flag name, a flag without ``=``, or a bad value.
        """
        limits = cls()
        env = {
            name: environ[f"LASSO_{name.upper()}"]
            for name in cls.names()
            if environ.get(f"LASSO_{name.upper()}", "") != ""
        }
        for name, value in env.items():
            limits = limits.with_changes({name: value}, f"LASSO_{name.upper()}")
        for flag in flags:
            name, sep, value = flag.partition("=")
            if not sep:
                raise ValueError(f"--limit {flag!r}: expected name=value")
            limits = limits.with_changes({name.strip(): value}, f"--limit {name.strip()}")
        return limits


def raise_open_file_limit() -> int:
    """Lift the soft ``RLIMIT_NOFILE`` to the hard limit; return the soft limit now in force.

    Never raises: where the limit cannot be read or changed (another platform, a sandbox),
    the current soft limit (or a large number when unknown) is returned.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return 1 << 20
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):  # pragma: no cover
        return 1 << 20
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):  # e.g. macOS caps it lower than the hard limit
            pass
    return int(soft)


def connection_cap(max_connections: int, open_files: int) -> int:
    """The client connections to accept at most: ``max_connections``, kept under the
    open-file limit with a reserve of a quarter of it (at least :data:`MIN_RESERVED_FILES`)
    for everything else the process opens. Never below 1."""
    reserve = max(MIN_RESERVED_FILES, open_files // 4)
    return max(1, min(max_connections, open_files - reserve))
