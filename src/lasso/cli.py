"""The ``lasso`` command: serve, demo, check-config, sim, probe."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from lasso import __version__
from lasso.net.busypoll import MAX_BUSY_POLL_US

__all__ = ["main"]

log = logging.getLogger("lasso")

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"lasso: environment variable {name}={raw!r} is not an integer") from None


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lasso", description="Smart proxy and router for Ethereum JSON-RPC."
    )
    parser.add_argument("--version", action="version", version=f"lasso {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the proxy")
    serve.add_argument(
        "--profiles",
        default=None,
        help="profiles directory (env LASSO_PROFILES_DIR; default ./config/profiles)",
    )
    serve.add_argument(
        "--host", default=None, help="bind address (env LASSO_HOST; default 127.0.0.1)"
    )
    serve.add_argument("--port", type=int, default=None, help="port (env PORT; default 4000)")
    serve.add_argument(
        "--node-id", default=None, help="node id, e.g. a region (env LASSO_NODE_ID; default local)"
    )
    serve.add_argument("--log-level", default=os.environ.get("LASSO_LOG_LEVEL", "info"))
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="SO_REUSEPORT worker processes sharing breaker/rate-limit/latency state "
        "(env LASSO_WORKERS; default 1)",
    )
    serve.add_argument(
        "--busy-poll-us",
        type=int,
        default=None,
        help="keep polling sockets this many µs after each request/response instead of "
        "sleeping: lower latency at low concurrency for CPU (env LASSO_BUSY_POLL_US; "
        "default 0 = off; see docs/performance.md)",
    )

    demo = sub.add_parser("demo", help="run the proxy in front of a simulated provider fleet")
    demo.add_argument("--port", type=int, default=None, help="proxy port (default 4000)")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="run N nodes as regions (us-east-1, eu-west-1, ...) with region-dependent "
        "provider latency, joined in a cluster (NATS if LASSO_CLUSTER_URL is set)",
    )
    demo.add_argument("--log-level", default=os.environ.get("LASSO_LOG_LEVEL", "warning"))

    check = sub.add_parser("check-config", help="validate every profile and exit")
    check.add_argument(
        "--profiles", default=None, help="profiles directory (default ./config/profiles)"
    )

    sim = sub.add_parser("sim", help="run the provider simulator standalone")
    from lasso.sim import cli as sim_cli

    sim_cli.add_arguments(sim)

    probe = sub.add_parser(
        "probe", help="probe a provider: methods, limits, batches, archive, subscriptions"
    )
    from lasso import probe_cli

    probe_cli.add_arguments(probe)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "check-config":
        return check_config(
            args.profiles or os.environ.get("LASSO_PROFILES_DIR") or "config/profiles"
        )
    if args.command == "serve":
        return serve(args)
    if args.command == "demo":
        from lasso.demo import run_demo

        return run_demo(args)
    if args.command == "sim":
        from lasso.sim import cli as sim_cli

        return int(sim_cli.run(args))
    if args.command == "probe":
        from lasso import probe_cli

        return probe_cli.run(args)
    parser.print_help()
    return 2


def check_config(directory: str) -> int:
    from lasso.profiles import ConfigError, load_profiles

    path = Path(directory)
    if not path.is_dir():
        print(f"{directory}: not a directory", file=sys.stderr)
        return 1
    try:
        profiles = load_profiles(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) found", file=sys.stderr)
        return 1
    for slug, profile in sorted(profiles.items()):
        chains = ", ".join(
            f"{k} ({c.chain_id}, {len(c.providers)} providers)" for k, c in profile.chains.items()
        )
        print(f"ok  {profile.source}: profile '{slug}': {chains or 'no chains'}")
    return 0


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep working without it
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve(args: argparse.Namespace) -> int:
    from lasso.logs import setup_logging
    from lasso.profiles import ConfigError, load_profiles
    from lasso.server.app import Settings

    node_id = args.node_id or os.environ.get("LASSO_NODE_ID") or "local"
    if args.log_level.upper() not in _LEVELS:
        print(
            f"lasso: unknown log level {args.log_level!r} "
            f"(use one of: {', '.join(_LEVELS).lower()})",
            file=sys.stderr,
        )
        return 2
    setup_logging(node_id, args.log_level)
    directory = args.profiles or os.environ.get("LASSO_PROFILES_DIR") or "config/profiles"
    busy_poll = (
        args.busy_poll_us if args.busy_poll_us is not None else _env_int("LASSO_BUSY_POLL_US", 0)
    )
    if not 0 <= busy_poll <= MAX_BUSY_POLL_US:
        print(f"lasso: --busy-poll-us must be between 0 and {MAX_BUSY_POLL_US}", file=sys.stderr)
        return 2
    from lasso.net.redis_link import redis_url_from_env

    try:
        redis_url = redis_url_from_env(os.environ)
    except ValueError as exc:
        print(f"lasso: {exc}", file=sys.stderr)
        return 2
    settings = Settings(
        node_id=node_id,
        host=args.host or os.environ.get("LASSO_HOST") or "127.0.0.1",
        port=args.port if args.port is not None else _env_int("PORT", 4000),
        cluster_url=os.environ.get("LASSO_CLUSTER_URL") or None,
        busy_poll_us=busy_poll,
        redis_url=redis_url,
    )
    try:
        profiles = load_profiles(directory)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except FileNotFoundError:
        print(f"lasso: profiles directory {directory!r} not found", file=sys.stderr)
        return 1
    if settings.cluster_url:
        from lasso.cluster.transport import default_interval_s

        try:
            default_interval_s()
        except ValueError as exc:
            print(f"lasso: {exc}", file=sys.stderr)
            return 2
    workers = args.workers if args.workers is not None else _env_int("LASSO_WORKERS", 1)
    if workers < 1:
        print("lasso: --workers must be at least 1", file=sys.stderr)
        return 2
    if workers > 1:
        if settings.port == 0:
            print("lasso: --workers needs a fixed --port (not 0)", file=sys.stderr)
            return 2
        from lasso.server.workers import supervise

        argv = ["serve", "--profiles", directory, "--host", settings.host]
        argv += ["--port", str(settings.port), "--node-id", node_id, "--log-level", args.log_level]
        channels = sum(2 * len(c.providers) for p in profiles.values() for c in p.chains.values())
        return supervise(argv, workers, channels)
    worker = os.environ.get("LASSO_WORKER_INDEX")
    if worker is not None and os.environ.get("LASSO_SHARED_STATE"):
        settings.worker_index = int(worker)
        settings.shared_state = os.environ["LASSO_SHARED_STATE"]
        settings.worker_dir = os.environ.get("LASSO_WORKER_DIR") or None
    install_uvloop()
    return asyncio.run(_serve(profiles, settings, directory))


async def _serve(profiles: Mapping[str, object], settings: object, directory: str) -> int:
    from lasso.profiles import ConfigError, load_profiles
    from lasso.server.app import LassoApp, Settings

    assert isinstance(settings, Settings)
    try:
        app = LassoApp(profiles, settings)  # type: ignore[arg-type]
    except ValueError as exc:
        print(f"lasso: cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        port = await app.start()
    except OSError as exc:
        log.error("cannot listen", extra={"event": "server.listen_failed", "error": str(exc)})
        print(f"lasso: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return 1
    await app.start_background()
    log.info(
        "lasso listening",
        extra={
            "event": "server.started",
            "host": settings.host,
            "port": port,
            "profiles": sorted(profiles),
        },
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    async def reload() -> None:
        try:
            new = await loop.run_in_executor(None, load_profiles, directory)
        except ConfigError as exc:
            log.error(
                "reload rejected; keeping the last good profiles",
                extra={
                    "event": "config.reload_rejected",
                    "problems": [str(p) for p in exc.problems],
                },
            )
            return
        except OSError as exc:
            log.error("reload failed", extra={"event": "config.reload_rejected", "error": str(exc)})
            return
        try:
            await app.reload(new)
        except Exception as exc:  # keep serving the last good set, whatever went wrong
            log.error(
                "reload failed; keeping the last good profiles",
                exc_info=True,
                extra={"event": "config.reload_rejected", "error": str(exc)},
            )

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload()))
    await stop.wait()
    log.info("draining", extra={"event": "server.draining", "inflight": app.server.inflight})
    await app.stop(drain_timeout=10.0)
    log.info("stopped", extra={"event": "server.stopped"})
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
