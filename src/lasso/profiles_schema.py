"""Reading helpers for profiles: a YAML tree that remembers lines, and typed checks over it.

:func:`read_tree` composes YAML text with ``yaml.SafeLoader`` (no Python objects are ever
constructed from tags) and turns the node graph into a small tree of :class:`YMap`,
:class:`YSeq` and :class:`YScalar` values that keep their 1-based line. On the way it
substitutes ``${VAR}``, ``${VAR:-default}`` (unset or empty) and ``${VAR-default}`` (unset)
in scalar values, reports duplicate keys, expands ``<<`` merge keys (explicit keys win),
and refuses recursive or exponentially aliased documents and collections nested deeper
than :data:`MAX_DEPTH` (checked on the event stream before composing, since PyYAML's
composer recurses once per level).

The ``as_*`` checks and :class:`Section` read that tree the way :mod:`lasso.profiles` needs
it: every problem goes to a :class:`Reporter` as ``(line, key path, message)`` and the
walk keeps going, so one run shows them all.

Conventions:

- A key set to ``null``, left empty, or substituted to nothing (``${KEY:-}``) means
  "use the default", like an absent key. A plain ``${KEY}`` whose variable is set but
  empty is an error: it is almost always a secret or URL that did not reach the process.
- Booleans are not integers, and numbers are not strings: ``api_key: 12345`` is an error
  (quote it), unless the value came from a substitution: then its text is used, so
  ``api_key: ${KEY}`` works for a numeric key and ``priority: ${PRIO}`` still gets an int.
- A scalar marked ``bad`` was already reported (an unresolved variable, say); the
  checks skip it silently instead of piling a second error on top.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import urlsplit

import yaml

P = ParamSpec("P")
T = TypeVar("T")

# Chain keys, aliases, provider ids and slugs appear in URL paths and metric labels.
_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
IDENT_RULE = "use letters, digits, '_', '.', '-' (at most 128)"


def is_ident(text: str) -> bool:
    return _IDENT.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class YScalar:
    value: object  # typed by the YAML 1.1 rules of SafeLoader
    line: int  # 1-based line in the file
    text: str | None = None  # the text after ${VAR} substitution, when there was one
    bad: bool = False  # already reported; checks skip it silently


@dataclass(frozen=True, slots=True)
class YSeq:
    items: tuple[YNode, ...]
    line: int


@dataclass(frozen=True, slots=True)
class YMap:
    entries: Mapping[str, tuple[int, YNode]]  # key -> (line of the key, value)
    line: int


YNode = YScalar | YSeq | YMap


class Reporter:
    """Collects ``(line, key_path, message)`` problems in the order they are found.

    Args:
        known_methods: JSON-RPC method names that a name in the profile close to one of
            them is checked against (a typo); empty: no such check.
    """

    def __init__(self, known_methods: Collection[str] = ()) -> None:
        self.problems: list[tuple[int, str, str]] = []
        self.known_methods = sorted(known_methods)

    def error(self, line: int, path: str, message: str) -> None:
        self.problems.append((line, path, message))


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def describe(node: YNode) -> str:
    """Name a value for "expected X, got Y" messages."""
    if isinstance(node, YMap):
        return "mapping"
    if isinstance(node, YSeq):
        return "list"
    value = node.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    return type(value).__name__


def suggest(word: str, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f", did you mean {close[0]!r}?" if close else ""


def _is_null(node: YNode) -> bool:
    """Null, empty, or substituted to nothing (``${KEY:-}``): all mean "not set"."""
    if not isinstance(node, YScalar) or node.bad:
        return False
    return node.value is None or node.text == ""


def _is_bad(node: YNode) -> bool:
    return isinstance(node, YScalar) and node.bad


# --- scalar checks ---------------------------------------------------------------------


def as_int(rep: Reporter, node: YNode, path: str, minimum: int | None = None) -> int | None:
    if isinstance(node, YScalar):
        if node.bad:
            return None
        value = node.value
        if isinstance(value, int) and not isinstance(value, bool):
            if minimum is None or value >= minimum:
                return value
            need = {0: "must not be negative", 1: "must be positive"}.get(
                minimum, f"must be at least {minimum}"
            )
            rep.error(node.line, path, f"{need}, got {value}")
            return None
    rep.error(node.line, path, f"expected integer, got {describe(node)}")
    return None


def as_float(rep: Reporter, node: YNode, path: str) -> float | None:
    """A finite, positive number (integers accepted)."""
    if isinstance(node, YScalar):
        if node.bad:
            return None
        value = node.value
        if isinstance(value, int | float) and not isinstance(value, bool):
            if math.isfinite(value) and value > 0:
                return float(value)
            rep.error(node.line, path, f"must be a positive number, got {value}")
            return None
    rep.error(node.line, path, f"expected number, got {describe(node)}")
    return None


def as_bool(rep: Reporter, node: YNode, path: str) -> bool | None:
    if isinstance(node, YScalar):
        if node.bad:
            return None
        if isinstance(node.value, bool):
            return node.value
    rep.error(node.line, path, f"expected boolean (true/false), got {describe(node)}")
    return None


def as_str(rep: Reporter, node: YNode, path: str) -> str | None:
    """A non-empty string; a substituted ``${VAR}`` counts as text whatever it looks like."""
    if isinstance(node, YScalar):
        if node.bad:
            return None
        value = node.text if node.text is not None else node.value
        if isinstance(value, str):
            if value:
                return value
            rep.error(node.line, path, "must not be empty")
            return None
        if value is not None:
            rep.error(node.line, path, f"expected string, got {describe(node)} (quote it)")
            return None
    rep.error(node.line, path, f"expected string, got {describe(node)}")
    return None


def as_ident(rep: Reporter, node: YNode, path: str, what: str) -> str | None:
    text = as_str(rep, node, path)
    if text is not None and not _IDENT.fullmatch(text):
        rep.error(node.line, path, f"invalid {what} {text!r}: {IDENT_RULE}")
        return None
    return text


def as_choice(rep: Reporter, node: YNode, path: str, choices: Collection[str]) -> str | None:
    text = as_str(rep, node, path)
    if text is None or text in choices:
        return text
    hint = suggest(text, choices) or f"; expected one of {', '.join(sorted(choices))}"
    rep.error(node.line, path, f"unknown value {text!r}{hint}")
    return None


def as_list(rep: Reporter, node: YNode, path: str) -> tuple[YNode, ...]:
    if isinstance(node, YSeq):
        return node.items
    if not _is_bad(node):
        rep.error(node.line, path, f"expected list, got {describe(node)}")
    return ()


def as_str_list(rep: Reporter, node: YNode, path: str) -> list[tuple[str, YNode, str]]:
    """Strings of a list, each with its node and key path; bad items are reported."""
    out = []
    for i, item in enumerate(as_list(rep, node, path)):
        text = as_str(rep, item, join(path, i))
        if text is not None:
            out.append((text, item, join(path, i)))
    return out


def as_strs(rep: Reporter, node: YNode, path: str) -> tuple[str, ...]:
    return tuple(text for text, _, _ in as_str_list(rep, node, path))


def as_url(rep: Reporter, node: YNode, path: str, schemes: tuple[str, str]) -> str | None:
    """An absolute URL with one of ``schemes`` and a host."""
    url = as_str(rep, node, path)
    if url is None:
        return None
    want = " or ".join(f"{s}://" for s in schemes)
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # a bad IPv6 literal
        rep.error(node.line, path, f"invalid URL {url!r}: {exc}")
        return None
    if parts.scheme.lower() not in schemes or not parts.netloc:
        rep.error(node.line, path, f"must be a URL starting with {want}, got {url!r}")
        return None
    problem = _port_problem(parts.netloc)
    if problem is not None:
        rep.error(node.line, path, f"{problem} in {url!r}")
        return None
    try:
        host = parts.hostname
    except ValueError as exc:
        rep.error(node.line, path, f"invalid URL {url!r}: {exc}")
        return None
    if not host:
        rep.error(node.line, path, f"URL has no host: {url!r}")
        return None
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        rep.error(node.line, path, f"URL must not contain spaces or control characters: {url!r}")
        return None
    return url


def _port_problem(netloc: str) -> str | None:
    """What is wrong with the port of ``netloc`` (``user@host:port``), or ``None``."""
    hostport = netloc.rpartition("@")[2]
    if hostport.startswith("["):  # an IPv6 literal: the port follows "]:"
        _, _, tail = hostport.partition("]")
        if not tail.startswith(":"):
            return None
        port = tail[1:]
    elif ":" in hostport:
        port = hostport.rpartition(":")[2]
    else:
        return None
    if port == "":
        return "empty port"
    if not port.isdigit():
        return f"port {port!r} is not a number"
    if not 1 <= int(port) <= 65535:
        return f"port {int(port)} is out of range (1-65535)"
    return None


# --- mappings --------------------------------------------------------------------------


class Section:
    """The entries of one mapping, checked against the key names the schema allows."""

    def __init__(
        self,
        rep: Reporter,
        node: YNode | None,
        path: str,
        allowed: Collection[str],
        *,
        line: int,
        hints: Mapping[str, str] | None = None,
    ) -> None:
        self.rep, self.path, self.line = rep, path, line
        self.entries: Mapping[str, tuple[int, YNode]] = {}
        # False when the value was not a mapping: required keys are not reported then.
        self.ok = node is None or isinstance(node, YMap) or _is_null(node)
        if isinstance(node, YMap):
            self.line = node.line
            self.entries = node.entries
            for key, (key_line, _) in node.entries.items():
                if key not in allowed:
                    hint = f" ({hints[key]})" if hints and key in hints else suggest(key, allowed)
                    rep.error(key_line, join(path, key), f"unknown key {key!r}{hint}")
        elif node is not None and not _is_null(node) and not _is_bad(node):
            rep.error(node.line, path, f"expected mapping, got {describe(node)}")

    def node(self, key: str) -> YNode | None:
        """The value of ``key``, or ``None`` when it is absent or null."""
        entry = self.entries.get(key)
        if entry is None or _is_null(entry[1]):
            return None
        return entry[1]

    def key_line(self, key: str) -> int:
        entry = self.entries.get(key)
        return entry[0] if entry is not None else self.line

    def sub(self, key: str, allowed: Collection[str]) -> Section:
        return Section(self.rep, self.node(key), join(self.path, key), allowed, line=self.line)

    def get(
        self,
        key: str,
        check: Callable[Concatenate[Reporter, YNode, str, P], T | None],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T | None:
        """``check`` the value of ``key``; absent or null gives ``None`` silently."""
        node = self.node(key)
        if node is None:
            return None
        return check(self.rep, node, join(self.path, key), *args, **kwargs)

    def need(
        self,
        key: str,
        check: Callable[Concatenate[Reporter, YNode, str, P], T | None],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T | None:
        """Like :meth:`get`, but an absent or null value is reported."""
        if self.node(key) is None and self.ok:
            if key in self.entries:
                self.rep.error(self.key_line(key), join(self.path, key), "must not be null")
            else:
                self.rep.error(self.line, join(self.path, key), "missing required key")
        return self.get(key, check, *args, **kwargs)

    def each(self, key: str) -> list[tuple[YNode, str]]:
        """The items of a list value, with their key paths."""
        node, path = self.node(key), join(self.path, key)
        items = () if node is None else as_list(self.rep, node, path)
        return [(item, join(path, i)) for i, item in enumerate(items)]

    def pairs(self, key: str) -> list[tuple[str, int, YNode, str]]:
        """The entries of a free-form mapping value: ``(name, line, value, key path)``."""
        node, path = self.node(key), join(self.path, key)
        if node is not None and not isinstance(node, YMap):
            Section(self.rep, node, path, (), line=self.line)  # reports the type
        if not isinstance(node, YMap):
            return []
        return [(k, line, v, join(path, k)) for k, (line, v) in node.entries.items()]

    def either(self, key: str, alias: str, minimum: int | None = None) -> int | None:
        """An integer that may be spelled two ways; giving both is an error."""
        if self.node(key) is not None and self.node(alias) is not None:
            self.rep.error(self.key_line(alias), join(self.path, alias), f"conflicts with {key!r}")
        first = self.get(key, as_int, minimum)
        second = self.get(alias, as_int, minimum)
        return first if first is not None else second


# --- YAML text to tree -----------------------------------------------------------------

_FENCE = re.compile(r"---[ \t]*(#.*)?\r?")


def split_front_matter(text: str) -> tuple[str | None, int, str, int]:
    """Split a file into ``(front, front_line, body, body_line)``.

    The parts are padded with newlines so that YAML marks are the file's own lines;
    ``front`` is ``None`` for a legacy file. A lone opening ``---`` (a YAML document
    start with no closing fence) is not front matter.
    """
    lines = text.lstrip("\ufeff").split("\n")
    first = next(
        (i for i, s in enumerate(lines) if s.strip() and not s.lstrip().startswith("#")), None
    )
    if first is None or not _FENCE.fullmatch(lines[first]):
        return None, 1, text, 1
    close = next((i for i in range(first + 1, len(lines)) if _FENCE.fullmatch(lines[i])), None)
    if close is None:
        return None, 1, text, 1
    front = "\n" * (first + 1) + "\n".join(lines[first + 1 : close])
    body = "\n" * (close + 1) + "\n".join(lines[close + 1 :])
    return front, first + 1, body, close + 1


_MERGE_TAG = "tag:yaml.org,2002:merge"
_COLLECTION_TAGS = (
    yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG,
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
)
_MAX_NODES = 100_000  # aliases can expand exponentially ("billion laughs")
MAX_DEPTH = 64
"""Deepest nesting of collections a profile may use (a real one needs about 8)."""
_OPEN_EVENTS = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_CLOSE_EVENTS = (yaml.SequenceEndEvent, yaml.MappingEndEvent)
_PLACEHOLDER = re.compile(r"\$\{([^{}]*)\}")
_PLACEHOLDER_SPEC = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)(.*))?", re.DOTALL)


class _TooLarge(Exception):
    pass


def read_tree(text: str, rep: Reporter, env: Mapping[str, str]) -> tuple[YNode | None, bool]:
    """Parse one YAML document into a tree; ``(None, True)`` for an empty document.

    Lines in ``text`` are the lines reported: callers keep file positions by padding a
    fragment with newlines. Returns ``ok=False`` after a syntax error (already reported).
    """
    try:
        deep = _too_deep(text)
        if deep is not None:
            rep.error(deep, "", f"nested deeper than {MAX_DEPTH} levels")
            return None, False
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        rep.error(line, "", f"YAML syntax error: {what}")
        return None, False
    except yaml.reader.ReaderError as exc:
        rep.error(text.count("\n", 0, exc.position) + 1, "", f"unreadable YAML: {exc.reason}")
        return None, False
    except yaml.YAMLError as exc:  # pragma: no cover - every PyYAML error is one of the above
        rep.error(1, "", f"YAML error: {exc}")
        return None, False
    if node is None:
        return None, True
    builder = _TreeBuilder(rep, env)
    try:
        return builder.build(node, "", node.start_mark.line + 1), True
    except _TooLarge:
        rep.error(node.start_mark.line + 1, "", "document too large (aliases expand too far)")
        return None, False


def _too_deep(text: str) -> int | None:
    """The line of the first collection nested deeper than :data:`MAX_DEPTH`, else None.

    PyYAML's parser is iterative, so this is safe on any input; syntax errors raise as
    they would from ``yaml.compose``.
    """
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, _OPEN_EVENTS):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                return mark.line + 1 if mark is not None else 1
        elif isinstance(event, _CLOSE_EVENTS):
            depth -= 1
    return None


class _TreeBuilder:
    def __init__(self, rep: Reporter, env: Mapping[str, str]) -> None:
        self.rep = rep
        self.env = env
        self.constructor = yaml.constructor.SafeConstructor()
        self.resolver: Any = yaml.resolver.Resolver()  # resolve() is untyped in the stubs
        self.budget = _MAX_NODES
        self.active: set[int] = set()  # collections being built: a revisit is a cycle

    def build(self, node: yaml.Node, path: str, line: int, depth: int = 0) -> YNode:
        self.budget -= 1
        if self.budget < 0:
            raise _TooLarge
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        if depth >= MAX_DEPTH:  # only aliases can get here: the text itself was checked
            self.rep.error(node.start_mark.line + 1, path, f"nested deeper than {MAX_DEPTH} levels")
            return YScalar(None, line, bad=True)
        if node.tag not in _COLLECTION_TAGS:
            self.rep.error(node.start_mark.line + 1, path, f"unsupported YAML tag {node.tag!r}")
            return YScalar(None, line, bad=True)
        if id(node) in self.active:
            self.rep.error(node.start_mark.line + 1, path, "recursive alias")
            return YScalar(None, line, bad=True)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                items = tuple(
                    self.build(item, join(path, i), item.start_mark.line + 1, depth + 1)
                    for i, item in enumerate(node.value)
                )
                return YSeq(items, line)
            assert isinstance(node, yaml.MappingNode)
            return YMap(self.mapping(node, path, depth), line)
        finally:
            self.active.discard(id(node))

    def mapping(
        self, node: yaml.MappingNode, path: str, depth: int = 0
    ) -> dict[str, tuple[int, YNode]]:
        entries: dict[str, tuple[int, YNode]] = {}
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.rep.error(key_line, path, "mapping keys must be plain strings")
                continue
            key = str(key_node.value)
            if key in entries:
                first = entries[key][0]
                self.rep.error(key_line, join(path, key), f"duplicate key (first at line {first})")
                continue
            entries[key] = (
                key_line,
                self.build(value_node, join(path, key), key_line, depth + 1),
            )
        for merge in merges:  # YAML merge keys: explicit keys win, then earlier sources
            sources = merge.value if isinstance(merge, yaml.SequenceNode) else [merge]
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    line = source.start_mark.line + 1
                    self.rep.error(line, path, "'<<' merges only mappings")
                    continue
                for key, entry in self.mapping(source, path, depth).items():
                    entries.setdefault(key, entry)
        return entries

    def scalar(self, node: yaml.ScalarNode, path: str) -> YScalar:
        line = node.start_mark.line + 1
        raw = str(node.value)
        text = None
        if "${" in raw:
            text = self.substitute(raw, line, path)
            if text is None:
                return YScalar(raw, line, bad=True)
            tag = node.tag
            implicit = self.resolver.resolve(yaml.ScalarNode, raw, (True, False))
            if node.style is None and tag == implicit:  # plain scalar: type the new text
                tag = self.resolver.resolve(yaml.ScalarNode, text, (True, False))
            node = yaml.ScalarNode(tag, text, node.start_mark, node.end_mark, node.style)
        try:
            value = self.constructor.construct_object(node)
        except (yaml.YAMLError, ValueError) as exc:
            self.rep.error(line, path, f"cannot read value: {exc}".splitlines()[0])
            return YScalar(raw, line, bad=True)
        return YScalar(value, line, text)

    def substitute(self, raw: str, line: int, path: str) -> str | None:
        """Replace every placeholder in ``raw``; ``None`` if one could not be resolved."""
        failed = False

        def replace(match: re.Match[str]) -> str:
            nonlocal failed
            spec = _PLACEHOLDER_SPEC.fullmatch(match.group(1))
            if spec is None:
                msg = f"invalid placeholder {match.group(0)!r}: use ${{NAME}} or ${{NAME:-default}}"
                self.rep.error(line, path, msg)
                failed = True
                return match.group(0)
            name, op, default = spec.groups()
            value = self.env.get(name)
            if (op == ":-" and not value) or (op == "-" and value is None):
                value = default
            if value is None:
                hint = f"set it, or give a default: ${{{name}:-default}}"
                self.rep.error(line, path, f"environment variable {name!r} is not set ({hint})")
                failed = True
                return match.group(0)
            if op is None and value == "":
                # An empty ${NAME} is almost always a missing secret or URL; leaving a key
                # unset on purpose is spelled ${NAME:-}.
                hint = f"give it a value, or write ${{{name}:-}} to leave the key unset"
                msg = f"environment variable {name!r} is set but empty ({hint})"
                self.rep.error(line, path, msg)
                failed = True
                return match.group(0)
            return value

        text = _PLACEHOLDER.sub(replace, raw)
        if not failed and "${" in _PLACEHOLDER.sub("", raw):
            self.rep.error(line, path, f"unterminated placeholder in {raw!r}")
            failed = True
        return None if failed else text
