"""The ``lasso`` command: serve, demo, check-config, sim, probe, keys."""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lasso import __version__
from lasso.config import DEMO_PROFILE, default_profile_slug
from lasso.kernel.methods import KNOWN_METHODS
from lasso.logs import LEVELS
from lasso.net.busypoll import MAX_BUSY_POLL_US
from lasso.server.limits import DEFAULT_MAX_BATCH, MAX_BATCH_LIMIT

if TYPE_CHECKING:  # imported when serving, not for `lasso --help`
    from lasso.app import Settings
    from lasso.config import ProfileConfig

__all__ = ["main"]

log = logging.getLogger("lasso")

LOG_LEVELS = tuple(level.lower() for level in LEVELS)
DEFAULT_PROFILES_DIR = "config/profiles"


def add_log_level(parser: argparse.ArgumentParser, default: str) -> None:
    """``--log-level`` with its choices listed (case-insensitive; env ``LASSO_LOG_LEVEL``)."""
    parser.add_argument(
        "--log-level",
        type=str.lower,
        choices=LOG_LEVELS,
        default=os.environ.get("LASSO_LOG_LEVEL", default),
        metavar="LEVEL",
        help=f"one of {', '.join(LOG_LEVELS)} (env LASSO_LOG_LEVEL; default {default})",
    )


def _env_flag(name: str) -> bool | None:
    """A yes/no environment variable: ``1/true/yes/on`` or ``0/false/no/off``; unset or
    empty is ``None``."""
    raw = (os.environ.get(name) or "").strip().lower()
    if not raw:
        return None
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SystemExit(f"lasso: environment variable {name}={raw!r} is not a yes/no value")


MAX_PORT = 65535
MAX_WORKERS = 256


class UsageError(Exception):
    """A bad flag or environment value: ``main`` prints ``lasso: <message>`` and exits 2."""


def env_int(name: str, default: int, lo: int, hi: int) -> int:
    """The integer in environment variable ``name`` (unset or empty: ``default``).

    Raises:
        UsageError: the value is not an integer in ``lo..hi``.
    """
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw.strip(), 10)
    except ValueError:
        raise UsageError(f"environment variable {name}={raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise UsageError(f"environment variable {name}={raw!r} must be between {lo} and {hi}")
    return value


def cluster_url_from_env() -> str | None:
    """``LASSO_CLUSTER_URL`` (unset or empty: ``None``, standalone), checked at start with
    ``LASSO_CLUSTER_INTERVAL_MS``: one or more comma-separated ``nats://``, ``tls://``,
    ``ws://`` or ``wss://`` URLs naming a host (and a port in range).

    Raises:
        UsageError: either value is unusable (the message names the variable).
    """
    from lasso.cluster.transport import NatsExchange, default_interval_s

    try:
        default_interval_s()
    except ValueError as exc:
        raise UsageError(f"environment variable {exc}") from None
    url = (os.environ.get("LASSO_CLUSTER_URL") or "").strip()
    if not url:
        return None
    try:
        NatsExchange(url).check()
    except ValueError as exc:
        raise UsageError(f"environment variable LASSO_CLUSTER_URL: {exc}") from None
    return url


def ranged_int(lo: int, hi: int, what: str = "") -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``lo..hi`` (argparse reports anything else)."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{what or 'value'} {value} is not in {lo}..{hi}")
        return value

    parse.__name__ = what or "integer"
    return parse


port_number = ranged_int(0, MAX_PORT, "port")
"""The argparse type of every port flag: 0 (any free port) to 65535."""


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
        "--default-profile",
        default=None,
        metavar="SLUG",
        help="the profile for routes without /profile/<slug> (env LASSO_DEFAULT_PROFILE; "
        "default: 'public', else the only profile there is)",
    )
    serve.add_argument(
        "--demo-profile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="serve (or skip) the demo profile (demo.yml: simulated providers, for use with "
        "`lasso sim --demo`); default: skipped from the default ./config/profiles, served "
        "from a directory you name (env LASSO_DEMO_PROFILE=1|0)",
    )
    serve.add_argument(
        "--host", default=None, help="bind address (env LASSO_HOST; default 127.0.0.1)"
    )
    serve.add_argument(
        "--port", type=port_number, default=None, help="port (env PORT; default 4000)"
    )
    serve.add_argument(
        "--node-id", default=None, help="node id, e.g. a region (env LASSO_NODE_ID; default local)"
    )
    add_log_level(serve, "info")
    serve.add_argument(
        "--workers",
        type=ranged_int(1, MAX_WORKERS, "workers"),
        default=None,
        help="SO_REUSEPORT worker processes sharing breaker/rate-limit/latency state "
        "(env LASSO_WORKERS; default 1)",
    )
    serve.add_argument(
        "--max-batch",
        type=ranged_int(1, MAX_BATCH_LIMIT, "batch size"),
        default=None,
        help="most requests in one JSON-RPC batch (env LASSO_MAX_BATCH; default 1000)",
    )
    serve.add_argument(
        "--busy-poll-us",
        type=int,
        default=None,
        help="keep polling sockets this many µs after each request/response instead of "
        "sleeping: lower latency at low concurrency for CPU (env LASSO_BUSY_POLL_US; "
        "default 0 = off; see docs/performance.md)",
    )
    serve.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="change one hostile-client/upstream limit, e.g. max_connections=20000 "
        "(repeatable; env LASSO_<NAME>; see docs/configuration.md#limits)",
    )

    demo = sub.add_parser("demo", help="run the proxy in front of a simulated provider fleet")
    demo.add_argument(
        "--port", type=port_number, default=None, help="proxy port (env PORT; default 4000)"
    )
    demo.add_argument(
        "--host",
        default="127.0.0.1",
        help="bind address of the proxy (with --nodes, of the simulated providers too); "
        "default 127.0.0.1, 0.0.0.0 to reach the demo from other machines",
    )
    demo.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="run N nodes as regions (us-east-1, eu-west-1, ...) with region-dependent "
        "provider latency, joined in a cluster (NATS if LASSO_CLUSTER_URL is set)",
    )
    demo.add_argument(
        "--no-traffic",
        action="store_true",
        help="do not run the light background client (a few reads per second, so the "
        "dashboard shows live figures from the start)",
    )
    add_log_level(demo, "warning")

    check = sub.add_parser(
        "check-config",
        help="validate every profile and exit",
        description="Validate every profile of a directory (demo.yml included) the way "
        "`lasso serve` loads them, environment substitution included. Exit 0, or 1 with "
        "one 'file:line: key.path: message' line per problem.",
    )
    check.add_argument(
        "--profiles",
        default=None,
        help="profiles directory (env LASSO_PROFILES_DIR; default ./config/profiles)",
    )

    sim = sub.add_parser("sim", help="run the provider simulator standalone")
    from lasso.sim import cli as sim_cli

    sim_cli.add_arguments(sim)

    keys = sub.add_parser("keys", help="client API keys for a profile's auth.keys")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="KEYS_COMMAND")
    new_key = keys_sub.add_parser("new", help="print a fresh random key and its key_sha256 entry")
    new_key.add_argument("--id", default=None, help="the key's id in the entry (default: client)")

    probe = sub.add_parser(
        "probe", help="probe a provider: methods, limits, batches, archive, subscriptions"
    )
    from lasso import probe_cli

    probe_cli.add_arguments(probe)
    parser.set_defaults(_commands=sub.choices)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:  # report them with the usage of the command they were given to
        target = args._commands.get(args.command, parser) if args.command else parser
        target.error(f"unrecognized arguments: {' '.join(extras)}")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return _run(parser, args)
    except UsageError as exc:
        print(f"lasso: {exc}", file=sys.stderr)
        return 2


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "check-config":
        return check_config(
            args.profiles or os.environ.get("LASSO_PROFILES_DIR") or DEFAULT_PROFILES_DIR
        )
    if args.command == "serve":
        return serve(args)
    if args.command == "demo":
        from lasso.demo import run_demo

        if args.port is None:
            args.port = env_int("PORT", 4000, 0, MAX_PORT)
        cluster_url_from_env()  # a bad value stops here, not in a background task

        return run_demo(args)
    if args.command == "sim":
        from lasso.sim import cli as sim_cli

        return int(sim_cli.run(args))
    if args.command == "keys":
        from lasso.auth.keys_cli import run_keys

        return run_keys(args)
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
        profiles = load_profiles(path, known_methods=KNOWN_METHODS)
    except ConfigError as exc:
        _print_ok(exc.loaded)  # the valid profiles still say so
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) found", file=sys.stderr)
        return 1
    _print_ok(profiles)
    return 0


def _print_ok(profiles: Mapping[str, ProfileConfig]) -> None:
    for slug, profile in sorted(profiles.items()):
        chains = ", ".join(
            f"{k} ({c.chain_id}, {_plural(len(c.providers), 'provider')})"
            for k, c in profile.chains.items()
        )
        print(f"ok  {profile.source}: profile '{slug}': {chains or 'no chains'}")


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def serve(args: argparse.Namespace) -> int:
    from lasso.app import Settings, install_uvloop
    from lasso.logs import setup_logging
    from lasso.net.limits import Limits
    from lasso.net.redis_link import redis_url_from_env
    from lasso.profiles import ConfigError, load_profiles

    node_id = args.node_id or os.environ.get("LASSO_NODE_ID") or "local"
    if args.log_level.upper() not in LEVELS:
        print(
            f"lasso: unknown log level {args.log_level!r} "
            f"(use one of: {', '.join(LEVELS).lower()})",
            file=sys.stderr,
        )
        return 2
    setup_logging(node_id, args.log_level)
    named = args.profiles or os.environ.get("LASSO_PROFILES_DIR")
    directory = named or DEFAULT_PROFILES_DIR
    # The demo profile points at simulated providers: from the default directory it is
    # noise (its circuits open) unless asked for; from a directory you name, it is yours.
    with_demo = args.demo_profile
    if with_demo is None:
        with_demo = _env_flag("LASSO_DEMO_PROFILE")
    if with_demo is None:
        with_demo = bool(named)
    exclude = () if with_demo else (DEMO_PROFILE,)
    busy_poll = (
        args.busy_poll_us
        if args.busy_poll_us is not None
        else env_int("LASSO_BUSY_POLL_US", 0, 0, MAX_BUSY_POLL_US)
    )
    if not 0 <= busy_poll <= MAX_BUSY_POLL_US:
        print(f"lasso: --busy-poll-us must be between 0 and {MAX_BUSY_POLL_US}", file=sys.stderr)
        return 2
    try:
        limits = Limits.from_sources(os.environ, args.limit)
        redis_url = redis_url_from_env(os.environ)
    except ValueError as exc:
        print(f"lasso: {exc}", file=sys.stderr)
        return 2
    settings = Settings(
        redis_url=redis_url,
        node_id=node_id,
        host=args.host or os.environ.get("LASSO_HOST") or "127.0.0.1",
        port=args.port if args.port is not None else env_int("PORT", 4000, 0, MAX_PORT),
        cluster_url=cluster_url_from_env(),
        busy_poll_us=busy_poll,
        limits=limits,
        default_profile=args.default_profile or os.environ.get("LASSO_DEFAULT_PROFILE") or None,
        max_batch=(
            args.max_batch
            if args.max_batch is not None
            else env_int("LASSO_MAX_BATCH", DEFAULT_MAX_BATCH, 1, MAX_BATCH_LIMIT)
        ),
    )
    worker = os.environ.get("LASSO_WORKER_INDEX")
    if worker is not None and os.environ.get("LASSO_SHARED_STATE"):
        settings.worker_index = env_int("LASSO_WORKER_INDEX", 0, 0, MAX_WORKERS - 1)
        settings.workers = env_int("LASSO_WORKER_COUNT", 1, 1, MAX_WORKERS)
        settings.shared_state = os.environ["LASSO_SHARED_STATE"]
        settings.worker_dir = os.environ.get("LASSO_WORKER_DIR") or None
    workers = (
        args.workers if args.workers is not None else env_int("LASSO_WORKERS", 1, 1, MAX_WORKERS)
    )
    if workers > 1 and settings.port == 0:
        print("lasso: --workers needs a fixed --port (not 0)", file=sys.stderr)
        return 2
    try:
        profiles = load_profiles(directory, exclude=exclude, known_methods=KNOWN_METHODS)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        if exclude and any("skipped: " in p.message for p in exc.problems):
            print(
                "lasso: only the demo profile is there; serve it with --demo-profile (next "
                "to `lasso sim --demo`), or try `lasso demo`",
                file=sys.stderr,
            )
        return 1
    except FileNotFoundError:
        print(f"lasso: profiles directory {directory!r} not found", file=sys.stderr)
        return 1
    if exclude and (Path(directory) / f"{DEMO_PROFILE}.yml").is_file():
        log.info(
            "demo profile skipped (pass --demo-profile to serve it)",
            extra={"event": "config.demo_skipped", "file": str(Path(directory) / "demo.yml")},
        )
    try:
        default_profile_slug(profiles.keys(), settings.default_profile)
    except ValueError as exc:
        print(f"lasso: {exc}", file=sys.stderr)
        return 1
    if workers > 1:
        from lasso.server.workers import supervise

        argv = ["serve", "--profiles", directory, "--host", settings.host]
        argv += ["--port", str(settings.port), "--node-id", node_id, "--log-level", args.log_level]
        argv += ["--demo-profile" if with_demo else "--no-demo-profile"]
        if settings.default_profile:
            argv += ["--default-profile", settings.default_profile]
        argv += ["--max-batch", str(settings.max_batch)]
        argv += [f"--limit={flag}" for flag in args.limit]
        channels = sum(2 * len(c.providers) for p in profiles.values() for c in p.chains.values())
        return supervise(argv, workers, channels)
    install_uvloop()
    return asyncio.run(_serve(profiles, settings, directory, exclude))


async def _serve(
    profiles: Mapping[str, ProfileConfig],
    settings: Settings,
    directory: str,
    exclude: tuple[str, ...] = (),
) -> int:
    from lasso.app import LassoApp
    from lasso.profiles import ConfigError, load_profiles

    try:
        app = LassoApp(profiles, settings)
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
            "default_profile": app.runtime.default_profile,
        },
    )
    if app.runtime.default_profile is None:
        log.warning(
            "no default profile: routes without /profile/<slug> answer 404 (several profiles, "
            "none named 'public'; set LASSO_DEFAULT_PROFILE)",
            extra={"event": "config.no_default_profile", "profiles": sorted(profiles)},
        )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    async def reload() -> None:
        try:
            new = await loop.run_in_executor(
                None,
                functools.partial(
                    load_profiles, directory, exclude=exclude, known_methods=KNOWN_METHODS
                ),
            )
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
        except Exception as exc:  # a loader bug must not end the reload task unhandled
            log.error(
                "reload failed; keeping the last good profiles",
                exc_info=True,
                extra={"event": "config.reload_rejected", "error": repr(exc)[:500]},
            )
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
