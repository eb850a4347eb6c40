"""``lasso keys new [--id ID]``: a fresh client key and the profile entry that accepts it.

The key is 32 random bytes from the operating system (``secrets``), URL-safe base64 with a
``lasso_`` prefix so that secret scanners and people can recognise it. The entry holds only
its SHA-256 (``key_sha256``), so the profile can be committed without the secret; the key
itself goes to the client, once, and is not stored anywhere by Lasso.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import sys

from lasso.profiles_schema import IDENT_RULE, is_ident

__all__ = ["new_key", "run_keys"]

PREFIX = "lasso_"


def new_key() -> tuple[str, str]:
    """A fresh key and its SHA-256 in hex."""
    key = PREFIX + secrets.token_urlsafe(32)
    return key, hashlib.sha256(key.encode()).hexdigest()


def run_keys(args: argparse.Namespace) -> int:
    if getattr(args, "keys_command", None) != "new":
        print("usage: lasso keys new [--id ID]", file=sys.stderr)
        return 2
    kid = args.id or "client"
    if not is_ident(kid):
        print(f"lasso keys new: invalid id {kid!r}: {IDENT_RULE}", file=sys.stderr)
        return 2
    key, digest = new_key()
    print(f"key: {key}")
    print()
    print("# give the key to the client; paste the entry under auth.keys in the profile:")
    print(f"    - id: {kid}")
    print(f"      key_sha256: {digest}")
    return 0
