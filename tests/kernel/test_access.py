"""Key lookup by digest, method globs, client addresses behind trusted proxies."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lasso.config import MethodRules
from lasso.kernel.access import (
    KeyTable,
    MethodMatcher,
    bucket_address,
    client_address,
    in_networks,
    parse_networks,
)


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def test_key_table_finds_a_key_by_its_secret() -> None:
    """The secret's digest finds its value; anything else finds nothing."""
    table = KeyTable([(digest("alpha-secret-123"), "alpha"), (digest("beta-secret-456"), "beta")])
    assert table.lookup("alpha-secret-123") == "alpha"
    assert table.lookup("beta-secret-456") == "beta"
    assert table.lookup("alpha-secret-12") is None
    assert table.lookup("") is None
    assert len(table) == 2 and repr(table) == "<KeyTable keys=2>"


@given(st.text(max_size=64))
def test_key_table_never_matches_a_wrong_secret(guess: str) -> None:
    """No string other than the secret matches (surrogates included)."""
    table = KeyTable([(digest("the-one-true-key"), 1)])
    assert (table.lookup(guess) == 1) == (guess == "the-one-true-key")


def test_key_table_rejects_a_digest_of_the_wrong_size() -> None:
    """Only 32-byte SHA-256 digests are keys."""
    with pytest.raises(ValueError):
        KeyTable([(b"short", 1)])


@pytest.mark.parametrize(
    ("allow", "deny", "method", "expected"),
    [
        ((), (), "anything", True),
        (("eth_*",), (), "eth_call", True),
        (("eth_*",), (), "debug_traceTransaction", False),
        (("eth_*", "net_*"), ("eth_send*",), "eth_sendRawTransaction", False),
        (("eth_*", "net_*"), ("eth_send*",), "net_version", True),
        ((), ("debug_*", "trace_*"), "trace_block", False),
        (("eth_get?alance",), (), "eth_getBalance", True),
        (("eth_get?alance",), (), "eth_getBBalance", False),
        (("eth_call",), (), "eth_callx", False),
        (("eth.call",), (), "ethxcall", False),
    ],
)
def test_method_globs(
    allow: tuple[str, ...], deny: tuple[str, ...], method: str, expected: bool
) -> None:
    """A method passes when some allow pattern matches (or none is given) and no deny does."""
    assert MethodMatcher(MethodRules(allow=allow, deny=deny)).allows(method) is expected


def test_method_memo_is_bounded() -> None:
    """Client-chosen method names cannot grow the memo without limit."""
    matcher = MethodMatcher(MethodRules(allow=("eth_*",)))
    for i in range(5000):
        assert matcher.allows(f"eth_x{i}")
    assert len(matcher._memo) <= 1024
    assert "eth_*" in repr(matcher)


TRUSTED = parse_networks(["10.0.0.0/8", "::1"])


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        ("203.0.113.9", "198.51.100.1", "203.0.113.9"),  # untrusted peer: header ignored
        ("10.0.0.5", None, "10.0.0.5"),
        ("10.0.0.5", "198.51.100.1", "198.51.100.1"),
        ("10.0.0.5", "1.2.3.4, 198.51.100.1, 10.0.0.7", "198.51.100.1"),  # spoofed left part
        ("10.0.0.5", "10.9.9.9, 10.0.0.7", "10.9.9.9"),  # all trusted: the leftmost
        ("10.0.0.5", "garbage", "10.0.0.5"),
        ("10.0.0.5", "1.2.3.4, garbage, 10.0.0.7", "10.0.0.7"),
        ("::1", "2001:db8::1", "2001:db8::1"),
        ("::ffff:10.0.0.5", "198.51.100.1", "198.51.100.1"),  # IPv4-mapped peer
    ],
)
def test_client_address_behind_trusted_proxies(peer: str, xff: str | None, expected: str) -> None:
    """The rightmost address that is not a trusted proxy; spoofed hops to its left are ignored."""
    assert client_address(peer, xff, TRUSTED) == expected


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    """Anyone can write X-Forwarded-For: with no trusted proxy it means nothing."""
    assert client_address("203.0.113.9", "1.1.1.1", ()) == "203.0.113.9"


def test_forwarded_walk_is_bounded() -> None:
    """A header with thousands of hops is read from its last 32 only."""
    header = ", ".join(["10.0.0.1"] * 5000 + ["10.0.0.2"])
    assert client_address("10.0.0.5", header, TRUSTED) == "10.0.0.1"


def test_in_networks() -> None:
    """Addresses inside a block match; junk never does."""
    nets = parse_networks(["192.168.0.0/16", "2001:db8::/32"])
    assert in_networks("192.168.4.4", nets) and in_networks("2001:db8::9", nets)
    assert in_networks("::ffff:192.168.1.1", nets)
    assert not in_networks("192.169.0.1", nets) and not in_networks("not-an-ip", nets)
    assert in_networks("fe80::1%eth0", parse_networks(["fe80::/10"]))


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("198.51.100.7", "198.51.100.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("::ffff:198.51.100.7", "198.51.100.7"),
        ("weird:thing", "weird:thing"),
    ],
)
def test_bucket_address_groups_ipv6_by_64(address: str, expected: str) -> None:
    """IPv6 clients are limited per /64; IPv4-mapped addresses as IPv4."""
    assert bucket_address(address) == expected
