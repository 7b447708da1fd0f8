"""``${...}`` in netdef text: variables and integer arithmetic, never ``eval``.

Grammar (a tokenizer and a recursive-descent parser)::

    expr  := term (("+" | "-") term)*
    term  := unary (("*" | "/" | "//" | "%") unary)*
    unary := "-" unary | atom
    atom  := INT | NAME ("[" expr "]")* | "(" expr ")"

``table[key]`` looks ``key`` up in the mapping variable ``table``: ``key`` is a name
(its value, text or an integer, is the key), an integer or an integer expression.  It
is how one variable selects a set of values, e.g. a layout::

    vars:
      layout: deeplab                                   # deeplab | torchvision
      output_stride_of: {deeplab: 16, torchvision: 8}
      output_stride: "${output_stride_of[layout]}"

A key the mapping lacks is an error that lists its keys.

``/`` and ``//`` are both floor division (``7 / 2`` is 3, ``-7 / 2`` is -4) and ``%`` is
the matching remainder, as in Caffe-style size formulas.  Every operand of an operator
must be an integer (booleans are not integers); results must stay within 64 bits.

In a text value, ``$$`` stands for one literal ``$``; a ``$`` followed by neither ``{``
nor ``$`` is kept as it is.  A text that is exactly one ``${...}`` takes the value of the
expression: an integer, or for a bare name the variable's own value (text, float, list,
...).  Anywhere else, ``${...}`` is replaced by the value written as text, and the
text made that way may be at most :data:`MAX_TEXT` characters long (so variables that
double each other, ``v2: "${v1}${v1}"``, stop with a located error).
"""
from __future__ import annotations

import functools
import re
from typing import Any, Callable, Mapping

from .errors import Loc, VariableError, did_you_mean

__all__ = ["Scope", "substitute_text", "IDENT_RE", "MAX_TEXT"]

IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOKEN_RE = re.compile(r"\s*(?:(?P<int>[0-9]+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
                       r"|(?P<op>//|[-+*/%()\[\]]))")
_MAX_NEST = 50
_LIMIT = 2 ** 63
MAX_TEXT = 65_536        # characters in one text made by ${...} substitution


class Scope:
    """Names visible to an expression: a chain of dicts, innermost first.  A dict with a
    ``resolve(name)`` method (the netdef's variables) computes values on first use."""

    def __init__(self, *layers: dict):
        self.layers = [layer for layer in layers if layer is not None]

    def child(self, values: dict) -> "Scope":
        return Scope(values, *self.layers)

    def lookup(self, name: str) -> tuple[bool, Any]:
        for layer in self.layers:
            if name in layer:
                value = layer[name]
                if callable(getattr(layer, "resolve", None)):
                    value = layer.resolve(name)
                return True, value
        return False, None

    def names(self) -> list[str]:
        seen: dict[str, None] = {}
        for layer in self.layers:
            for key in layer:
                seen.setdefault(key, None)
        return list(seen)


def _at(base: Loc | None, exact: Loc | None, offset: int) -> Loc | None:
    if exact is not None:
        return Loc(exact.file, exact.line, exact.col + offset)
    return base


def _undefined(name: str, scope: Scope, loc: Loc | None) -> VariableError:
    names = scope.names()
    hint = did_you_mean(name, names)
    if hint is None:
        shown = ", ".join(sorted(names)[:12]) + (", ..." if len(names) > 12 else "")
        hint = f"known variables: {shown}" if names else "define it under 'vars:'"
    return VariableError(f"undefined variable '{name}'", loc=loc, hint=hint)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if value is None:
        return "null"
    return type(value).__name__


class _Failure(Exception):
    """A malformed expression: ``what`` at ``pos`` (relative to the expression)."""

    def __init__(self, what: str, pos: int, hint: str):
        super().__init__(what)
        self.what, self.pos, self.hint = what, pos, hint


class _Site:
    """Where an expression is written, for error positions."""

    def __init__(self, expr: str, offset: int, base: Loc | None, exact: Loc | None):
        self.expr = expr
        self.offset = offset          # where expr starts inside the whole text
        self.base, self.exact = base, exact

    def loc(self, pos: int) -> Loc | None:
        return _at(self.base, self.exact, self.offset + pos)

    def error(self, what: str, pos: int, hint: str) -> VariableError:
        return VariableError(what, loc=self.loc(pos), hint=hint)


class _Parser:
    def __init__(self, expr: str):
        self.expr = expr
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(expr):
            if expr[pos:].strip() == "":
                break
            m = _TOKEN_RE.match(expr, pos)
            if m is None:
                bad = len(expr[pos:]) - len(expr[pos:].lstrip()) + pos
                raise self.error(f"unexpected character '{expr[bad]}' in '${{{expr}}}'", bad,
                                 "expressions use integers, variable names, + - * / // %, "
                                 "parentheses and table[key]")
            kind = m.lastgroup
            self.tokens.append((kind, m.group(kind), m.start(kind)))
            pos = m.end()
        self.i = 0
        self.depth = 0

    def error(self, what: str, pos: int, hint: str) -> _Failure:
        return _Failure(what, pos, hint)

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self):
        tok = self.peek()
        self.i += 1
        return tok

    def parse(self):
        if not self.tokens:
            raise self.error("empty expression '${}'", -2, "write a variable name or an "
                             "integer expression inside ${...}, or $$ for a literal '$'")
        node = self.sum()
        tok = self.peek()
        if tok is not None:
            raise self.error(f"unexpected '{tok[1]}' in '${{{self.expr}}}'", tok[2],
                             "check the operators and parentheses")
        return node

    def sum(self):
        node = self.term()
        while (tok := self.peek()) is not None and tok[1] in "+-" and tok[0] == "op":
            self.take()
            node = ("bin", tok[1], node, self.term(), tok[2])
        return node

    def term(self):
        node = self.unary()
        while (tok := self.peek()) is not None and tok[0] == "op" and tok[1] in ("*", "/", "//", "%"):
            self.take()
            node = ("bin", tok[1], node, self.unary(), tok[2])
        return node

    def unary(self):
        tok = self.peek()
        if tok is not None and tok == ("op", "-", tok[2]):
            self.take()
            self.nest(tok[2])
            node = ("neg", self.unary(), tok[2])
            self.depth -= 1
            return node
        return self.atom()

    def nest(self, pos: int) -> None:
        self.depth += 1
        if self.depth > _MAX_NEST:
            raise self.error(f"expression nests deeper than {_MAX_NEST} levels", pos,
                             "simplify the expression")

    def atom(self):
        tok = self.take()
        if tok is None:
            raise self.error(f"incomplete expression '${{{self.expr}}}'", len(self.expr),
                             "an operand is missing at the end")
        kind, text, pos = tok
        if kind == "int":
            if len(text) > 19 or int(text) >= _LIMIT:
                raise self.error(f"integer {text[:20]} is too large", pos,
                                 "integers in ${...} must fit in 64 bits")
            return ("int", int(text), pos)
        if kind == "name":
            node = ("name", text, pos)
            while (tok := self.peek()) is not None and tok[0] == "op" and tok[1] == "[":
                self.take()
                self.nest(tok[2])
                key = self.sum()
                self.depth -= 1
                close = self.take()
                if close is None or close[1] != "]":
                    at = close[2] if close else len(self.expr)
                    raise self.error(f"missing ']' in '${{{self.expr}}}'", at, "close the brackets")
                node = ("index", node, key, tok[2])
            return node
        if text == "(":
            self.nest(pos)
            node = self.sum()
            self.depth -= 1
            close = self.take()
            if close is None or close[1] != ")":
                at = close[2] if close else len(self.expr)
                raise self.error(f"missing ')' in '${{{self.expr}}}'", at,
                                 "close the parenthesis")
            return node
        raise self.error(f"unexpected '{text}' in '${{{self.expr}}}'", pos,
                         "an operand (integer, name or '(') is expected here")


@functools.lru_cache(maxsize=4096)
def _parse(expr: str):
    return _Parser(expr).parse()


def _what(node) -> str:
    """The source text of a name or index node, for messages."""
    if node[0] == "name":
        return node[1]
    if node[0] == "index":
        return f"{_what(node[1])}[{_what(node[2])}]"
    return str(node[1]) if node[0] == "int" else "the key"


def _value(parser: _Site, node, scope: Scope) -> Any:
    """A name's or a lookup's own value (any type); anything else is integer arithmetic."""
    kind = node[0]
    if kind == "name":
        found, value = scope.lookup(node[1])
        if not found:
            raise _undefined(node[1], scope, parser.loc(node[2]))
        return value
    if kind == "index":
        table = _value(parser, node[1], scope)
        if not isinstance(table, Mapping):
            raise parser.error(f"'{_what(node[1])}' is {_kind(table)} ({_short(table)}), not a mapping "
                               "to look a key up in", node[3],
                               "define it as a mapping, e.g. {deeplab: 16, torchvision: 8}")
        key = _value(parser, node[2], scope)
        if type(key) is int and key not in table and str(key) in table:   # YAML keys may stay text
            key = str(key)
        if not isinstance(key, (str, int)) or isinstance(key, bool) or key not in table:
            keys = ", ".join(str(k) for k in table)
            raise parser.error(f"'{_what(node[2])}' is {_short(key)}, which '{_what(node[1])}' has no "
                               f"entry for", node[3], f"use one of: {keys}")
        return table[key]
    return _evaluate(parser, node, scope)


def _evaluate(parser: _Site, node, scope: Scope) -> int:
    kind = node[0]
    if kind == "int":
        return node[1]
    if kind == "index":
        value = _value(parser, node, scope)
        if type(value) is not int:
            raise parser.error(f"arithmetic needs integers, but '{_what(node)}' is "
                               f"{_kind(value)} ({_short(value)})", node[3],
                               "use it alone to insert it, or give the entry an integer value")
        return value
    if kind == "name":
        name, pos = node[1], node[2]
        found, value = scope.lookup(name)
        if not found:
            raise _undefined(name, scope, parser.loc(pos))
        if type(value) is not int:
            raise parser.error(f"arithmetic needs integers, but '{name}' is "
                               f"{_kind(value)} ({_short(value)})", pos,
                               "use ${" + name + "} alone to insert it, or give it an integer value")
        return value
    if kind == "neg":
        result = -_evaluate(parser, node[1], scope)
        pos = node[2]
    else:
        op, pos = node[1], node[4]
        a = _evaluate(parser, node[2], scope)
        b = _evaluate(parser, node[3], scope)
        if op in ("/", "//", "%") and b == 0:
            raise parser.error(f"{'modulo' if op == '%' else 'division'} by zero in "
                               f"'${{{parser.expr}}}'", pos, "check the divisor's value")
        result = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
                  "/": lambda: a // b, "//": lambda: a // b, "%": lambda: a % b}[op]()
    if not -_LIMIT <= result < _LIMIT:
        raise parser.error(f"'${{{parser.expr}}}' is out of the 64-bit integer range", pos,
                           "check the values it uses")
    return result


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _as_text(value: Any, expr: str, loc: Loc | None) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise VariableError(f"'${{{expr}}}' is {_kind(value)} and cannot be put inside text",
                        loc=loc, hint="use it as the whole value, without text around it")


def _expression(expr: str, offset: int, scope: Scope, base: Loc | None, exact: Loc | None) -> Any:
    site = _Site(expr, offset, base, exact)
    try:
        tree = _parse(expr)
    except _Failure as fail:
        raise site.error(fail.what, fail.pos, fail.hint) from None
    return _value(site, tree, scope)


def substitute_text(text: str, scope: Scope, base: Loc | None = None,
                    exact: Loc | None = None, copy: Callable[[Any], Any] = lambda v: v) -> Any:
    """Replace every ``${...}`` in ``text`` and unescape ``$$``.

    ``base`` is where the text is written; ``exact`` where its first character is when
    columns map one to one (so errors can point inside the text).  ``copy`` is applied
    to a whole-value result (so lists and mappings are not shared)."""
    if "$" not in text:
        return text
    pieces: list[tuple[str, Any]] = []   # ("text", str) | ("expr", (expr, offset))
    i, n = 0, len(text)
    start = 0
    while i < n:
        c = text[i]
        if c != "$" or i + 1 >= n:
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            pieces.append(("text", text[start:i + 1]))
            i += 2
            start = i
        elif nxt == "{":
            close = text.find("}", i + 2)
            if close < 0:
                raise VariableError("unterminated '${' (no closing '}')", loc=_at(base, exact, i),
                                    hint="close it with '}', or write $$ for a literal '$'")
            pieces.append(("text", text[start:i]))
            pieces.append(("expr", (text[i + 2:close], i + 2)))
            i = close + 1
            start = i
        else:
            i += 1
    pieces.append(("text", text[start:]))
    pieces = [p for p in pieces if not (p[0] == "text" and p[1] == "")]
    if len(pieces) == 1 and pieces[0][0] == "expr":
        expr, offset = pieces[0][1]
        return copy(_expression(expr, offset, scope, base, exact))
    out = []
    size = 0
    for kind, value in pieces:
        if kind == "text":
            out.append(value)
        else:
            expr, offset = value
            result = _expression(expr, offset, scope, base, exact)
            out.append(_as_text(result, expr, _at(base, exact, offset - 2)))
        size += len(out[-1])
        if size > MAX_TEXT:
            where = _at(base, exact, value[1] - 2) if kind == "expr" else base
            raise VariableError(f"the text made by substitution is longer than {MAX_TEXT:,} "
                                "characters", loc=where,
                                hint="a variable probably repeats another one that is already "
                                     "long (v2: \"${v1}${v1}\" doubles at each step)")
    return "".join(out)
