"""``lasso keys new``: a fresh key and the profile entry that accepts it, as a user runs it."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import textwrap

from lasso.auth.keys_cli import new_key
from lasso.profiles import parse_profile

LASSO = [sys.executable, "-m", "lasso"]


def test_new_keys_are_random_and_prefixed() -> None:
    """Every key differs, starts with lasso_ and carries 256 random bits."""
    keys = {new_key()[0] for _ in range(50)}
    assert len(keys) == 50 and all(k.startswith("lasso_") and len(k) >= 48 for k in keys)
    key, digest = new_key()
    assert digest == hashlib.sha256(key.encode()).hexdigest()


def test_printed_entry_pastes_into_a_profile_and_accepts_the_key() -> None:
    """The printed key_sha256 entry, pasted under auth.keys, identifies the printed key."""
    out = subprocess.run(
        [*LASSO, "keys", "new", "--id", "frontend"], capture_output=True, text=True, check=True
    ).stdout
    key = re.search(r"^key: (\S+)$", out, re.M).group(1)  # type: ignore[union-attr]
    entry = "\n".join(line for line in out.splitlines() if line.startswith("    "))
    text = (
        "---\nname: P\nauth:\n  keys:\n"
        + textwrap.indent(textwrap.dedent(entry), "    ")
        + "\n---\nchains:\n  ethereum: {chain_id: 1, providers: [{id: a, url: 'http://a'}]}\n"
    )
    profile = parse_profile(text, "p.yml", {})
    assert profile.auth is not None and profile.auth.keys[0].id == "frontend"
    assert profile.auth.keys[0].key_sha256 == hashlib.sha256(key.encode()).digest()


def test_bad_id_and_missing_subcommand_exit_2() -> None:
    """An id that is not an identifier, or no subcommand: exit 2 with a message."""
    bad = subprocess.run(
        [*LASSO, "keys", "new", "--id", "no spaces"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "invalid id" in bad.stderr and not bad.stdout
    bare = subprocess.run([*LASSO, "keys"], capture_output=True, text=True)
    assert bare.returncode == 2 and "lasso keys new" in bare.stderr
