"""The ``lasso`` command as a user runs it: real processes, signals and exit codes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from support import ROOT, eventually, fleet_chain_yaml, free_port, profile_yaml

pytestmark = pytest.mark.integration

LASSO = [sys.executable, "-m", "lasso"]
BN = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []})


def test_check_config_accepts_the_shipped_profiles() -> None:
    """The repository's profiles validate."""
    out = subprocess.run(
        [*LASSO, "check-config", "--profiles", str(ROOT / "config/profiles")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "public" in out.stdout and "demo" in out.stdout


def test_check_config_reports_file_line_and_key(tmp_path: Path) -> None:
    """A bad profile gives exit 1 and one line per problem with file, line and key path."""
    (tmp_path / "public.yml").write_text(
        "---\nname: X\nslug: public\n---\nchains:\n  ethereum:\n    chain_id: 1\n    providers:\n"
        "      - id: a\n        url: http://127.0.0.1:1\n        priorty: 3\n"
    )
    out = subprocess.run(
        [*LASSO, "check-config", "--profiles", str(tmp_path)], capture_output=True, text=True
    )
    assert out.returncode == 1
    line = out.stderr.splitlines()[0]
    assert "public.yml:11" in line and "chains.ethereum.providers[0].priorty" in line
    assert "did you mean 'priority'" in line


def test_check_config_lists_the_valid_profiles_when_one_fails(tmp_path: Path) -> None:
    """One bad profile: exit 1, its problem on stderr, and the valid one's ok line (one
    provider, singular) on stdout."""
    (tmp_path / "bad.yml").write_text("---\nauth:\n  required: true\n---\nchains: {}\n")
    (tmp_path / "good.yml").write_text(
        "chains:\n  ethereum:\n    chain_id: 1\n    providers:\n"
        "      - {id: a, url: 'http://127.0.0.1:1'}\n"
    )
    out = subprocess.run(
        [*LASSO, "check-config", "--profiles", str(tmp_path)], capture_output=True, text=True
    )
    assert out.returncode == 1
    assert "bad.yml:3: auth.required: true with no keys and no jwt" in out.stderr
    assert out.stdout.splitlines() == [
        f"ok  {tmp_path / 'good.yml'}: profile 'good': ethereum (1, 1 provider)"
    ]


def test_check_config_catches_empty_values_ports_and_method_typos(tmp_path: Path) -> None:
    """check-config reports an empty ${VAR}, a port out of range, `providers: []` and a
    method-name typo, each with file and line."""
    (tmp_path / "public.yml").write_text(
        "chains:\n  ethereum:\n    chain_id: 1\n    routing:\n      method_overrides:\n"
        "        eth_getLog: {strategy: priority}\n    providers:\n"
        "      - {id: a, url: 'http://${HOST}:8545'}\n      - {id: b, url: 'http://h:99999'}\n"
        "  base:\n    chain_id: 8453\n    providers: []\n"
    )
    out = subprocess.run(
        [*LASSO, "check-config", "--profiles", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "HOST": ""},
    )
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    assert "public.yml:6: " in lines[0] and "did you mean 'eth_getLogs'" in lines[0]
    assert "public.yml:8: " in lines[1] and "'HOST' is set but empty" in lines[1]
    assert "public.yml:9: " in lines[2] and "port 99999 is out of range" in lines[2]
    assert "public.yml:12: chains.base.providers: no providers" in lines[3]
    assert lines[4] == "4 problem(s) found"


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        (["serve", "--port", "70000"], {}, "port 70000 is not in 0..65535"),
        (["serve", "--port", "-1"], {}, "port -1 is not in 0..65535"),
        (["serve", "--port", "http"], {}, "'http' is not an integer"),
        (["serve"], {"PORT": "70000"}, "PORT='70000' must be between 0 and 65535"),
        (["serve"], {"PORT": "abc"}, "PORT='abc' is not an integer"),
        (["serve", "--workers", "0"], {}, "workers 0 is not in 1..256"),
        (["serve"], {"LASSO_WORKERS": "two"}, "LASSO_WORKERS='two' is not an integer"),
        (["serve"], {"LASSO_BUSY_POLL_US": "x"}, "LASSO_BUSY_POLL_US='x' is not an integer"),
        (["serve"], {"LASSO_MAX_BATCH": "0"}, "LASSO_MAX_BATCH='0' must be between 1 and"),
        (["serve", "--max-batch", "0"], {}, "batch size 0 is not in 1..100000"),
        (
            ["serve"],
            {"LASSO_WORKER_INDEX": "abc", "LASSO_SHARED_STATE": "lasso-x"},
            "LASSO_WORKER_INDEX='abc' is not an integer",
        ),
        (
            ["serve"],
            {"LASSO_CLUSTER_URL": "nats://127.0.0.1:1", "LASSO_CLUSTER_INTERVAL_MS": "soon"},
            "LASSO_CLUSTER_INTERVAL_MS='soon' is not an integer",
        ),
        (["serve"], {"LASSO_CLUSTER_INTERVAL_MS": "10"}, "must be between 50 and 60000"),
        (["serve"], {"LASSO_CLUSTER_URL": "bogus"}, "LASSO_CLUSTER_URL: cluster URL 'bogus'"),
        (["serve"], {"LASSO_CLUSTER_URL": "http://h:4222"}, "expected nats://host:port"),
        (["serve"], {"LASSO_CLUSTER_URL": "nats://h:99999"}, "port is not a number 0-65535"),
        (["serve"], {"LASSO_CLUSTER_URL": "nats://a:1,nats://:2"}, "cluster URL 'nats://:2'"),
        (["demo"], {"LASSO_CLUSTER_URL": "nats//x"}, "LASSO_CLUSTER_URL: cluster URL"),
        (["demo", "--port", "70000"], {}, "port 70000 is not in 0..65535"),
        (["demo"], {"PORT": "99999"}, "PORT='99999' must be between 0 and 65535"),
    ],
)
def test_bad_ports_and_numbers_exit_2_with_one_clean_line(
    tmp_path: Path, argv: list[str], env: dict[str, str], needle: str
) -> None:
    """Out-of-range ports, non-numeric settings and a cluster URL naming no server stop at
    start with a one-line message and exit 2 (never a retry loop in the background)."""
    (tmp_path / "public.yml").write_text(profile_yaml(""))
    out = subprocess.run(
        [*LASSO, *argv, *(["--profiles", str(tmp_path)] if argv[0] == "serve" else [])],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=30,
    )
    assert out.returncode == 2, out.stderr
    assert needle in out.stderr
    assert "Traceback" not in out.stderr


async def _post(url: str) -> Any:
    async with aiohttp.ClientSession() as s, s.post(url, data=BN) as r:
        return r.status, await r.json(content_type=None)


async def _healthy(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as s, s.get(url + "/api/health") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


async def test_demo_serves_and_stops_on_sigterm() -> None:
    """`lasso demo` answers JSON-RPC from its simulated fleet and exits 0 on SIGTERM."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *LASSO,
        "demo",
        "--port",
        str(port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"

    async def sample_calls() -> int:
        async with aiohttp.ClientSession() as s, s.get(base + "/api/metrics/ethereum") as r:
            doc = await r.json()
        return sum(m["calls"] for p in doc["providers"] for m in p["methods"])

    try:
        await eventually(lambda: _healthy(base), timeout=20, message="demo did not become healthy")
        # The background client makes the node busy before anyone sends anything.
        await eventually(sample_calls, timeout=10, message="no background traffic")
        status, doc = await _post(base + "/rpc/ethereum")
        assert status == 200 and int(doc["result"], 16) > 0
        status, doc = await _post(base + "/rpc/fastest/base")
        assert status == 200 and "result" in doc
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, _ = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0
    assert b"/rpc/ethereum" in stdout
    assert b"background client sends 5 reads/s" in stdout and b"--no-traffic" in stdout


async def test_serve_reloads_on_sighup_and_keeps_last_good(tmp_path: Path, sim_fleet: Any) -> None:
    """SIGHUP swaps in a valid new profile set and rejects a broken one without dropping service."""
    fleet = await sim_fleet(["a", "b"])
    profile = tmp_path / "public.yml"
    profile.write_text(profile_yaml(fleet_chain_yaml(fleet)))
    port = free_port()
    env = {**os.environ, "PORT": str(port), "LASSO_NODE_ID": "cli-test"}
    proc = await asyncio.create_subprocess_exec(
        *LASSO, "serve", "--profiles", str(tmp_path), env=env, stderr=asyncio.subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await eventually(lambda: _healthy(base), timeout=20)
        assert (await _post(base + "/rpc/ethereum"))[0] == 200
        assert (await _post(base + "/rpc/other"))[0] == 400

        profile.write_text(
            profile_yaml(fleet_chain_yaml(fleet) + fleet_chain_yaml(fleet, key="other", chain_id=5))
        )
        proc.send_signal(signal.SIGHUP)
        await eventually(
            lambda: _status_is(base + "/rpc/other", 200), timeout=10, message="reload not applied"
        )

        profile.write_text("---\nname: broken\n---\nchains: [oops\n")
        proc.send_signal(signal.SIGHUP)
        await eventually(lambda: _stderr_has(proc, b"config.reload_rejected"), timeout=10)
        assert (await _post(base + "/rpc/other"))[0] == 200  # last good set still serving

        profile.write_text("chains: " + "[" * 50_000 + "]" * 50_000 + "\n")
        proc.send_signal(signal.SIGHUP)
        await eventually(lambda: _stderr_has(proc, b"nested deeper than 64 levels"), timeout=10)
        assert (await _post(base + "/rpc/other"))[0] == 200
        assert not await _stderr_has(proc, b"Traceback")
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 15)
    assert proc.returncode == 0


async def _status_is(url: str, status: int) -> bool:
    return (await _post(url))[0] == status


_seen: dict[int, bytes] = {}


async def _stderr_has(proc: Any, needle: bytes) -> bool:
    buf = _seen.setdefault(proc.pid, b"")
    try:
        chunk = await asyncio.wait_for(proc.stderr.read(65536), 0.2)
    except TimeoutError:
        chunk = b""
    buf += chunk
    _seen[proc.pid] = buf
    return needle in buf


async def test_sigterm_drains_in_flight_requests(tmp_path: Path, sim_fleet: Any) -> None:
    """A request in flight when SIGTERM arrives still gets its answer; then the process exits 0."""
    from lasso.sim.behavior import Behavior

    fleet = await sim_fleet({"slow": Behavior(latency_ms=800)})
    (tmp_path / "public.yml").write_text(profile_yaml(fleet_chain_yaml(fleet)))
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *LASSO,
        "serve",
        "--profiles",
        str(tmp_path),
        "--port",
        str(port),
        stderr=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    await eventually(lambda: _healthy(base), timeout=20)
    body = orjson.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_getBalance",
            "params": ["0x" + "00" * 20, "latest"],
        }
    )

    async def call() -> Any:
        async with aiohttp.ClientSession() as s, s.post(base + "/rpc/ethereum", data=body) as r:
            return await r.json()

    task = asyncio.create_task(call())
    await eventually(lambda: fleet["slow"].stats.methods["eth_getBalance"] >= 1, timeout=5)
    proc.send_signal(signal.SIGTERM)
    doc = await asyncio.wait_for(task, 10)
    assert "result" in doc
    assert await asyncio.wait_for(proc.wait(), 15) == 0


# -- default profile, the demo profile, usage ----------------------------------------------


async def _serve(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[Any, str]:
    port = free_port()
    full_env = {**os.environ, "PORT": str(port), **(env or {})}
    full_env.pop("LASSO_PROFILES_DIR", None)
    proc = await asyncio.create_subprocess_exec(
        *LASSO, "serve", *args, env=full_env, cwd=cwd, stderr=asyncio.subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    await eventually(lambda: _healthy(base), timeout=20, message="serve did not start")
    return proc, base


async def _stop(proc: Any) -> None:
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.wait(), 15)
    assert proc.returncode == 0


async def test_the_only_profile_is_the_default(tmp_path: Path, sim_fleet: Any) -> None:
    """A folder with one profile not named public serves it on plain routes."""
    fleet = await sim_fleet(["a"])
    (tmp_path / "production.yml").write_text(profile_yaml(fleet_chain_yaml(fleet), "production"))
    proc, base = await _serve(tmp_path, "--profiles", str(tmp_path))
    try:
        status, doc = await _post(base + "/rpc/ethereum")
        assert status == 200 and "result" in doc
    finally:
        await _stop(proc)


async def test_several_profiles_without_public_need_a_default(
    tmp_path: Path, sim_fleet: Any
) -> None:
    """Two profiles, none public: plain routes say how to choose; LASSO_DEFAULT_PROFILE
    chooses; one that is not loaded stops startup."""
    fleet = await sim_fleet(["a"])
    for slug in ("production", "staging"):
        (tmp_path / f"{slug}.yml").write_text(profile_yaml(fleet_chain_yaml(fleet), slug))
    proc, base = await _serve(tmp_path, "--profiles", str(tmp_path))
    try:
        status, doc = await _post(base + "/rpc/ethereum")
        assert status == 404
        assert "LASSO_DEFAULT_PROFILE" in doc["error"]["message"]
        assert doc["error"]["data"]["available_profiles"] == ["production", "staging"]
        assert (await _post(base + "/rpc/profile/staging/ethereum"))[0] == 200
    finally:
        await _stop(proc)
    proc, base = await _serve(
        tmp_path, "--profiles", str(tmp_path), env={"LASSO_DEFAULT_PROFILE": "staging"}
    )
    try:
        assert (await _post(base + "/rpc/ethereum"))[0] == 200
    finally:
        await _stop(proc)
    out = subprocess.run(
        [*LASSO, "serve", "--profiles", str(tmp_path), "--default-profile", "nope"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert "default profile 'nope' is not loaded (profiles: production, staging)" in out.stderr


async def test_serve_skips_the_demo_profile_of_the_default_folder(
    tmp_path: Path, sim_fleet: Any
) -> None:
    """From ./config/profiles the demo profile is skipped (and says so) unless asked for."""
    fleet = await sim_fleet(["a"])
    folder = tmp_path / "config" / "profiles"
    folder.mkdir(parents=True)
    (folder / "public.yml").write_text(profile_yaml(fleet_chain_yaml(fleet)))
    (folder / "demo.yml").write_text((ROOT / "config/profiles/demo.yml").read_text())

    async def profiles(base: str) -> list[str]:
        async with aiohttp.ClientSession() as s, s.get(base + "/api/profiles") as r:
            return sorted(p["slug"] for p in (await r.json())["profiles"])

    proc, base = await _serve(tmp_path, cwd=tmp_path)
    try:
        assert await profiles(base) == ["public"]
        await eventually(lambda: _stderr_has(proc, b"config.demo_skipped"), timeout=10)
    finally:
        await _stop(proc)
    proc, base = await _serve(tmp_path, "--demo-profile", cwd=tmp_path)
    try:
        assert await profiles(base) == ["demo", "public"]
    finally:
        await _stop(proc)
    # A folder you name is served whole.
    proc, base = await _serve(tmp_path, "--profiles", str(folder))
    try:
        assert await profiles(base) == ["demo", "public"]
    finally:
        await _stop(proc)


def test_a_bad_option_shows_the_commands_own_usage() -> None:
    """`lasso serve --bogus` is reported with serve's usage, exit 2."""
    out = subprocess.run([*LASSO, "serve", "--bogus"], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.startswith("usage: lasso serve")
    assert "unrecognized arguments: --bogus" in out.stderr


def test_help_lists_log_levels_and_the_profiles_variable() -> None:
    """--log-level shows its choices; check-config --help names LASSO_PROFILES_DIR."""
    out = subprocess.run([*LASSO, "serve", "--help"], capture_output=True, text=True)
    assert "debug, info, warning, error, critical" in out.stdout
    assert "LASSO_DEFAULT_PROFILE" in out.stdout and "--demo-profile" in out.stdout
    out = subprocess.run([*LASSO, "check-config", "--help"], capture_output=True, text=True)
    assert "LASSO_PROFILES_DIR" in out.stdout
    out = subprocess.run([*LASSO, "serve", "--log-level", "loud"], capture_output=True, text=True)
    assert out.returncode == 2 and "invalid choice: 'loud'" in out.stderr


@pytest.mark.parametrize("command", ["serve", "demo", "check-config"])
def test_the_readme_row_of_a_command_names_every_flag_its_help_has(command: str) -> None:
    """Each option `lasso <command> --help` lists is in the README's row for the command,
    and every option there has help text (README and --help cannot drift apart)."""
    import argparse

    from lasso.cli import _build_parser

    parser = _build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[
        command
    ]
    readme = (ROOT / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith(f"| `lasso {command} "))
    for action in sub._actions:
        flags = [f for f in action.option_strings if f.startswith("--") and f != "--help"]
        if not flags:
            continue
        assert action.help, flags
        assert any(f in row or f.replace("--no-", "--[no-]") in row for f in flags), flags
    out = subprocess.run([*LASSO, command, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--profiles" in out.stdout or command == "demo"


def test_the_readme_names_every_debian_package_the_test_command_installs() -> None:
    """The Quick start's account of `bash scripts/test.sh` names each Debian package the
    script installs (a new user reads it to know what the command will put on the machine)."""
    import re

    script = (ROOT / "scripts" / "test.sh").read_text()
    packages = re.findall(r"need_apt\+=\(([\w.-]+)\)", script)
    assert {"nats-server", "redis-server", "chromium"} <= set(packages)
    readme = (ROOT / "README.md").read_text()
    paragraph = readme[readme.index("The second command installs") :].split("\n\n")[0]
    assert [p for p in packages if f"`{p}`" not in paragraph] == []


def test_serve_refuses_an_unusable_redis_url() -> None:
    """LASSO_REDIS_URL that is not a Redis URL: exit 2 naming the variable, before serving."""
    env = {**os.environ, "LASSO_REDIS_URL": "http://127.0.0.1:6379"}
    out = subprocess.run(
        [*LASSO, "serve", "--profiles", str(ROOT / "config/profiles"), "--port", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert out.returncode == 2 and "LASSO_REDIS_URL" in out.stderr
