#!/usr/bin/env bash
# Installs every test dependency (Python packages, a real Ethereum node, a NATS server,
# a Redis server, Chromium) and runs the whole test suite. Safe to run repeatedly: each step is skipped
# when already satisfied. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*" >&2; }

# 1. Python environment (uv for speed; plain venv + pip as the fallback).
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
if [ ! -x .venv/bin/uv ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check uv
fi
log "installing lasso and test dependencies"
.venv/bin/uv pip install -q --python .venv/bin/python -e '.[test]'

# 2. System packages: nats-server, redis-server and chromium from Debian (root or sudo needed once).
need_apt=()
command -v nats-server >/dev/null 2>&1 || need_apt+=(nats-server)
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || need_apt+=(redis-server)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)  # tests/net/test_http_server.py (100 Continue)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# 3. npm test dependencies (package.json): a real Ethereum node (anvil, @foundry-rs/anvil)
#    and the JavaScript clients of the end-to-end tests (viem, ethers). `npm ls` fails when
#    any of them is missing or at another version.
if [ ! -x node_modules/.bin/anvil ] || ! npm ls --depth=0 >/dev/null 2>&1; then
  log "installing npm test dependencies (anvil, viem, ethers)"
  npm install --no-audit --no-fund --loglevel=error
fi
node_modules/.bin/anvil --version >/dev/null

# 4. The suite.
log "running the test suite"
export PATH="$PWD/node_modules/.bin:$PATH"
.venv/bin/ruff check src tests bench
.venv/bin/lint-imports   # the import contracts of pyproject.toml (docs/architecture.md)
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
