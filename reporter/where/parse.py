"""The ``--where`` filter language: a tokenizer and a recursive-descent parser that compile the
text into a predicate over :class:`Facts` (one flow as a view shows it). Never ``eval``.

Grammar (``docs/filters.md`` has the user's version)::

    expr     := term ( ("or" | "||") term )*
    term     := factor ( ("and" | "&&") factor )*
    factor   := ("not" | "!") factor | "(" expr ")" | test
    test     := "proto" [OP] PROTO | PROTO-NAME
              | ["src" | "dst"] "host" [OP] ADDRESS | ["src" | "dst"] "net" [OP] CIDR
              | ("src" | "dst") [OP] (ADDRESS | CIDR)
              | ["src" | "dst"] "port" [OP] PORT | ("sport" | "dport") [OP] PORT
              | ("packets" | "bytes" | "duration" | "rate" | "first" | "last") OP VALUE
    OP       := "=" | "==" | "!=" | "<" | "<=" | ">" | ">="

A missing OP means ``=``. Errors raise :class:`WhereError` naming the column (1-based) of the
bad token. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import operator
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any, NamedTuple

from flowherd.models import numbers
from flowherd.models.errors import FlowherdError
from flowherd.reporter.table.order import PROTOCOLS


class WhereError(FlowherdError, ValueError):
    """A ``--where`` text that does not parse: a usage error (exit code 2)."""

    exit_code = 2

    def __init__(self, problem: str, column: int) -> None:
        self.problem = problem
        self.column = column
        super().__init__(f"--where: {problem} at column {column}")


class Facts(NamedTuple):
    """One flow as the filter sees it: addresses packed (4 or 16 bytes), times in ns."""

    src: bytes
    dst: bytes
    proto: int
    sport: int
    dport: int
    packets: int
    bytes: int
    first: int
    last: int


Pred = Callable[[Facts], bool]


class Token(NamedTuple):
    kind: str  # "word", "op", "(", ")", "and", "or", "not", "end"
    text: str
    col: int  # 1-based


_TOKEN = re.compile(
    r"\s*(?:(?P<op>==|!=|<=|>=|=|<|>)|(?P<and>&&)|(?P<or>\|\|)|(?P<not>!)|(?P<lp>\()|(?P<rp>\))"
    r"|(?P<word>[A-Za-z0-9_.:/%+µ\-]+))"
)
_KEYWORDS = {"and": "and", "or": "or", "not": "not"}


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text``, ending with an ``end`` token; :class:`WhereError` for a
    character that starts no token."""
    out: list[Token] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            out.append(Token("end", "", len(text) + 1))
            return out
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise WhereError(f"unexpected character {text[pos]!r}", pos + 1)
        kind = m.lastgroup or "word"
        word = m.group(kind)
        col = m.start(kind) + 1
        if kind == "word":
            kind = _KEYWORDS.get(word.lower(), "word")
        else:
            kind = {"lp": "(", "rp": ")"}.get(kind, kind)
        out.append(Token(kind, word, col))
        pos = m.end()


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_TIME_UNITS = {"": numbers.NS, **numbers.TIME_UNITS}
#: what each numeric field's values mean, for messages
_NUMERIC_HELP = {
    "packets": "a count such as 10 or 2k",
    "bytes": "a size such as 1500, 10k, 1.5M, 2GB or 64KiB",
    "duration": "a duration such as 500ms, 30s, 5m or 2h",
    "rate": "a rate in bit/s such as 1M, 500kbps or 2Gbit/s (B/s: bytes)",
    "first": "a time in epoch seconds such as 1704067200.5",
    "last": "a time in epoch seconds such as 1704067200.5",
}


def _number(tok: Token, field: str) -> Fraction:
    """The value of ``tok`` for numeric ``field``, in the field's base unit (packets, bytes,
    ns, bit/s, ns since the epoch), read by :mod:`flowherd.models.numbers`."""
    what = _NUMERIC_HELP[field]
    try:
        if field == "rate":
            return numbers.bit_rate(tok.text, what)
        if field in ("first", "last"):
            return numbers.scaled(
                tok.text, {"": numbers.NS}, what, whole=False, hi=numbers.MAX_EPOCH_NS
            )
        units = {"packets": numbers.COUNT_UNITS, "bytes": numbers.SIZE_UNITS}.get(field)
        return numbers.scaled(tok.text, units or _TIME_UNITS, what, whole=False)
    except numbers.NumberRangeError as exc:
        raise WhereError(f"{field}: {exc}", tok.col) from None
    except numbers.NumberError:
        raise WhereError(f"{field} needs {what}, not {numbers.shown(tok.text)}", tok.col) from None


def _port(tok: Token) -> int:
    try:
        return numbers.count(tok.text, "a port", hi=0xFFFF)
    except numbers.NumberError:
        raise WhereError(
            f"a port is a number 0-65535, not {numbers.shown(tok.text)}", tok.col
        ) from None


def _proto(tok: Token) -> int:
    t = tok.text.lower()
    if t in PROTOCOLS:
        return PROTOCOLS[t]
    try:
        return numbers.count(t, "a protocol", hi=255)
    except numbers.NumberError:
        names = ", ".join(PROTOCOLS)
        raise WhereError(
            f"unknown protocol {numbers.shown(tok.text)} (use {names} or 0-255)", tok.col
        ) from None


def _network(tok: Token, cidr: bool) -> tuple[int, int, int]:
    """``(length in bytes, network as int, mask as int)`` of an address or CIDR."""
    try:
        net = ipaddress.ip_network(tok.text, strict=False)
    except ValueError:
        what = "a network such as 10.0.0.0/8" if cidr else "an IP address"
        raise WhereError(f"expected {what}, not {tok.text!r}", tok.col) from None
    if not cidr and net.prefixlen != net.max_prefixlen:
        raise WhereError(f"host takes one address, not {tok.text!r}: use net", tok.col)
    n = 4 if net.version == 4 else 16
    return n, int(net.network_address), int(net.netmask)


def _in(n: int, net: int, mask: int) -> Callable[[bytes], bool]:
    def test(addr: bytes) -> bool:
        return len(addr) == n and int.from_bytes(addr, "big") & mask == net

    return test


NUMERIC: dict[str, Callable[[Facts], int | Fraction]] = {
    "packets": lambda f: f.packets,
    "bytes": lambda f: f.bytes,
    "duration": lambda f: f.last - f.first,
    # bit/s over the duration; 0 for one packet or no duration (as the tables show it)
    "rate": lambda f: (
        Fraction(f.bytes * 8 * 10**9, f.last - f.first) if f.packets > 1 and f.last > f.first else 0
    ),
    "first": lambda f: f.first,
    "last": lambda f: f.last,
}
FIELDS = ("proto", "host", "net", "port", "src", "dst", "sport", "dport", *NUMERIC)


#: the deepest nesting of parentheses and ``not`` a filter may have: the parser recurses once
#: per level, and so does the predicate it builds, so no Python recursion limit is reachable
MAX_DEPTH = 100


class Parser:
    """Recursive descent over :func:`tokenize`'s tokens; :meth:`parse` returns the predicate.
    Nesting deeper than :data:`MAX_DEPTH` is a :class:`WhereError`."""

    def __init__(self, text: str) -> None:
        self.toks = tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> Token:
        return self.toks[self.i]

    def next(self) -> Token:
        tok = self.toks[self.i]
        if tok.kind != "end":
            self.i += 1
        return tok

    def parse(self) -> Pred:
        if self.peek().kind == "end":
            raise WhereError("empty filter", 1)
        pred = self.expr()
        tok = self.peek()
        if tok.kind != "end":
            raise WhereError(f"expected and, or or the end, not {tok.text!r}", tok.col)
        return pred

    def expr(self) -> Pred:
        parts = [self.term()]
        while self.peek().kind == "or":
            self.next()
            parts.append(self.term())
        if len(parts) == 1:
            return parts[0]
        return lambda f: any(p(f) for p in parts)

    def term(self) -> Pred:
        parts = [self.factor()]
        while self.peek().kind == "and":
            self.next()
            parts.append(self.factor())
        if len(parts) == 1:
            return parts[0]
        return lambda f: all(p(f) for p in parts)

    def factor(self) -> Pred:
        tok = self.next()
        if tok.kind in ("not", "("):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise WhereError(
                    f"the filter nests deeper than {MAX_DEPTH} levels of parentheses and not",
                    tok.col,
                )
            try:
                return self.nested(tok)
            finally:
                self.depth -= 1
        if tok.kind != "word":
            raise WhereError(f"expected a test, not {tok.text or 'the end'!r}", tok.col)
        return self.test(tok)

    def nested(self, tok: Token) -> Pred:
        """What follows a ``not`` or an opening parenthesis."""
        if tok.kind == "not":
            inner = self.factor()
            return lambda f: not inner(f)
        inner = self.expr()
        close = self.next()
        if close.kind != ")":
            raise WhereError(f"expected ')', not {close.text or 'the end'!r}", close.col)
        return inner

    def op(self, eq_only: bool = False) -> tuple[str, Token]:
        """The comparison (``=`` if none is written) and the value token after it."""
        tok = self.peek()
        op = "="
        if tok.kind == "op":
            self.next()
            op = tok.text
            if eq_only and op not in ("=", "==", "!="):
                raise WhereError(f"{op} does not apply here: use = or !=", tok.col)
        value = self.next()
        if value.kind != "word":
            raise WhereError(f"expected a value, not {value.text or 'the end'!r}", value.col)
        return op, value

    def test(self, tok: Token) -> Pred:
        name = tok.text.lower()
        if name in PROTOCOLS:  # "tcp" alone
            p = PROTOCOLS[name]
            return lambda f: f.proto == p
        if name == "proto":
            op, value = self.op(eq_only=True)
            p = _proto(value)
            return (lambda f: f.proto != p) if op == "!=" else (lambda f: f.proto == p)
        side = None
        if name in ("src", "dst"):
            side = name
            nxt = self.peek()
            if nxt.kind == "word" and nxt.text.lower() in ("host", "net", "port"):
                name = self.next().text.lower()
            else:
                op, value = self.op(eq_only=True)
                return self.address(side, "net" if "/" in value.text else "host", op, value)
        if name in ("host", "net"):
            op, value = self.op(eq_only=True)
            return self.address(side, name, op, value)
        if name in ("port", "sport", "dport"):
            if name != "port":
                side = "src" if name == "sport" else "dst"
            op, value = self.op()
            return self.port(side, op, _port(value))
        if name in NUMERIC:
            optok = self.peek()
            if optok.kind != "op":
                raise WhereError(f"{name} needs a comparison (= != < <= > >=)", optok.col)
            op, value = self.op()
            measure, cmp, bound = NUMERIC[name], _OPS[op], _number(value, name)
            return lambda f: cmp(measure(f), bound)
        raise WhereError(f"unknown field {tok.text!r}", tok.col)

    @staticmethod
    def address(side: str | None, kind: str, op: str, value: Token) -> Pred:
        inside = _in(*_network(value, cidr=kind == "net"))
        if side == "src":
            pred: Pred = lambda f: inside(f.src)  # noqa: E731
        elif side == "dst":
            pred = lambda f: inside(f.dst)  # noqa: E731
        else:
            pred = lambda f: inside(f.src) or inside(f.dst)  # noqa: E731
        return (lambda f: not pred(f)) if op == "!=" else pred

    @staticmethod
    def port(side: str | None, op: str, port: int) -> Pred:
        if side is None and op == "!=":  # neither port is it: "not port N"
            return lambda f: f.sport != port and f.dport != port
        cmp = _OPS[op]
        if side == "src":
            return lambda f: cmp(f.sport, port)
        if side == "dst":
            return lambda f: cmp(f.dport, port)
        return lambda f: cmp(f.sport, port) or cmp(f.dport, port)


def parse(text: str) -> Pred:
    """The predicate of filter ``text``; :class:`WhereError` if it does not parse."""
    return Parser(text).parse()
