"""Tests for lasso.profiles: loading, validation messages and the shipped profiles."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lasso.config import HedgeConfig, ProfileConfig
from lasso.kernel.classify import Category
from lasso.kernel.methods import KNOWN_METHODS, METHODS_BY_CATEGORY
from lasso.profiles import (
    CATEGORIES,
    RULE_CATEGORIES,
    ConfigError,
    ConfigProblem,
    load_profiles,
    parse_profile,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "config" / "profiles"

MINIMAL = """\
---
name: Test
---
chains:
  ethereum:
    chain_id: 1
    providers:
      - id: a
        url: http://a.example
"""


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line of the ``nth`` line containing ``needle``."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    return hits[nth - 1]


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> ProfileConfig:
    (tmp_path / "p.yml").write_text(dedent(text))
    return load_profiles(tmp_path, env or {})["p"]


def errors(
    tmp_path: Path, text: str, env: dict[str, str] | None = None, name: str = "p.yml"
) -> list[tuple[int, str, str]]:
    """Write ``text`` as a profile, load the directory, return ``(line, key path, message)``."""
    (tmp_path / name).write_text(dedent(text))
    with pytest.raises(ConfigError) as info:
        load_profiles(tmp_path, env or {})
    return [(p.line, p.key_path, p.message) for p in info.value.problems]


P = "providers: [{id: p, url: http://p.example}]"
"""One provider, flow style: every chain must list at least one."""


def chain(body: str) -> str:
    """A profile whose ethereum chain has ``body`` (indented by 4) after ``chain_id: 1``,
    then (unless ``body`` has its own) one provider."""
    text = "chains:\n  ethereum:\n    chain_id: 1\n" + textwrap.indent(dedent(body), "    ")
    return text if "providers:" in body else text.rstrip("\n") + f"\n    {P}\n"


def provider(body: str) -> str:
    """A profile with one provider ``a`` whose keys ``body`` follow ``id`` and ``url``."""
    head = "chains:\n  ethereum:\n    chain_id: 1\n    providers:\n      - id: a\n"
    return head + "        url: http://a.example\n" + textwrap.indent(dedent(body), "        ")


# --- shipped profiles ------------------------------------------------------------------


def test_shipped_profiles_load_without_problems() -> None:
    """config/profiles loads cleanly with an empty environment."""
    profiles = load_profiles(SHIPPED, {})
    assert set(profiles) == {"public", "demo"}
    public = profiles["public"]
    assert public.name == "Public"
    assert {k: c.chain_id for k, c in public.chains.items()} == {
        "ethereum": 1,
        "base": 8453,
        "arbitrum": 42161,
    }
    eth = public.chains["ethereum"]
    assert eth.aliases == ("eth", "mainnet")
    assert eth.block_time_ms == 12000
    assert eth.max_lag_blocks == 1
    assert public.chains["base"].max_lag_blocks == 5
    assert public.chains["arbitrum"].max_lag_blocks == 10
    assert public.chains["arbitrum"].aliases == ("arb", "arbitrum-one")
    cloudflare = eth.provider("cloudflare")
    assert cloudflare is not None and cloudflare.archival is False
    for c in public.chains.values():
        assert c.providers, c.key
        assert any(p.ws_url for p in c.providers), c.key
        for p in c.providers:
            assert p.url is not None and p.url.startswith("https://")
            assert not p.headers  # keyless


def test_shipped_drpc_rules_classify_rate_limits() -> None:
    """dRPC providers carry error rules for code 30 and the free-tier message."""
    public = load_profiles(SHIPPED, {})["public"]
    for c in public.chains.values():
        drpc = c.provider("drpc")
        assert drpc is not None
        rules = drpc.capabilities.error_rules
        assert [(r.code, r.category) for r in rules][0] == (30, "rate_limit")
        assert "free tier" in rules[1].message_contains


def test_shipped_demo_profile() -> None:
    """The demo profile points five ethereum and three base providers at the simulator."""
    demo = load_profiles(SHIPPED, {})["demo"]
    assert demo.name == "Demo (simulated providers)"
    eth = demo.chains["ethereum"]
    assert (eth.chain_id, eth.block_time_ms, eth.max_lag_blocks) == (1, 2000, 2)
    assert eth.aliases == ("eth", "mainnet")
    ids = [p.id for p in eth.providers]
    assert ids == ["alpha", "bravo", "charlie", "delta", "echo"]
    assert [p.url for p in eth.providers] == [f"http://127.0.0.1:{4101 + i}" for i in range(5)]
    assert [p.ws_url for p in eth.providers] == [f"ws://127.0.0.1:{4101 + i}/ws" for i in range(5)]
    assert len({p.priority for p in eth.providers}) == 5
    assert [p.id for p in eth.providers if not p.archival] == ["echo"]
    delta = eth.provider("delta")
    assert delta is not None and delta.capabilities.limits.max_block_range == 500
    base = demo.chains["base"]
    assert (base.chain_id, base.block_time_ms) == (8453, 1000)
    assert [p.url for p in base.providers] == [f"http://127.0.0.1:{4111 + i}" for i in range(3)]


def test_packaged_demo_is_a_byte_identical_copy() -> None:
    """src/lasso/sim/demo.yml is the same file as config/profiles/demo.yml."""
    packaged = ROOT / "src" / "lasso" / "sim" / "demo.yml"
    assert packaged.read_bytes() == (SHIPPED / "demo.yml").read_bytes()


def test_demo_urls_follow_the_environment() -> None:
    """LASSO_SIM_* variables override the demo's default simulator addresses."""
    env = {"LASSO_SIM_ALPHA_URL": "http://10.0.0.1:9000", "LASSO_SIM_BASE_BRAVO_WS": "wss://x"}
    demo = load_profiles(SHIPPED, env)["demo"]
    alpha = demo.chains["ethereum"].provider("alpha")
    bravo = demo.chains["base"].provider("bravo-base")
    assert alpha is not None and alpha.url == "http://10.0.0.1:9000"
    assert bravo is not None and bravo.ws_url == "wss://x"


def test_resolve_chain_by_key_alias_and_id() -> None:
    """ProfileConfig.resolve_chain finds a chain by key, alias or decimal chain id."""
    public = load_profiles(SHIPPED, {})["public"]
    for ident, key in [
        ("ethereum", "ethereum"),
        ("eth", "ethereum"),
        ("mainnet", "ethereum"),
        ("1", "ethereum"),
        ("8453", "base"),
        ("arb", "arbitrum"),
        ("arbitrum-one", "arbitrum"),
        ("42161", "arbitrum"),
    ]:
        found = public.resolve_chain(ident)
        assert found is not None and found.key == key, ident
    assert public.resolve_chain("solana") is None
    assert public.resolve_chain("137") is None


def test_category_lists_match_the_kernel() -> None:
    """Accepted categories are the method registry's; rule categories are classifier ones."""
    assert frozenset(METHODS_BY_CATEGORY) == CATEGORIES
    assert {c.value for c in Category} >= RULE_CATEGORIES


# --- files and front matter ------------------------------------------------------------


def test_minimal_profile_takes_config_defaults(tmp_path: Path) -> None:
    """Absent keys fall back to the lasso.config defaults."""
    profile = load(tmp_path, MINIMAL)
    assert (profile.slug, profile.name, profile.rps_limit, profile.burst_limit) == (
        "p",
        "Test",
        None,
        None,
    )
    assert profile.auth is None and profile.limit is None and not profile.gated
    assert profile.source == str(tmp_path / "p.yml")
    eth = profile.chains["ethereum"]
    assert (eth.name, eth.aliases, eth.block_time_ms) == ("ethereum", (), None)
    assert (eth.probe_interval_ms, eth.lag_alert_threshold_blocks) == (12000, 3)
    assert eth.recovery_probe_interval_ms == 2000
    assert (eth.max_lag_blocks, eth.archival_threshold) == (None, 128)
    assert (eth.subscribe_new_heads, eth.new_heads_timeout_ms) == (True, 42000)
    assert (eth.max_backfill_blocks, eth.backfill_timeout_ms) == (100, 30000)
    assert (eth.default_strategy, eth.latency_weighted_beta) == ("load-balanced", 3.0)
    (a,) = eth.providers
    assert (a.id, a.name, a.url, a.ws_url, a.priority, a.archival) == (
        "a",
        "a",
        "http://a.example",
        None,
        100,
        True,
    )
    assert a.subscribe_new_heads is None and a.sharing_mode == "auto" and not a.headers


def test_front_matter_fields(tmp_path: Path) -> None:
    """Front matter sets name, limits, logo and unlisted."""
    text = """\
        ---
        name: Team
        slug: p
        rps_limit: 7
        burst_limit: 9
        logo: https://example.com/logo.svg
        unlisted: true
        ---
        chains:
          ethereum: {chain_id: 1, providers: [{id: a, url: "http://a.example"}]}
    """
    profile = load(tmp_path, text)
    assert (profile.name, profile.rps_limit, profile.burst_limit) == ("Team", 7, 9)
    assert profile.logo == "https://example.com/logo.svg"
    assert profile.unlisted is True and profile.gated
    assert list(profile.chains) == ["ethereum"]


def test_legacy_file_without_front_matter(tmp_path: Path) -> None:
    """A file without front matter is chains only; its slug and name are the file stem."""
    (tmp_path / "legacy.yaml").write_text(MINIMAL.split("---\n")[2])
    profile = load_profiles(tmp_path, {})["legacy"]
    assert (profile.slug, profile.name) == ("legacy", "legacy")
    assert profile.chains["ethereum"].chain_id == 1


def test_comments_may_precede_front_matter(tmp_path: Path) -> None:
    """Leading comments before the opening fence still count as front matter."""
    profile = load(tmp_path, "# a profile\n\n" + MINIMAL)
    assert profile.name == "Test"


def test_skips_hidden_and_underscore_files(tmp_path: Path) -> None:
    """Files starting with '.' or '_' and non-YAML files are ignored."""
    (tmp_path / "p.yml").write_text(MINIMAL)
    for name in (".hidden.yml", "_draft.yml", "notes.txt"):
        (tmp_path / name).write_text("not: [valid")
    assert list(load_profiles(tmp_path, {})) == ["p"]


def test_slug_must_equal_file_name(tmp_path: Path) -> None:
    """A front-matter slug that differs from the file stem is an error on its line."""
    text = "---\nname: X\nslug: other\n---\n" + MINIMAL.split("---\n")[2]
    assert errors(tmp_path, text) == [(3, "slug", "slug 'other' must equal the file name 'p'")]


def test_duplicate_slugs_across_extensions(tmp_path: Path) -> None:
    """p.yml and p.yaml would both be profile 'p': an error."""
    (tmp_path / "p.yml").write_text(MINIMAL)
    (tmp_path / "p.yaml").write_text(MINIMAL)
    with pytest.raises(ConfigError) as info:
        load_profiles(tmp_path, {})
    (problem,) = info.value.problems
    assert problem.file == str(tmp_path / "p.yml")
    assert problem.message == "duplicate profile slug 'p' (also p.yaml)"


def test_reserved_and_invalid_slugs(tmp_path: Path) -> None:
    """'default' is reserved (an alias of public) and slugs must be URL-safe."""
    (tmp_path / "default.yml").write_text(MINIMAL)
    (tmp_path / "my profile.yml").write_text(MINIMAL)
    with pytest.raises(ConfigError) as info:
        load_profiles(tmp_path, {})
    messages = [p.message for p in info.value.problems]
    assert messages[0] == "profile slug 'default' is reserved (an alias of 'public')"
    assert messages[1].startswith("invalid profile slug 'my profile'")


def test_missing_and_empty_directories(tmp_path: Path) -> None:
    """A missing directory or one without profiles is a ConfigError, not a crash."""
    with pytest.raises(ConfigError, match="profiles directory not found"):
        load_profiles(tmp_path / "nope", {})
    with pytest.raises(ConfigError, match=r"no profiles \(\*\.yml\) found"):
        load_profiles(tmp_path, {})


def test_problem_and_error_formatting() -> None:
    """ConfigProblem prints file:line: key: message; ConfigError one line per problem."""
    a = ConfigProblem("p.yml", 4, "chains.x.chain_id", "missing required key")
    b = ConfigProblem("q.yml", 2, "", "YAML syntax error: boom")
    assert str(a) == "p.yml:4: chains.x.chain_id: missing required key"
    assert str(b) == "q.yml:2: YAML syntax error: boom"
    error = ConfigError([a, b])
    assert isinstance(error, Exception) and error.problems == [a, b]
    assert str(error).splitlines() == [str(a), str(b)]


def test_a_problem_without_a_line_prints_no_zero() -> None:
    """A whole-file or directory problem (line 0) prints as file: key: message, never
    file:0:, so nobody looks for a line 0."""
    assert str(ConfigProblem("d/p.yml", 0, "slug", "taken")) == "d/p.yml: slug: taken"
    assert str(ConfigProblem("d", 0, "", "no profiles")) == "d: no profiles"


def test_problems_from_every_file_are_collected(tmp_path: Path) -> None:
    """One ConfigError lists the problems of all files, each with its own file name."""
    (tmp_path / "a.yml").write_text(f"chains:\n  x:\n    chain_id: -1\n    {P}\n")
    (tmp_path / "b.yml").write_text(f"chains:\n  y: {{{P}}}\n")
    with pytest.raises(ConfigError) as info:
        load_profiles(tmp_path, {})
    assert [str(p) for p in info.value.problems] == [
        f"{tmp_path / 'a.yml'}:3: chains.x.chain_id: must be positive, got -1",
        f"{tmp_path / 'b.yml'}:2: chains.y.chain_id: missing required key",
    ]


def test_parse_profile_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """parse_profile substitutes from os.environ when no env is given."""
    monkeypatch.setenv("LASSO_TEST_URL", "https://from-env.example")
    text = MINIMAL.replace("http://a.example", "${LASSO_TEST_URL}")
    profile = parse_profile(text, "dir/x.yml")
    assert profile.slug == "x" and profile.source == "dir/x.yml"
    assert profile.chains["ethereum"].providers[0].url == "https://from-env.example"


# --- YAML-level errors -----------------------------------------------------------------


def test_yaml_syntax_error_reports_the_file_line(tmp_path: Path) -> None:
    """A syntax error in the body is reported at its real line, front matter included."""
    text = MINIMAL + "    oops: [unclosed\n"
    ((line, path, message),) = errors(tmp_path, text)
    assert line == 11 and path == ""
    assert message.startswith("YAML syntax error:")


def test_yaml_syntax_error_in_front_matter(tmp_path: Path) -> None:
    """A syntax error inside the front matter keeps its line; the body is still checked."""
    text = f"---\nname: [x\n---\nchains:\n  e:\n    chain_id: zero\n    {P}\n"
    found = errors(tmp_path, text)
    assert [line for line, _, _ in found] == [2, 6]
    assert found[0][2].startswith("YAML syntax error")
    assert found[1] == (6, "chains.e.chain_id", "expected integer, got string 'zero'")


def test_duplicate_yaml_keys(tmp_path: Path) -> None:
    """A key repeated in one mapping is an error at the second occurrence."""
    text = provider("priority: 1\narchival: true\npriority: 2\n")
    assert errors(tmp_path, text) == [
        (
            line_of(text, "priority", 2),
            "chains.ethereum.providers[0].priority",
            f"duplicate key (first at line {line_of(text, 'priority')})",
        )
    ]


def test_unsafe_tags_are_refused(tmp_path: Path) -> None:
    """Python and custom tags are never constructed (SafeLoader only) and are reported."""
    text = provider("""\
        name: !!python/object/apply:os.system ['echo pwned']
        api_key: !!python/name:os.system ''
        headers: !custom {a: b}
    """)
    p = "chains.ethereum.providers[0]"
    found = errors(tmp_path, text)
    assert found[0] == (
        7,
        f"{p}.name",
        "unsupported YAML tag 'tag:yaml.org,2002:python/object/apply:os.system'",
    )
    assert found[1][:2] == (8, f"{p}.api_key")
    assert found[1][2].startswith("cannot read value: could not determine a constructor")
    assert found[2] == (9, f"{p}.headers", "unsupported YAML tag '!custom'")
    assert len(found) == 3


def test_recursive_and_exploding_aliases(tmp_path: Path) -> None:
    """Recursive aliases and exponential alias expansion are errors, not hangs."""
    assert errors(tmp_path, "chains: &a\n  x: *a\n") == [
        (1, "chains.x", "recursive alias"),
    ]
    laughs = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 8):
        prev = chr(ord("a") + i - 1)
        laughs.append(f"{chr(ord('a') + i)}: &{chr(ord('a') + i)} [{', '.join(['*' + prev] * 10)}]")
    text = "chains:\n" + "\n".join("  " + line for line in laughs) + "\n"
    ((_, _, message),) = errors(tmp_path, text)
    assert message == "document too large (aliases expand too far)"


def test_anchors_and_merge_keys(tmp_path: Path) -> None:
    """YAML anchors and '<<' merges work; explicit keys win over merged ones."""
    text = """\
        chains:
          ethereum:
            chain_id: 1
            providers:
              - &base {id: a, url: "http://a.example", priority: 5, archival: false}
              - <<: *base
                id: b
                priority: 6
    """
    profile = load(tmp_path, text)
    a, b = profile.chains["ethereum"].providers
    assert (a.id, a.priority, a.archival) == ("a", 5, False)
    assert (b.id, b.url, b.priority, b.archival) == ("b", "http://a.example", 6, False)


# --- schema errors ---------------------------------------------------------------------


def test_unknown_keys_suggest_close_names(tmp_path: Path) -> None:
    """Unknown keys are errors with a did-you-mean when a valid key is close."""
    text = dedent("""\
        chains:
          ethereum:
            chain_id: 1
            selection: {max_lag_block: 2}
            providers:
              - id: a
                url: http://a.example
                prioirty: 3
                capabilities:
                  limits:
                    max_block_rnage: 10
                zzz: 1
    """)
    assert errors(tmp_path, text) == [
        (
            4,
            "chains.ethereum.selection.max_lag_block",
            "unknown key 'max_lag_block', did you mean 'max_lag_blocks'?",
        ),
        (
            8,
            "chains.ethereum.providers[0].prioirty",
            "unknown key 'prioirty', did you mean 'priority'?",
        ),
        (
            11,
            "chains.ethereum.providers[0].capabilities.limits.max_block_rnage",
            "unknown key 'max_block_rnage', did you mean 'max_block_range'?",
        ),
        (12, "chains.ethereum.providers[0].zzz", "unknown key 'zzz'"),
    ]


def test_settings_in_the_wrong_part_get_a_hint(tmp_path: Path) -> None:
    """Front-matter keys in the body, or chains in the front matter, explain where to go."""
    text = "---\nchains: {}\n---\nname: X\nchains: {}\n"
    assert errors(tmp_path, text) == [
        (2, "chains", "unknown key 'chains' (chains belong in the body, after the closing '---')"),
        (
            4,
            "name",
            "unknown key 'name' (profile settings belong in the front matter between '---' lines)",
        ),
        (5, "chains", "no chains: list at least one chain"),
    ]


def test_wrong_types(tmp_path: Path) -> None:
    """Type errors name the expected type and what was found; booleans are not integers."""
    text = provider("""\
        name: 123
        priority: abc
        archival: 1
        subscribe_new_heads: "yes"
        headers: [x]
    """).replace("chain_id: 1", "chain_id: true")
    p = "chains.ethereum.providers[0]"
    assert errors(tmp_path, text) == [
        (3, "chains.ethereum.chain_id", "expected integer, got boolean true"),
        (7, f"{p}.name", "expected string, got integer 123 (quote it)"),
        (8, f"{p}.priority", "expected integer, got string 'abc'"),
        (9, f"{p}.archival", "expected boolean (true/false), got integer 1"),
        (10, f"{p}.subscribe_new_heads", "expected boolean (true/false), got string 'yes'"),
        (11, f"{p}.headers", "expected mapping, got list"),
    ]


def test_chain_id_rules(tmp_path: Path) -> None:
    """chain_id is required, a positive integer, and unique in the profile."""
    text = dedent(f"""\
        chains:
          a:
            name: A
            {P}
          b:
            chain_id: 0
            {P}
          c:
            chain_id: 1.5
            {P}
          d:
            chain_id: 10
            {P}
          e:
            chain_id: 10
            {P}
    """)
    assert errors(tmp_path, text) == [
        (2, "chains.a.chain_id", "missing required key"),
        (6, "chains.b.chain_id", "must be positive, got 0"),
        (9, "chains.c.chain_id", "expected integer, got float 1.5"),
        (15, "chains.e.chain_id", "chain_id 10 is already used by chain 'd'"),
    ]


def test_alias_rules(tmp_path: Path) -> None:
    """Aliases merge with url_aliases and may not clash with other chains' names or ids."""
    text = dedent(f"""\
        chains:
          ethereum:
            chain_id: 1
            aliases: [eth]
            url_aliases: [mainnet, 1]
            {P}
          base:
            chain_id: 8453
            {P}
            aliases: [eth, ethereum, 1, "bad alias", base]
    """)
    assert errors(tmp_path, text) == [
        (
            10,
            "chains.base.aliases[3]",
            "invalid alias 'bad alias': use letters, digits, '_', '.', '-' (at most 128)",
        ),
        (10, "chains.base.aliases[0]", "alias 'eth' is already used by chain 'ethereum'"),
        (10, "chains.base.aliases[1]", "alias 'ethereum' is the key of another chain"),
        (10, "chains.base.aliases[2]", "alias '1' is already used by chain 'ethereum'"),
    ]
    good = load(tmp_path, text.replace('[eth, ethereum, 1, "bad alias", base]', "[b]"))
    assert good.chains["ethereum"].aliases == ("eth", "mainnet", "1")
    assert good.chains["base"].aliases == ("b",)


def test_decimal_alias_may_not_be_another_chains_id(tmp_path: Path) -> None:
    """A decimal alias equal to another chain's chain_id is an error."""
    text = f"chains:\n  a:\n    chain_id: 1\n    {P}\n  b:\n    chain_id: 2\n    {P}\n"
    text += "    aliases: ['1']\n"
    assert errors(tmp_path, text) == [
        (8, "chains.b.aliases[0]", "alias '1' is the chain_id of chain 'a'"),
    ]


def test_duplicate_provider_ids(tmp_path: Path) -> None:
    """Provider ids are required and unique within a chain."""
    text = dedent("""\
        chains:
          ethereum:
            chain_id: 1
            providers:
              - id: a
                url: http://a.example
              - url: http://b.example
              - id: a
                url: http://c.example
    """)
    assert errors(tmp_path, text) == [
        (7, "chains.ethereum.providers[1].id", "missing required key"),
        (8, "chains.ethereum.providers[2].id", "duplicate provider id 'a' (first at line 5)"),
    ]


def test_provider_urls(tmp_path: Path) -> None:
    """A provider needs url or ws_url, with http(s) and ws(s) schemes respectively."""
    text = dedent("""\
        chains:
          ethereum:
            chain_id: 1
            providers:
              - id: a
                name: no urls
              - id: b
                url: ws://b.example
                ws_url: https://b.example
              - id: c
                ws_url: wss://c.example
    """)
    p = "chains.ethereum.providers"
    assert errors(tmp_path, text) == [
        (5, f"{p}[0]", "needs 'url' or 'ws_url' (or both)"),
        (8, f"{p}[1].url", "must be a URL starting with http:// or https://, got 'ws://b.example'"),
        (
            9,
            f"{p}[1].ws_url",
            "must be a URL starting with ws:// or wss://, got 'https://b.example'",
        ),
    ]


def test_url_ports_and_hosts(tmp_path: Path) -> None:
    """A port out of range or not a number, and a URL without a host, say exactly that."""
    text = dedent("""\
        chains:
          ethereum:
            chain_id: 1
            providers:
              - {id: a, url: "http://127.0.0.1:99999"}
              - {id: b, url: "https://rpc.example:0/v1"}
              - {id: c, url: "http://rpc.example:80a"}
              - {id: d, url: "http://:8545"}
              - {id: e, ws_url: "wss://[::1]:70000/ws"}
              - {id: f, url: "http://rpc.example:"}
              - {id: g, url: "http://[::1]:8545", ws_url: "ws://user:pw@h.example:8546/ws"}
    """)
    p = "chains.ethereum.providers"
    assert errors(tmp_path, text) == [
        (5, f"{p}[0].url", "port 99999 is out of range (1-65535) in 'http://127.0.0.1:99999'"),
        (6, f"{p}[1].url", "port 0 is out of range (1-65535) in 'https://rpc.example:0/v1'"),
        (7, f"{p}[2].url", "port '80a' is not a number in 'http://rpc.example:80a'"),
        (8, f"{p}[3].url", "URL has no host: 'http://:8545'"),
        (9, f"{p}[4].ws_url", "port 70000 is out of range (1-65535) in 'wss://[::1]:70000/ws'"),
        (10, f"{p}[5].url", "empty port in 'http://rpc.example:'"),
    ]


def test_empty_chains_and_providers(tmp_path: Path) -> None:
    """`chains: {}`, a null `chains:`, `providers: []` and a chain without `providers`
    are errors with their line: a chain without providers could serve nothing."""
    assert errors(tmp_path, "---\nname: X\n---\nchains: {}\n") == [
        (4, "chains", "no chains: list at least one chain")
    ]
    assert errors(tmp_path, "chains:\n") == [(1, "chains", "no chains: list at least one chain")]
    text = "chains:\n  ethereum:\n    chain_id: 1\n    providers: []\n  base:\n    chain_id: 8453\n"
    text += "    providers:\n"
    assert errors(tmp_path, text) == [
        (4, "chains.ethereum.providers", "no providers: list at least one"),
        (7, "chains.base.providers", "no providers: list at least one"),
    ]
    text = "chains:\n  ethereum:\n    chain_id: 1\n    name: Ethereum\n  base:\n    chain_id: 5\n"
    assert errors(tmp_path, text) == [
        (2, "chains.ethereum.providers", "no providers: list at least one"),
        (5, "chains.base.providers", "no providers: list at least one"),
    ]


def test_method_name_typos(tmp_path: Path) -> None:
    """Given the known method names, a method override or unsupported method close to one
    is a typo; a provider's own method far from every known one is accepted; without
    them there is no such check."""
    text = chain("""\
        routing:
          method_overrides:
            eth_getLog: {strategy: priority}
            alchemy_getTokenBalances: {strategy: fastest}
        providers:
          - id: a
            url: http://a.example
            capabilities:
              unsupported_methods: [eth_getBlockByNumbr, custom_thing]
    """)
    (tmp_path / "p.yml").write_text(dedent(text))
    with pytest.raises(ConfigError) as info:
        load_profiles(tmp_path, {}, known_methods=KNOWN_METHODS)
    assert [(p.line, p.key_path, p.message) for p in info.value.problems] == [
        (6, "chains.ethereum.routing.method_overrides.eth_getLog",
         "unknown method 'eth_getLog', did you mean 'eth_getLogs'?"),
        (12, "chains.ethereum.providers[0].capabilities.unsupported_methods[0]",
         "unknown method 'eth_getBlockByNumbr', did you mean 'eth_getBlockByNumber'?"),
    ]  # fmt: skip
    assert "p" in load_profiles(tmp_path, {})  # no names given: no check


def test_strategies_are_canonicalised(tmp_path: Path) -> None:
    """Strategy names and aliases are stored canonically; unknown ones are errors."""
    text = chain("""\
        routing:
          default_strategy: round-robin
          latency_weighted_beta: 2
          method_overrides:
            eth_call: {strategy: latency_weighted}
            eth_getLogs: {strategy: priority, providers: [b, a]}
        providers:
          - {id: a, url: "http://a.example"}
          - {id: b, url: "http://b.example"}
    """)
    eth = load(tmp_path, text).chains["ethereum"]
    assert (eth.default_strategy, eth.latency_weighted_beta) == ("load-balanced", 2.0)
    assert eth.method_overrides["eth_call"].strategy == "latency-weighted"
    assert eth.method_overrides["eth_call"].providers == ()
    assert eth.method_overrides["eth_getLogs"].strategy == "priority"
    assert eth.method_overrides["eth_getLogs"].providers == ("b", "a")


def test_routing_errors(tmp_path: Path) -> None:
    """Unknown strategies and override providers missing from the chain are errors."""
    text = chain("""\
        routing:
          default_strategy: fastst
          latency_weighted_beta: 0
          method_overrides:
            eth_call: {strategy: random, providers: [alpah, zulu]}
        providers:
          - {id: alpha, url: "http://a.example"}
    """)
    r = "chains.ethereum.routing"
    o = f"{r}.method_overrides.eth_call"
    assert errors(tmp_path, text) == [
        (5, f"{r}.default_strategy", "unknown strategy 'fastst', did you mean 'fastest'?"),
        (6, f"{r}.latency_weighted_beta", "must be a positive number, got 0"),
        (8, f"{o}.providers[0]", "unknown provider 'alpah' in this chain, did you mean 'alpha'?"),
        (8, f"{o}.providers[1]", "unknown provider 'zulu' in this chain"),
        (
            8,
            f"{o}.strategy",
            "unknown strategy 'random'; expected one of load-balanced, fastest, "
            "latency-weighted, priority, round-robin, load_balanced, latency_weighted",
        ),
    ]


def test_hedge_settings(tmp_path: Path) -> None:
    """routing.hedge and a method override's hedge (a mapping or false) parse with defaults."""
    text = chain("""\
        routing:
          hedge: {quantile: 0.9, min_delay_ms: 5, max_delay_ms: 500, budget_percent: 12.5}
          method_overrides:
            eth_call: {hedge: {delay_ms: 40, max_hedges: 2}}
            eth_getLogs: {hedge: false}
            eth_getBalance: {strategy: fastest}
        providers:
          - {id: a, url: "http://a.example"}
    """)
    eth = load(tmp_path, text).chains["ethereum"]
    assert eth.hedge == HedgeConfig(
        quantile=0.9, min_delay_ms=5.0, max_delay_ms=500.0, budget_percent=12.5
    )
    assert eth.hedge.max_hedges == 1
    assert eth.method_overrides["eth_call"].hedge == HedgeConfig(delay_ms=40.0, max_hedges=2)
    assert eth.method_overrides["eth_getLogs"].hedge is False
    assert eth.method_overrides["eth_getBalance"].hedge is None
    plain = load(tmp_path, chain("providers: [{id: a, url: 'http://a.example'}]"))
    assert plain.chains["ethereum"].hedge is None


def test_hedge_errors(tmp_path: Path) -> None:
    """Hedge settings are checked: one delay form, ranges, clamps, a mapping or false."""
    text = chain("""\
        routing:
          hedge:
            delay_ms: 40
            quantile: 1.5
            min_delay_ms: 50
            max_delay_ms: 10
            max_hedges: 3
            budget_percent: 150
            budget: 5
          method_overrides:
            eth_call: {hedge: true}
            eth_getLogs: {hedge: {max_hedges: 0}}
        providers:
          - {id: a, url: "http://a.example"}
    """)
    h = "chains.ethereum.routing.hedge"
    o = "chains.ethereum.routing.method_overrides"
    assert errors(tmp_path, text) == [
        (7, f"{h}.quantile", "conflicts with 'delay_ms'"),
        (7, f"{h}.quantile", "must be below 1, got 1.5"),
        (8, f"{h}.min_delay_ms", "is above max_delay_ms (10)"),
        (10, f"{h}.max_hedges", "must be at most 2 (a read goes to at most 3 providers), got 3"),
        (11, f"{h}.budget_percent", "must be at most 100, got 150"),
        (12, f"{h}.budget", "unknown key 'budget', did you mean 'budget_percent'?"),
        (14, f"{o}.eth_call.hedge", "expected a mapping or false, got boolean true"),
        (15, f"{o}.eth_getLogs.hedge.max_hedges", "must be positive, got 0"),
        (15, f"{o}.eth_getLogs.hedge", "needs 'delay_ms' (fixed) or 'quantile' (adaptive)"),
    ]
    chain_false = chain("""\
        routing: {hedge: false}
        providers: [{id: a, url: "http://a.example"}]
    """)
    assert load(tmp_path, chain_false).chains["ethereum"].hedge is None  # no hedging
    chain_true = chain("""\
        routing: {hedge: true}
        providers: [{id: a, url: "http://a.example"}]
    """)
    assert errors(tmp_path, chain_true) == [
        (4, "chains.ethereum.routing.hedge", "expected a mapping or false, got boolean true")
    ]
    fixed = chain("""\
        routing: {hedge: {delay_ms: 30, max_delay_ms: 100}}
        providers: [{id: a, url: "http://a.example"}]
    """)
    assert errors(tmp_path, fixed) == [
        (4, "chains.ethereum.routing.hedge.max_delay_ms", "applies to the 'quantile' form only")
    ]


def test_chain_settings(tmp_path: Path) -> None:
    """monitoring, selection, websocket and ui-topology keys (and their spellings) parse."""
    text = chain("""\
        name: Ethereum Mainnet
        block_time_ms: 12000
        monitoring: {probe_interval_ms: 15000, lag_threshold_blocks: 4}
        selection: {max_lag_blocks: 0, archival_threshold: 64}
        websocket:
          subscribe_new_heads: false
          new_heads_timeout_ms: 35000
          failover: {max_backfill_blocks: 32, backfill_timeout: 5000}
        ui-topology: {color: "#6B7280", size: lg}
    """)
    eth = load(tmp_path, text).chains["ethereum"]
    assert (eth.name, eth.block_time_ms, eth.probe_interval_ms) == (
        "Ethereum Mainnet",
        12000,
        15000,
    )
    assert (eth.lag_alert_threshold_blocks, eth.max_lag_blocks, eth.archival_threshold) == (
        4,
        0,
        64,
    )
    assert (eth.subscribe_new_heads, eth.new_heads_timeout_ms) == (False, 35000)
    assert (eth.max_backfill_blocks, eth.backfill_timeout_ms) == (32, 5000)


def test_legacy_monitoring_fallbacks(tmp_path: Path) -> None:
    """monitoring.subscribe_new_heads and the staleness threshold back the websocket keys."""
    text = chain("""\
        monitoring: {subscribe_new_heads: false, new_heads_staleness_threshold_ms: 9000}
    """)
    eth = load(tmp_path, text).chains["ethereum"]
    assert (eth.subscribe_new_heads, eth.new_heads_timeout_ms) == (False, 9000)
    assert eth.probe_interval_ms == 12000  # section present: still the 12 s default


def test_recovery_probe_interval(tmp_path: Path) -> None:
    """monitoring.recovery_probe_interval_ms parses, and must be at least 100 ms."""
    eth = load(tmp_path, chain("monitoring: {recovery_probe_interval_ms: 100}\n"))
    assert eth.chains["ethereum"].recovery_probe_interval_ms == 100
    key = "chains.ethereum.monitoring.recovery_probe_interval_ms"
    for value, message in [
        ("99", "must be at least 100, got 99"),
        ("0", "must be at least 100, got 0"),
        ("2s", "expected integer, got string '2s'"),
    ]:
        text = chain(f"monitoring: {{recovery_probe_interval_ms: {value}}}\n")
        assert errors(tmp_path, text) == [(4, key, message)]
    text = chain("monitoring: {recovery_probe_interval: 500}\n")
    assert errors(tmp_path, text) == [
        (
            4,
            "chains.ethereum.monitoring.recovery_probe_interval",
            "unknown key 'recovery_probe_interval', did you mean 'recovery_probe_interval_ms'?",
        )
    ]


def test_chain_setting_errors(tmp_path: Path) -> None:
    """Both spellings of one setting, bad sizes and negative counts are errors."""
    text = chain("""\
        monitoring: {lag_alert_threshold_blocks: 3, lag_threshold_blocks: 4}
        selection: {max_lag_blocks: -1}
        websocket: {failover: {backfill_timeout_ms: 1, backfill_timeout: 2}}
        ui-topology: {size: huge}
        block_time_ms: 0
    """)
    c = "chains.ethereum"
    assert errors(tmp_path, text) == [
        (4, f"{c}.monitoring.lag_threshold_blocks", "conflicts with 'lag_alert_threshold_blocks'"),
        (5, f"{c}.selection.max_lag_blocks", "must not be negative, got -1"),
        (6, f"{c}.websocket.failover.backfill_timeout", "conflicts with 'backfill_timeout_ms'"),
        (
            7,
            f"{c}.ui-topology.size",
            "unknown value 'huge'; expected one of lg, md, sm, xl",
        ),
        (8, f"{c}.block_time_ms", "must be positive, got 0"),
    ]


def test_capabilities(tmp_path: Path) -> None:
    """Capabilities parse into frozen values; message_contains is lower-cased."""
    text = provider("""\
        capabilities:
          unsupported_categories: [debug, trace]
          unsupported_methods: [eth_getProof]
          limits: {max_block_range: 0, max_block_age: 128, block_age_methods: [eth_getLogs]}
          error_rules:
            - {code: 30, category: rate_limit}
            - {message_contains: "Free Tier", category: rate_limit}
            - {code: -32000, message_contains: [Missing Trie, pruned], category: requires_archival}
    """)
    caps = load(tmp_path, text).chains["ethereum"].providers[0].capabilities
    assert caps.unsupported_categories == frozenset({"debug", "trace"})
    assert caps.unsupported_methods == frozenset({"eth_getProof"})
    assert (caps.limits.max_block_range, caps.limits.max_block_age) == (0, 128)
    assert caps.limits.block_age_methods == ("eth_getLogs",)
    r1, r2, r3 = caps.error_rules
    assert (r1.code, r1.message_contains, r1.category) == (30, (), "rate_limit")
    assert (r2.code, r2.message_contains) == (None, ("free tier",))
    assert (r3.code, r3.message_contains) == (-32000, ("missing trie", "pruned"))


def test_capability_errors(tmp_path: Path) -> None:
    """Unknown categories, negative limits and malformed error rules are errors."""
    text = provider("""\
        capabilities:
          unsupported_categories: [debgu, bogus]
          limits: {max_block_range: -5, max_block_age: -1}
          error_rules:
            - {category: rate_limit}
            - {code: 1, category: rate_limt}
            - {code: 2}
            - {message_contains: [], category: timeout, extra: 1}
    """)
    c = "chains.ethereum.providers[0].capabilities"
    assert errors(tmp_path, text) == [
        (
            8,
            f"{c}.unsupported_categories[0]",
            "unknown method category 'debgu', did you mean 'debug'?",
        ),
        (8, f"{c}.unsupported_categories[1]", "unknown method category 'bogus'"),
        (9, f"{c}.limits.max_block_range", "must not be negative, got -5"),
        (9, f"{c}.limits.max_block_age", "must not be negative, got -1"),
        (11, f"{c}.error_rules[0]", "needs 'code' or 'message_contains'"),
        (
            12,
            f"{c}.error_rules[1].category",
            "unknown value 'rate_limt', did you mean 'rate_limit'?",
        ),
        (13, f"{c}.error_rules[2].category", "missing required key"),
        (14, f"{c}.error_rules[3].extra", "unknown key 'extra'"),
    ]


def test_api_key_and_headers(tmp_path: Path) -> None:
    """api_key becomes a bearer authorization header; headers merge lower-cased, later wins."""
    text = provider("""\
        api_key: s3cret
        headers: {X-Team: core, Accept: application/json}
        auth_headers: {Authorization: Basic abc, x-team: ops}
        sharing_mode: isolated
        credentials: {user: me}
    """)
    a = load(tmp_path, text).chains["ethereum"].providers[0]
    assert dict(a.headers) == {
        "authorization": "Basic abc",
        "x-team": "ops",
        "accept": "application/json",
    }
    assert a.sharing_mode == "isolated"
    only_key = load(tmp_path, provider("api_key: abc\n"))
    assert dict(only_key.chains["ethereum"].providers[0].headers) == {"authorization": "Bearer abc"}


def test_header_errors(tmp_path: Path) -> None:
    """Header names must be tokens and values may not contain line breaks."""
    text = provider("""\
        headers:
          "bad name": x
          x-ok: "a\\r\\nInjected: 1"
        sharing_mode: shared
    """)
    p = "chains.ethereum.providers[0]"
    assert errors(tmp_path, text) == [
        (8, f"{p}.headers.bad name", "invalid header name 'bad name'"),
        (9, f"{p}.headers.x-ok", "header value must not contain line breaks"),
        (10, f"{p}.sharing_mode", "unknown value 'shared'; expected one of auto, isolated"),
    ]


def test_null_values_mean_defaults(tmp_path: Path) -> None:
    """A key set to null behaves like an absent key."""
    text = provider("priority: null\narchival: ~\nsubscribe_new_heads:\nname:\n")
    a = load(tmp_path, text).chains["ethereum"].providers[0]
    assert (a.priority, a.archival, a.subscribe_new_heads, a.name) == (100, True, None, "a")


def test_many_problems_in_one_file_are_all_reported(tmp_path: Path) -> None:
    """Validation keeps going after the first problem."""
    text = dedent(f"""\
        chains:
          one:
            chain_id: x
            providers:
              - id: a
                priority: y
          two:
            chain_id: 1
            block_time_ms: z
            {P}
    """)
    assert [line for line, _, _ in errors(tmp_path, text)] == [3, 5, 6, 9]


# --- environment substitution ----------------------------------------------------------


def test_env_substitution_and_defaults(tmp_path: Path) -> None:
    """${VAR}, ${VAR:-default} and ${VAR-default} are substituted in any string."""
    text = """\
        ---
        name: ${TEAM} profile
        ---
        chains:
          ethereum:
            chain_id: 1
            providers:
              - id: a
                url: "https://${HOST:-rpc.example}/v2/${KEY}"
                ws_url: ${WS-wss://ws.example}
                priority: ${PRIO}
                archival: ${ARCHIVAL:-false}
                api_key: ${NUMERIC_KEY}
    """
    env = {"TEAM": "core", "KEY": "k1", "PRIO": "7", "NUMERIC_KEY": "12345", "HOST": ""}
    profile = load(tmp_path, text, env)
    a = profile.chains["ethereum"].providers[0]
    assert profile.name == "core profile"
    assert a.url == "https://rpc.example/v2/k1"
    assert a.ws_url == "wss://ws.example"
    assert a.priority == 7  # a plain scalar is typed after substitution
    assert a.archival is False
    assert dict(a.headers) == {"authorization": "Bearer 12345"}  # text kept for strings


def test_env_empty_substitution_means_unset(tmp_path: Path) -> None:
    """A value that substitutes to nothing through a default is treated as absent."""
    text = provider('api_key: "${OPTIONAL_KEY:-}"\nws_url: ${WS:-}\n')
    a = load(tmp_path, text, {"OPTIONAL_KEY": ""}).chains["ethereum"].providers[0]
    assert not a.headers and a.ws_url is None


def test_env_variable_set_but_empty_is_an_error(tmp_path: Path) -> None:
    """A plain ${VAR} whose variable is set to "" is reported, wherever it stands."""
    text = provider('api_key: "${KEY}"\nws_url: "wss://ws.example/${TOKEN}"\n')
    text = text.replace("http://a.example", "${RPC_URL}")
    p = "chains.ethereum.providers[0]"

    def msg(name: str) -> str:
        return (
            f"environment variable {name!r} is set but empty "
            f"(give it a value, or write ${{{name}:-}} to leave the key unset)"
        )

    env = {"RPC_URL": "", "KEY": "", "TOKEN": ""}
    assert errors(tmp_path, text, env) == [
        (6, f"{p}.url", msg("RPC_URL")),
        (7, f"{p}.api_key", msg("KEY")),
        (8, f"{p}.ws_url", msg("TOKEN")),
    ]


def test_env_missing_variable_is_reported_once(tmp_path: Path) -> None:
    """An unresolved ${VAR} names the variable, with its line and key path, and nothing else."""
    text = provider('api_key: "Bearer-${MISSING_KEY}"\n').replace("http://a.example", "${RPC_URL}")
    p = "chains.ethereum.providers[0]"
    hint = "set it, or give a default: ${%s:-default}"
    assert errors(tmp_path, text) == [
        (6, f"{p}.url", f"environment variable 'RPC_URL' is not set ({hint % 'RPC_URL'})"),
        (
            7,
            f"{p}.api_key",
            f"environment variable 'MISSING_KEY' is not set ({hint % 'MISSING_KEY'})",
        ),
    ]


def test_malformed_placeholders(tmp_path: Path) -> None:
    """Placeholders that are not ${NAME} or ${NAME:-default} are errors."""
    text = provider('name: "${1BAD}"\napi_key: "${OPEN"\n')
    p = "chains.ethereum.providers[0]"
    assert errors(tmp_path, text) == [
        (7, f"{p}.name", "invalid placeholder '${1BAD}': use ${NAME} or ${NAME:-default}"),
        (8, f"{p}.api_key", "unterminated placeholder in '${OPEN'"),
    ]


def test_structure_errors(tmp_path: Path) -> None:
    """Missing or mistyped top-level sections are reported once, without follow-on noise."""
    assert errors(tmp_path, "---\n- a\n---\n") == [
        (2, "", "expected mapping, got list"),
        (3, "chains", "missing required key"),
    ]
    assert errors(tmp_path, "chains: [ethereum]\n") == [(1, "chains", "expected mapping, got list")]
    text = "chains:\n  ethereum: 1\n  'bad key':\n    chain_id: 2\n    providers: {id: a}\n"
    assert errors(tmp_path, text) == [
        (2, "chains.ethereum", "expected mapping, got integer 1"),
        (
            3,
            "chains.bad key",
            "invalid chain key 'bad key': use letters, digits, '_', '.', '-' (at most 128)",
        ),
        (5, "chains.bad key.providers", "expected list, got mapping"),
    ]


def test_decimal_chain_key_may_not_be_another_chains_id(tmp_path: Path) -> None:
    """A chain keyed '5' would shadow /rpc/5 for the chain whose chain_id is 5."""
    text = f"chains:\n  five:\n    chain_id: 5\n    {P}\n  '5':\n    chain_id: 6\n    {P}\n"
    assert errors(tmp_path, text) == [(5, "chains.5", "chain key '5' is the chain_id of 'five'")]


def test_unreadable_files(tmp_path: Path) -> None:
    """Non-UTF-8 files and control characters are reported, not raised."""
    (tmp_path / "a.yml").write_bytes(b"chains: {}\nname: \xff\n")
    (tmp_path / "b.yml").write_text("chains: {}\n# \x07\n")
    with pytest.raises(ConfigError) as info:
        load_profiles(tmp_path, {})
    a, b = info.value.problems
    assert (a.file, a.line) == (str(tmp_path / "a.yml"), 0)
    assert a.message.startswith("cannot read file:")
    assert (b.file, b.line, b.key_path) == (str(tmp_path / "b.yml"), 2, "")
    assert b.message == "unreadable YAML: special characters are not allowed"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=len(MINIMAL)),
            st.sampled_from(["${", "}", "&a ", "*a", "<<: ", "\n", "- ", ": ", "[", "{", "\t"])
            | st.text(max_size=3),
        ),
        max_size=6,
    )
)
def test_any_text_gives_a_profile_or_a_config_error(edits: list[tuple[int, str]]) -> None:
    """Mutated profile text never raises anything but ConfigError."""
    text = MINIMAL
    for pos, insert in edits:
        text = text[:pos] + insert + text[pos:]
    try:
        parse_profile(text, "p.yml", {})
    except ConfigError as exc:
        assert exc.problems and all(p.file == "p.yml" for p in exc.problems)


def test_bad_url_syntax_is_a_problem(tmp_path: Path) -> None:
    """URLs that urllib cannot parse (bad IPv6 literal or port) are reported."""
    text = provider("ws_url: 'ws://[::1'\n").replace("http://a.example", "http://a:port")
    p = "chains.ethereum.providers[0]"
    assert [(line, path) for line, path, _ in errors(tmp_path, text)] == [
        (6, f"{p}.url"),
        (7, f"{p}.ws_url"),
    ]


def _one_provider(extra: str, chain_key: str = "ethereum") -> str:
    return (
        "---\nname: T\n---\nchains:\n"
        f"  {chain_key}:\n    chain_id: 1\n    providers:\n"
        "      - id: a\n        url: http://127.0.0.1:8545\n" + extra
    )


def test_headers_lasso_manages_are_rejected(tmp_path: Path) -> None:
    """Content-Length, Transfer-Encoding, Connection and Host cannot be configured."""
    for name in ("Content-Length", "transfer-encoding", "Connection", "Host"):
        text = _one_provider(f"        headers:\n          {name}: x\n")
        with pytest.raises(ConfigError) as info:
            parse_profile(text, "t.yml", {})
        assert "set by Lasso itself" in str(info.value)
        assert info.value.problems[0].line == 11


def test_urls_with_spaces_are_rejected() -> None:
    """A URL with whitespace would corrupt the request line: it is a config error."""
    text = _one_provider("").replace("http://127.0.0.1:8545", '"http://127.0.0.1:8545/a b"')
    with pytest.raises(ConfigError) as info:
        parse_profile(text, "t.yml", {})
    assert "spaces" in str(info.value)


def test_route_segments_cannot_be_chain_keys_or_aliases() -> None:
    """Chain keys and aliases that collide with strategy or route words are reserved."""
    with pytest.raises(ConfigError) as info:
        parse_profile(_one_provider("", chain_key="fastest"), "t.yml", {})
    assert "reserved" in str(info.value)
    text = _one_provider("").replace(
        "    chain_id: 1\n", "    chain_id: 1\n    aliases: [provider]\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_profile(text, "t.yml", {})
    assert "reserved" in str(info.value)


def test_deeply_nested_yaml_is_a_config_error(tmp_path: Path) -> None:
    """A 50,000-deep document is refused with its line, never a RecursionError."""
    deep = "[" * 50_000 + "]" * 50_000
    text = MINIMAL.replace("chain_id: 1", f"chain_id: 1\n    name: {deep}")
    got = errors(tmp_path, text)
    assert got == [(line_of(text, "name: [["), "", "nested deeper than 64 levels")]


def test_alias_chains_cannot_nest_past_the_depth_limit(tmp_path: Path) -> None:
    """Aliases that nest collections 70 deep are reported, not recursed into."""
    lines = ["x0: &a0 [1]"] + [f"x{i}: &a{i} [*a{i - 1}]" for i in range(1, 70)]
    text = MINIMAL.replace("chains:", "\n".join(lines) + "\nchains:")
    got = errors(tmp_path, text)
    assert any(msg == "nested deeper than 64 levels" for _, _, msg in got)


def test_consistency_settings(tmp_path: Path) -> None:
    """routing.get_logs and routing.broadcast parse, with defaults when absent."""
    text = chain("""\
        routing:
          get_logs: {max_range: 5000, max_parallel: 8}
          broadcast: 3
        providers:
          - {id: a, url: "http://a.example"}
    """)
    eth = load(tmp_path, text).chains["ethereum"]
    assert (eth.get_logs.max_range, eth.get_logs.max_parallel, eth.broadcast) == (5000, 8, 3)
    text = chain("""\
        providers:
          - {id: a, url: "http://a.example"}
    """)
    eth = load(tmp_path, text).chains["ethereum"]
    assert (eth.get_logs.max_range, eth.get_logs.max_parallel, eth.broadcast) == (100_000, 4, 1)


def test_consistency_setting_errors(tmp_path: Path) -> None:
    """Out-of-range or misspelled consistency keys name file, line and key."""
    text = chain("""\
        routing:
          get_logs: {max_range: 0, max_parallel: 99, max_rnage: 5}
          broadcast: 17
        providers:
          - {id: a, url: "http://a.example"}
    """)
    r = "chains.ethereum.routing"
    assert errors(tmp_path, text) == [
        (5, f"{r}.get_logs.max_rnage", "unknown key 'max_rnage', did you mean 'max_range'?"),
        (5, f"{r}.get_logs.max_range", "must be positive, got 0"),
        (5, f"{r}.get_logs.max_parallel", "must be at most 32, got 99"),
        (6, f"{r}.broadcast", "must be at most 16, got 17"),
    ]
