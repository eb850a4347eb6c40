"""Profile loading: YAML files in, frozen :class:`~lasso.config.ProfileConfig` values out.

One file per profile (CONTRACT §2, reference §9). A file may open with front matter
between two ``---`` lines (``name``, ``slug``, ``rps_limit``, ``burst_limit``, ``logo``,
``unlisted``, ``auth``: :mod:`lasso.profiles_auth`); the rest is the body, which holds
``chains:``. A file with no front matter is the legacy format: chains only. Comments may
precede the opening ``---``.

Every problem in every file is collected first, then one :class:`ConfigError` lists them
all, one ``file:line: key.path: message`` per line, lines being the real lines of the file.
Nothing is half-loaded: callers (``lasso serve``, ``check-config``, a SIGHUP reload) get
either every profile or the error, and keep their last good set on error.

Decisions where the reference is loose or surprising:

- The slug is the file name without extension; a ``slug`` in the front matter must equal
  it. Legacy files take their slug from the file name too (the reference used ``public``).
- ``monitoring.probe_interval_ms`` defaults to 12,000 ms whether or not the ``monitoring``
  section exists (the reference switched to 15,000 when it did).
- ``monitoring.recovery_probe_interval_ms`` (probes of open circuits, default 2,000 ms) must
  be at least :data:`MIN_RECOVERY_PROBE_INTERVAL_MS` (100 ms): a smaller value would let a
  proxy hammer a provider that is down.
- ``lag_threshold_blocks`` and ``backfill_timeout`` are accepted spellings of
  ``lag_alert_threshold_blocks`` and ``backfill_timeout_ms``; giving both is an error.
  ``monitoring.subscribe_new_heads`` and ``monitoring.new_heads_staleness_threshold_ms``
  are read as legacy fallbacks for the ``websocket`` keys.
- Headers: ``api_key`` becomes ``authorization: Bearer <key>``, then ``headers``, then
  ``auth_headers`` are applied; names are lower-cased and the later one wins.
- ``aliases`` and ``url_aliases`` merge into one alias list. Chain keys, aliases, provider
  ids and slugs must be URL-safe (letters, digits, ``_``, ``.``, ``-``).
- ``ui-topology`` and provider ``credentials`` are accepted and not kept.
- An unresolved ``${VAR}`` is an error wherever it appears (the reference only failed on
  provider URLs); ``${VAR:-default}`` and ``${VAR-default}`` give defaults.
"""

from __future__ import annotations

import difflib
import os
import re
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from types import MappingProxyType
from typing import Any, Literal

from lasso.config import (
    MAX_BROADCAST,
    MAX_GET_LOGS_PARALLEL,
    PROFILE_ALIASES,
    STRATEGIES,
    STRATEGY_ALIASES,
    CacheConfig,
    Capabilities,
    ChainConfig,
    ErrorRule,
    GetLogsConfig,
    HedgeConfig,
    Limits,
    MethodOverride,
    ProfileConfig,
    ProviderConfig,
    canonical_strategy,
)
from lasso.profiles_auth import parse_clients
from lasso.profiles_schema import (
    IDENT_RULE,
    Reporter,
    Section,
    YMap,
    YNode,
    YScalar,
    YSeq,
    as_bool,
    as_choice,
    as_float,
    as_ident,
    as_int,
    as_str,
    as_str_list,
    as_strs,
    as_url,
    describe,
    is_ident,
    join,
    read_tree,
    split_front_matter,
    suggest,
)

__all__ = [
    "CATEGORIES",
    "MIN_RECOVERY_PROBE_INTERVAL_MS",
    "RULE_CATEGORIES",
    "ConfigError",
    "ConfigProblem",
    "load_profiles",
    "parse_profile",
]

CATEGORIES = frozenset(
    "core state network node_admin eip1559 eip4844 mempool filters subscriptions batch "
    "debug trace txpool local_only".split()
)
"""Method-registry categories accepted in ``capabilities.unsupported_categories``."""

RULE_CATEGORIES = frozenset(
    "rate_limit capability_violation server_error requires_archival auth_error "
    "network_error client_error invalid_params method_not_found parse_error internal_error "
    "unknown_error method_error chain_error user_error execution_revert block_not_available "
    "invalid_request timeout".split()
)
"""Error categories an ``error_rules`` entry may assign."""

MIN_RECOVERY_PROBE_INTERVAL_MS = 100
"""The smallest ``monitoring.recovery_probe_interval_ms`` a profile may set."""

FRONT_MATTER_KEYS = ("name", "slug", "rps_limit", "burst_limit", "logo", "unlisted", "auth")
CHAIN_KEYS = (
    "chain_id name aliases url_aliases block_time_ms monitoring selection websocket routing "
    "cache ui-topology providers"
).split()
PROVIDER_KEYS = (
    "id name url ws_url priority archival subscribe_new_heads sharing_mode api_key headers "
    "auth_headers credentials capabilities"
).split()
STRATEGY_NAMES = (*STRATEGIES, *STRATEGY_ALIASES)  # as an operator may write them
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong in a profile file. ``line`` is 1-based; 0 means the whole file."""

    file: str
    line: int
    key_path: str  # e.g. chains.ethereum.providers[2].capabilities.limits.max_block_range
    message: str

    def __str__(self) -> str:
        """``file:line: key.path: message``; without a line (0: a whole file or the
        directory) ``file: key.path: message``, never a ``:0:``; no key path, no part."""
        where = f"{self.file}:{self.line}" if self.line > 0 else self.file
        if not self.key_path:
            return f"{where}: {self.message}"
        return f"{where}: {self.key_path}: {self.message}"


class ConfigError(Exception):
    """Profiles could not be loaded; ``problems`` lists every reason, in file order;
    ``loaded``: the profiles of the same directory that had no problem (by slug)."""

    def __init__(
        self,
        problems: Iterable[ConfigProblem],
        loaded: Mapping[str, ProfileConfig] | None = None,
    ) -> None:
        self.problems = list(problems)
        self.loaded = dict(loaded or {})
        super().__init__("\n".join(str(p) for p in self.problems))


def load_profiles(
    directory: str | Path,
    env: Mapping[str, str] | None = None,
    *,
    exclude: Collection[str] = (),
    known_methods: Collection[str] = (),
) -> dict[str, ProfileConfig]:
    """Load every ``*.yml``/``*.yaml`` profile in ``directory`` (not those starting ``.``/``_``).

    Args:
        directory: the profiles directory.
        env: variables for ``${VAR}`` substitution; defaults to ``os.environ``.
        exclude: slugs (file stems) to leave out, unread (``lasso serve`` skips the demo
            profile of the default directory this way).
        known_methods: method names that method names in the profiles are checked
            against for typos (``lasso.kernel.methods.KNOWN_METHODS``); empty: no check.

    Returns:
        Profiles by slug, in file-name order.

    Raises:
        ConfigError: with every problem of every file; nothing is returned then.
    """
    env = os.environ if env is None else env
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError([ConfigProblem(str(root), 0, "", "profiles directory not found")])
    found = sorted(
        p
        for p in root.iterdir()
        if p.suffix in (".yml", ".yaml") and not p.name.startswith((".", "_")) and p.is_file()
    )
    files = [p for p in found if p.stem not in exclude]
    if not files:
        skipped = [p.name for p in found if p.stem in exclude]
        msg = "no profiles (*.yml) found"
        if skipped:
            msg = f"no profiles to serve (skipped: {', '.join(skipped)})"
        raise ConfigError([ConfigProblem(str(root), 0, "", msg)])
    by_slug: defaultdict[str, list[Path]] = defaultdict(list)
    for path in files:
        by_slug[path.stem].append(path)
    problems: list[ConfigProblem] = []
    profiles: dict[str, ProfileConfig] = {}
    for path in files:
        if by_slug[path.stem][0] != path:
            msg = f"duplicate profile slug {path.stem!r} (also {by_slug[path.stem][0].name})"
            problems.append(ConfigProblem(str(path), 0, "slug", msg))
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, ValueError) as exc:
            problems.append(ConfigProblem(str(path), 0, "", f"cannot read file: {exc}"))
            continue
        try:
            profiles[path.stem] = parse_profile(text, str(path), env, known_methods=known_methods)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems, profiles)
    return profiles


def parse_profile(
    text: str,
    filename: str,
    env: Mapping[str, str] | None = None,
    *,
    known_methods: Collection[str] = (),
) -> ProfileConfig:
    """Parse one profile file's text; the slug is ``filename``'s stem.

    Args:
        text: the file's contents.
        filename: reported in problems and kept as ``ProfileConfig.source``.
        env: variables for ``${VAR}`` substitution; defaults to ``os.environ``.
        known_methods: see :func:`load_profiles`.

    Raises:
        ConfigError: with every problem found in the file.
    """
    env = os.environ if env is None else env
    rep = Reporter(known_methods)
    front_text, front_line, body_text, body_line = split_front_matter(text)
    front = None
    if front_text is not None:
        front, _ = read_tree(front_text, rep, env)
    body, body_ok = read_tree(body_text, rep, env)
    profile = _build_profile(
        rep,
        front=front,
        front_line=front_line,
        body=body,
        body_line=body_line,
        body_ok=body_ok,
        stem=PurePath(filename).stem,
        source=filename,
    )
    if rep.problems:
        unique = dict.fromkeys(rep.problems)  # an aliased node may report twice
        ordered = sorted(unique, key=lambda p: p[0])
        raise ConfigError(ConfigProblem(filename, *p) for p in ordered)
    return profile


_API_KEYS_HINT = "replaced by 'auth.keys': a list of {id, key or key_sha256}; see docs/security.md"


def _as_strategy(rep: Reporter, node: YNode, path: str) -> str | None:
    text = as_str(rep, node, path)
    if text is None:
        return None
    canonical = canonical_strategy(text)
    if canonical is None:
        hint = suggest(text, STRATEGY_NAMES) or f"; expected one of {', '.join(STRATEGY_NAMES)}"
        rep.error(node.line, path, f"unknown strategy {text!r}{hint}")
    return canonical


def _given(values: dict[str, Any]) -> dict[str, Any]:
    """Drop unset values, so that :mod:`lasso.config` supplies the defaults."""
    return {k: v for k, v in values.items() if v is not None}


def _build_profile(
    rep: Reporter,
    *,
    front: YNode | None,
    front_line: int,
    body: YNode | None,
    body_line: int,
    body_ok: bool,
    stem: str,
    source: str,
) -> ProfileConfig:
    """Check one file's front matter (``None``: legacy file) and body; build the profile."""
    body_hint = "chains belong in the body, after the closing '---'"
    hints = {"chains": body_hint, "api_keys": _API_KEYS_HINT}
    fm = Section(rep, front, "", FRONT_MATTER_KEYS, line=front_line, hints=hints)
    slug = fm.get("slug", as_str)
    if slug is not None and slug != stem:
        rep.error(fm.key_line("slug"), "slug", f"slug {slug!r} must equal the file name {stem!r}")
    if stem in PROFILE_ALIASES:
        msg = f"profile slug {stem!r} is reserved (an alias of {PROFILE_ALIASES[stem]!r})"
        rep.error(front_line, "slug", msg)
    elif not is_ident(stem):
        rep.error(
            front_line, "slug", f"invalid profile slug {stem!r} (the file name): {IDENT_RULE}"
        )
    chains: dict[str, ChainConfig] = {}
    if body_ok:
        front_hint = "profile settings belong in the front matter between '---' lines"
        hints = dict.fromkeys(FRONT_MATTER_KEYS, front_hint)
        top = Section(rep, body, "", ("chains",), line=body_line, hints=hints)
        if "chains" not in top.entries:
            rep.error(top.line, "chains", "missing required key")
        elif _empty(top, "chains"):
            rep.error(top.key_line("chains"), "chains", "no chains: list at least one chain")
        chains = _build_chains(rep, top)
    values = {
        "name": fm.get("name", as_str) or stem,
        "logo": fm.get("logo", as_str),
        "unlisted": fm.get("unlisted", as_bool),
        **parse_clients(rep, fm, chains if body_ok else None),  # rps_limit, burst_limit, auth
    }
    return ProfileConfig(
        slug=stem, source=source, chains=MappingProxyType(chains), **_given(values)
    )


def _build_chains(rep: Reporter, top: Section) -> dict[str, ChainConfig]:
    """Build every chain, then check chain ids and aliases across the profile."""
    chains: dict[str, ChainConfig] = {}
    id_owner: dict[int, str] = {}
    aliases: list[tuple[str, str, int, str]] = []  # chain key, alias, line, key path
    entries = top.pairs("chains")
    for key, key_line, node, path in entries:
        if not is_ident(key):
            rep.error(key_line, path, f"invalid chain key {key!r}: {IDENT_RULE}")
        elif key in _RESERVED_CHAIN_KEYS:
            msg = f"chain key {key!r} is reserved: it is a route segment"
            rep.error(key_line, path, msg)
        chain, id_line, chain_aliases = _build_chain(rep, node, key, path, key_line)
        chains[key] = chain
        if chain.chain_id in id_owner:
            msg = f"chain_id {chain.chain_id} is already used by chain {id_owner[chain.chain_id]!r}"
            rep.error(id_line, join(path, "chain_id"), msg)
        elif chain.chain_id > 0:
            id_owner[chain.chain_id] = key
        aliases.extend((key, *alias) for alias in chain_aliases)
    seen: dict[str, str] = {}
    for key, alias, line, path in aliases:
        if alias == key:
            continue
        if alias in chains:
            rep.error(line, path, f"alias {alias!r} is the key of another chain")
        elif alias in seen:
            where = "this chain" if seen[alias] == key else f"chain {seen[alias]!r}"
            rep.error(line, path, f"alias {alias!r} is already used by {where}")
        elif alias.isdigit() and id_owner.get(int(alias), key) != key:
            other = id_owner[int(alias)]
            rep.error(line, path, f"alias {alias!r} is the chain_id of chain {other!r}")
        seen.setdefault(alias, key)
    for key, key_line, _, path in entries:
        if key.isdigit() and id_owner.get(int(key), key) != key:
            rep.error(
                key_line, path, f"chain key {key!r} is the chain_id of {id_owner[int(key)]!r}"
            )
    return chains


_MONITORING_KEYS = (
    "probe_interval_ms",
    "recovery_probe_interval_ms",
    "lag_alert_threshold_blocks",
    "lag_threshold_blocks",
    "subscribe_new_heads",  # legacy, see websocket.subscribe_new_heads
    "new_heads_staleness_threshold_ms",  # legacy, see websocket.new_heads_timeout_ms
)
_ROUTING_KEYS = (
    "default_strategy",
    "latency_weighted_beta",
    "hedge",
    "method_overrides",
    "get_logs",
    "broadcast",
    "coalesce",
)
_CACHE_KEYS = ("enabled", "max_bytes", "finality_depth", "realtime_ttl_ms")
_FAILOVER_KEYS = ("max_backfill_blocks", "backfill_timeout_ms", "backfill_timeout")


def _build_chain(
    rep: Reporter, node: YNode, key: str, path: str, key_line: int
) -> tuple[ChainConfig, int, list[tuple[str, int, str]]]:
    """One chain; also returns its ``chain_id`` line and ``(alias, line, path)`` items."""
    sec = Section(rep, node, path, CHAIN_KEYS, line=key_line)
    chain_id = sec.need("chain_id", as_int, 1)
    aliases: list[tuple[str, int, str]] = []
    for item, ipath in sec.each("aliases") + sec.each("url_aliases"):
        if isinstance(item, YScalar) and type(item.value) is int and item.text is None:
            item = YScalar(str(item.value), item.line)  # a decimal alias such as 1
        alias = as_ident(rep, item, ipath, "alias")
        if alias in _RESERVED_CHAIN_KEYS:
            rep.error(item.line, ipath, f"alias {alias!r} is reserved: it is a route segment")
        elif alias is not None:
            aliases.append((alias, item.line, ipath))
    mon = sec.sub("monitoring", _MONITORING_KEYS)
    sel = sec.sub("selection", ("max_lag_blocks", "archival_threshold"))
    ws = sec.sub("websocket", ("subscribe_new_heads", "new_heads_timeout_ms", "failover"))
    failover = ws.sub("failover", _FAILOVER_KEYS)
    topo = sec.sub("ui-topology", ("color", "size"))  # dashboard hints: checked, not kept
    topo.get("color", as_str)
    topo.get("size", as_choice, ("sm", "md", "lg", "xl"))
    subscribe = ws.get("subscribe_new_heads", as_bool)
    heads_timeout = ws.get("new_heads_timeout_ms", as_int, 1)
    providers = _build_providers(rep, sec)
    routing = sec.sub("routing", _ROUTING_KEYS)
    values = {
        "name": sec.get("name", as_str) or key,
        "aliases": tuple(dict.fromkeys(a for a, _, _ in aliases if a != key)),
        "block_time_ms": sec.get("block_time_ms", as_int, 1),
        # 12,000 ms default whether or not the section exists (see the module docstring)
        "probe_interval_ms": mon.get("probe_interval_ms", as_int, 1),
        "recovery_probe_interval_ms": mon.get(
            "recovery_probe_interval_ms", as_int, MIN_RECOVERY_PROBE_INTERVAL_MS
        ),
        "lag_alert_threshold_blocks": mon.either(
            "lag_alert_threshold_blocks", "lag_threshold_blocks", 0
        ),
        "max_lag_blocks": sel.get("max_lag_blocks", as_int, 0),
        "archival_threshold": sel.get("archival_threshold", as_int, 0),
        "subscribe_new_heads": mon.get("subscribe_new_heads", as_bool)
        if subscribe is None
        else subscribe,
        "new_heads_timeout_ms": mon.get("new_heads_staleness_threshold_ms", as_int, 1)
        if heads_timeout is None
        else heads_timeout,
        "max_backfill_blocks": failover.get("max_backfill_blocks", as_int, 0),
        "backfill_timeout_ms": failover.either("backfill_timeout_ms", "backfill_timeout", 1),
        "default_strategy": routing.get("default_strategy", _as_strategy),
        "latency_weighted_beta": routing.get("latency_weighted_beta", as_float),
        "hedge": _as_hedge(rep, routing, allow_false=True) or None,  # false: no hedging
        "method_overrides": MappingProxyType(
            _build_overrides(rep, routing, [p.id for p in providers])
        ),
        **_consistency(rep, routing),
        "coalesce": routing.get("coalesce", as_bool),
        "cache": _cache_config(sec.sub("cache", _CACHE_KEYS)),
    }
    chain = ChainConfig(
        key=key, chain_id=chain_id or 0, providers=tuple(providers), **_given(values)
    )
    return chain, sec.key_line("chain_id"), aliases


def _cache_config(sec: Section) -> CacheConfig:
    """The chain's ``cache`` section (CONTRACT §7); absent keys take the defaults."""
    values = {
        "enabled": sec.get("enabled", as_bool),
        "max_bytes": sec.get("max_bytes", as_int, 0),
        "finality_depth": sec.get("finality_depth", as_int, 1),
        "realtime_ttl_ms": sec.get("realtime_ttl_ms", as_int, 0),
    }
    return CacheConfig(**_given(values))


def _build_overrides(
    rep: Reporter, routing: Section, provider_ids: list[str]
) -> dict[str, MethodOverride]:
    overrides: dict[str, MethodOverride] = {}
    for method, line, node, path in routing.pairs("method_overrides"):
        _check_method(rep, method, line, path)
        sec = Section(rep, node, path, ("strategy", "providers", "hedge"), line=line)
        names: list[str] = []
        for item, ipath in sec.each("providers"):
            pid = as_str(rep, item, ipath)
            if pid is not None and pid not in provider_ids:
                hint = suggest(pid, provider_ids)
                rep.error(item.line, ipath, f"unknown provider {pid!r} in this chain{hint}")
            elif pid in names:
                rep.error(item.line, ipath, f"provider {pid!r} is listed twice")
            elif pid is not None:
                names.append(pid)
        strategy = sec.get("strategy", _as_strategy)
        hedge = _as_hedge(rep, sec, allow_false=True)
        overrides[method] = MethodOverride(strategy=strategy, providers=tuple(names), hedge=hedge)
    return overrides


def _consistency(rep: Reporter, routing: Section) -> dict[str, Any]:
    """``routing.get_logs.{max_range, max_parallel}`` and ``routing.broadcast`` (§8)."""
    logs = routing.sub("get_logs", ("max_range", "max_parallel"))
    values = _given(
        {
            "max_range": logs.get("max_range", as_int, 1),
            "max_parallel": logs.get("max_parallel", as_int, 1),
        }
    )
    if values.get("max_parallel", 1) > MAX_GET_LOGS_PARALLEL:
        msg = f"must be at most {MAX_GET_LOGS_PARALLEL}, got {values.pop('max_parallel')}"
        rep.error(logs.key_line("max_parallel"), join(logs.path, "max_parallel"), msg)
    broadcast = routing.get("broadcast", as_int, 1)
    if broadcast is not None and broadcast > MAX_BROADCAST:
        msg = f"must be at most {MAX_BROADCAST}, got {broadcast}"
        rep.error(routing.key_line("broadcast"), join(routing.path, "broadcast"), msg)
        broadcast = None
    return _given({"get_logs": GetLogsConfig(**values), "broadcast": broadcast})


_HEDGE_KEYS = (
    "delay_ms", "quantile", "min_delay_ms", "max_delay_ms", "max_hedges", "budget_percent"
)  # fmt: skip


def _as_hedge(
    rep: Reporter, parent: Section, *, allow_false: bool
) -> HedgeConfig | Literal[False] | None:
    """``hedge:`` under ``parent`` (CONTRACT §7): a mapping, or ``false`` where
    ``allow_false`` (a method override turns the chain's hedging off for itself; at the
    chain level it says "no hedging", as leaving the key out does); ``None`` when absent."""
    node = parent.node("hedge")
    path = join(parent.path, "hedge")
    if node is None:
        return None
    if isinstance(node, YScalar) and node.value is False and allow_false:
        return False
    if isinstance(node, YScalar) and not node.bad:
        want = "a mapping or false" if allow_false else "a mapping"
        rep.error(node.line, path, f"expected {want}, got {describe(node)}")
        return None
    sec = Section(rep, node, path, _HEDGE_KEYS, line=parent.key_line("hedge"))
    delay = sec.get("delay_ms", as_float)
    quantile = sec.get("quantile", as_float)
    values: dict[str, Any] = {
        "delay_ms": delay,
        "quantile": quantile,
        "min_delay_ms": sec.get("min_delay_ms", as_float),
        "max_delay_ms": sec.get("max_delay_ms", as_float),
        "max_hedges": sec.get("max_hedges", as_int, 1),
        "budget_percent": sec.get("budget_percent", as_float),
    }
    if delay is not None and sec.node("quantile") is not None:
        rep.error(sec.key_line("quantile"), join(path, "quantile"), "conflicts with 'delay_ms'")
    elif sec.ok and sec.node("delay_ms") is None and sec.node("quantile") is None:
        rep.error(sec.line, path, "needs 'delay_ms' (fixed) or 'quantile' (adaptive)")
    if quantile is not None and quantile >= 1:
        rep.error(
            sec.key_line("quantile"), join(path, "quantile"), f"must be below 1, got {quantile}"
        )
    for key in ("min_delay_ms", "max_delay_ms"):
        if sec.node(key) is not None and sec.node("quantile") is None:
            rep.error(sec.key_line(key), join(path, key), "applies to the 'quantile' form only")
    low, high = values["min_delay_ms"], values["max_delay_ms"]
    if low is not None and high is not None and low > high:
        rep.error(
            sec.key_line("min_delay_ms"),
            join(path, "min_delay_ms"),
            f"is above max_delay_ms ({high:g})",
        )
    if (values["max_hedges"] or 0) > 2:
        rep.error(
            sec.key_line("max_hedges"),
            join(path, "max_hedges"),
            f"must be at most 2 (a read goes to at most 3 providers), got {values['max_hedges']}",
        )
    budget = values["budget_percent"]
    if budget is not None and budget > 100:
        rep.error(
            sec.key_line("budget_percent"),
            join(path, "budget_percent"),
            f"must be at most 100, got {budget:g}",
        )
    return HedgeConfig(**_given(values))


_CAPABILITY_KEYS = ("unsupported_categories", "unsupported_methods", "limits", "error_rules")
_LIMIT_KEYS = ("max_block_range", "max_block_age", "block_age_methods")


def _empty(sec: Section, key: str) -> bool:
    """True when ``key`` is present but null, ``[]`` or ``{}`` (a wrong type is reported
    elsewhere)."""
    node = sec.node(key)
    if node is None:
        return key in sec.entries
    return (isinstance(node, YSeq) and not node.items) or (
        isinstance(node, YMap) and not node.entries
    )


def _build_providers(rep: Reporter, chain: Section) -> list[ProviderConfig]:
    # A chain without providers could serve nothing: missing, null or [] is one error,
    # at the key's line (the chain's when the key is missing).
    if chain.ok and ("providers" not in chain.entries or _empty(chain, "providers")):
        line = chain.key_line("providers")
        rep.error(line, join(chain.path, "providers"), "no providers: list at least one")
    providers: list[ProviderConfig] = []
    first_line: dict[str, int] = {}
    for i, (item, path) in enumerate(chain.each("providers")):
        sec = Section(rep, item, path, PROVIDER_KEYS, line=item.line)
        pid = sec.need("id", as_ident, "provider id")
        display = pid or f"#{i}"  # stands in for a bad id while the rest is checked
        if pid in first_line:
            msg = f"duplicate provider id {pid!r} (first at line {first_line[pid]})"
            rep.error(sec.key_line("id"), join(path, "id"), msg)
        elif pid is not None:
            first_line[pid] = sec.key_line("id")
        if sec.ok and sec.node("url") is None and sec.node("ws_url") is None:
            rep.error(sec.line, path, "needs 'url' or 'ws_url' (or both)")
        values = {
            "name": sec.get("name", as_str) or display,
            "url": sec.get("url", as_url, ("http", "https")),
            "ws_url": sec.get("ws_url", as_url, ("ws", "wss")),
            "priority": sec.get("priority", as_int),
            "archival": sec.get("archival", as_bool),
            "subscribe_new_heads": sec.get("subscribe_new_heads", as_bool),
            "sharing_mode": sec.get("sharing_mode", as_choice, ("isolated", "auto")),
            "headers": MappingProxyType(_headers(sec)),
            "capabilities": _capabilities(rep, sec.sub("capabilities", _CAPABILITY_KEYS)),
        }
        providers.append(ProviderConfig(id=display, **_given(values)))
    return providers


_RESERVED_CHAIN_KEYS = frozenset(
    {
        "provider",
        "profile",
        "fastest",
        "load-balanced",
        "round-robin",
        "latency-weighted",
        "load_balanced",
        "latency_weighted",
        "priority",
    }
)
_MANAGED_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "host"})


def _headers(sec: Section) -> dict[str, str]:
    """``api_key``, then ``headers``, then ``auth_headers``: later names win."""
    headers: dict[str, str] = {}
    api_key = sec.get("api_key", as_str)
    if api_key is not None:
        headers["authorization"] = f"Bearer {api_key}"
    for name, line, node, path in sec.pairs("headers") + sec.pairs("auth_headers"):
        value = as_str(sec.rep, node, path)
        if not _HEADER_NAME.fullmatch(name):
            sec.rep.error(line, path, f"invalid header name {name!r}")
        elif name.lower() in _MANAGED_HEADERS:
            sec.rep.error(
                line, path, f"header {name!r} is set by Lasso itself and cannot be configured"
            )
        elif value is not None and any(c in value for c in "\r\n\0"):
            sec.rep.error(node.line, path, "header value must not contain line breaks")
        elif value is not None:
            headers[name.lower()] = value
    return headers


def _capabilities(rep: Reporter, caps: Section) -> Capabilities:
    categories = caps.get("unsupported_categories", as_str_list) or []
    for category, item, path in categories:
        if category not in CATEGORIES:
            hint = suggest(category, CATEGORIES)
            rep.error(item.line, path, f"unknown method category {category!r}{hint}")
    methods = caps.get("unsupported_methods", as_str_list) or []
    for name, item, path in methods:
        _check_method(rep, name, item.line, path)
    lim = caps.sub("limits", _LIMIT_KEYS)
    limits = {
        "max_block_range": lim.get("max_block_range", as_int, 0),
        "max_block_age": lim.get("max_block_age", as_int, 0),
        "block_age_methods": lim.get("block_age_methods", as_strs),
    }
    rules = (_error_rule(rep, item, path) for item, path in caps.each("error_rules"))
    return Capabilities(
        unsupported_categories=frozenset(c for c, _, _ in categories if c in CATEGORIES),
        unsupported_methods=frozenset(name for name, _, _ in methods),
        limits=Limits(**_given(limits)),
        error_rules=tuple(rule for rule in rules if rule is not None),
    )


def _check_method(rep: Reporter, method: str, line: int, path: str) -> None:
    """A method name that is not a known one but close to one is a typo: report it.

    Names far from every known method pass: providers have their own
    (``alchemy_getTokenBalances``), and Lasso routes them like any other. The known names
    come from the caller (``known_methods``: the routing kernel's registry, which this
    module may not import); without them there is no check.
    """
    known = rep.known_methods
    if not known or method in known:
        return
    close = difflib.get_close_matches(method, known, n=1, cutoff=0.85)
    if close:
        rep.error(line, path, f"unknown method {method!r}, did you mean {close[0]!r}?")


def _error_rule(rep: Reporter, node: YNode, path: str) -> ErrorRule | None:
    sec = Section(rep, node, path, ("code", "message_contains", "category"), line=node.line)
    code = sec.get("code", as_int)
    if isinstance(sec.node("message_contains"), YSeq):
        needles = sec.get("message_contains", as_strs) or ()
    else:
        needle = sec.get("message_contains", as_str)
        needles = () if needle is None else (needle,)
    if sec.ok and sec.node("code") is None and sec.node("message_contains") is None:
        rep.error(sec.line, path, "needs 'code' or 'message_contains'")
    category = sec.need("category", as_choice, RULE_CATEGORIES)
    if category is None:
        return None
    needles = tuple(n.lower() for n in needles)
    return ErrorRule(code=code, message_contains=needles, category=category)
