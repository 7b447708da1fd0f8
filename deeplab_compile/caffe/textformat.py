"""Protobuf text format (Caffe's prototxt) read against a message descriptor, with the
line and column of every field kept for error messages.

``parse(text, filename, descriptor)`` returns a :class:`Message`: ``fields`` maps each
field name to a list of :class:`Field` (one per occurrence; a non-repeated field has
one).  A scalar's ``value`` is a Python value (int, float, bool, text; an enum value is
its name); a message's ``value`` is a :class:`Message`.  What is read:

* ``#`` comments, ``name: value``, ``name { ... }``, ``name: { ... }``, ``name < ... >``,
  the list form ``name: [1, 2]``, optional ``,``/``;`` after a field;
* numbers (``-1``, ``1e-3``, ``0x10``, ``inf``, ``nan``), ``true``/``false``, enum names
  (or numbers), quoted text with C escapes, adjacent quoted pieces joined;
* DeepLab's placeholders ``${NAME}`` anywhere a scalar may stand, quoted or not; they
  stay text (``"${NUM_LABELS}"``) and their names are collected in ``placeholders``.

Errors (syntax, unknown field, wrong value type, a non-repeated field given twice) raise
:class:`NetDefSyntaxError` located at the offending token.
"""
from __future__ import annotations

import bisect
import codecs
import re
from dataclasses import dataclass, field as dc_field
from typing import Any

from google.protobuf.descriptor import FieldDescriptor as FD

from ..netdef.errors import Loc, NetDefSyntaxError, did_you_mean

__all__ = ["Field", "Message", "parse", "is_repeated", "PLACEHOLDER_RE"]

PLACEHOLDER_RE = re.compile(r"\$\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}")
_NAME_IN_EXPR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\n\f\v]+|\#[^\n]*)
  | (?P<placeholder>\$\{[^}\n]*\})
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>-?(?:0[xX][0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?[fF]?))
  | (?P<ident>-?[A-Za-z_][A-Za-z0-9_]*)
  | (?P<sym>[{}<>\[\]:,;])
""", re.X)

_INTS = {FD.TYPE_INT32: (-2 ** 31, 2 ** 31 - 1), FD.TYPE_INT64: (-2 ** 63, 2 ** 63 - 1),
         FD.TYPE_UINT32: (0, 2 ** 32 - 1), FD.TYPE_UINT64: (0, 2 ** 64 - 1),
         FD.TYPE_SINT32: (-2 ** 31, 2 ** 31 - 1), FD.TYPE_SINT64: (-2 ** 63, 2 ** 63 - 1)}
_FLOATS = (FD.TYPE_FLOAT, FD.TYPE_DOUBLE)
_MAX_INT_CHARS = 24     # "-0x8000000000000000" and "-9223372036854775808" fit; longer is out of range


def is_repeated(fd) -> bool:
    """Whether a field is repeated (``is_repeated`` on new protobuf, ``label`` before)."""
    flag = getattr(fd, "is_repeated", None)
    return bool(flag) if flag is not None else fd.label == FD.LABEL_REPEATED


@dataclass
class Field:
    name: str
    value: Any
    loc: Loc                              # where the field name is written
    value_loc: Loc                        # where the value starts
    content_loc: Loc | None = None        # first character inside a simple quoted text
    is_message: bool = False


@dataclass
class Message:
    descriptor: Any
    loc: Loc
    fields: dict[str, list[Field]] = dc_field(default_factory=dict)

    def get(self, name: str, default: Any = None) -> Any:
        """The value of a non-repeated field, or ``default``."""
        items = self.fields.get(name)
        return items[-1].value if items else default

    def values(self, name: str) -> list:
        return [f.value for f in self.fields.get(name, [])]

    def first(self, name: str) -> Field | None:
        items = self.fields.get(name)
        return items[0] if items else None


class _Tok:
    __slots__ = ("kind", "text", "pos", "end")

    def __init__(self, kind, text, pos, end):
        self.kind, self.text, self.pos, self.end = kind, text, pos, end


class _Parser:
    def __init__(self, text: str, filename: str):
        self.text, self.filename = text, filename
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.toks = self._lex()
        self.i = 0
        self.placeholders: dict[str, Loc] = {}

    # -- positions and errors
    def loc(self, pos: int) -> Loc:
        line = bisect.bisect_right(self.line_starts, pos)
        return Loc(self.filename, line, pos - self.line_starts[line - 1] + 1)

    def error(self, pos: int, what: str, hint: str) -> NetDefSyntaxError:
        return NetDefSyntaxError(what, loc=self.loc(pos), hint=hint)

    def _lex(self) -> list[_Tok]:
        out, pos, text = [], 0, self.text
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                ch = text[pos]
                if ch in "\"'":
                    raise self.error(pos, "unterminated quoted text",
                                     "close the quote on the same line")
                if text.startswith("${", pos):
                    raise self.error(pos, "unterminated '${' (no closing '}')",
                                     "write ${NAME}")
                raise self.error(pos, f"unexpected character {ch!r}",
                                 "prototxt fields are written 'name: value' or 'name { ... }'")
            kind = m.lastgroup
            if kind != "ws":
                out.append(_Tok(kind, m.group(), pos, m.end()))
            pos = m.end()
        return out

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def next(self, what: str) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise self.error(len(self.text), f"unexpected end of file; expected {what}",
                             "a block is probably not closed with '}'")
        self.i += 1
        return tok

    # -- grammar
    def message(self, desc, loc: Loc, close: str | None) -> Message:
        msg = Message(desc, loc)
        while True:
            tok = self.peek()
            if tok is None:
                if close is not None:
                    raise self.error(len(self.text), f"unexpected end of file; '{close}' expected",
                                     f"close the block opened at line {loc.line} with '{close}'")
                return msg
            if close is not None and tok.kind == "sym" and tok.text == close:
                self.i += 1
                return msg
            if tok.kind != "ident" or tok.text.startswith("-"):
                raise self.error(tok.pos, f"expected a field name, got '{tok.text}'",
                                 "write 'name: value' or 'name { ... }'")
            self.i += 1
            self.field(msg, tok)
            nxt = self.peek()
            if nxt is not None and nxt.kind == "sym" and nxt.text in ",;":
                self.i += 1

    def field(self, msg: Message, name_tok: _Tok) -> None:
        desc = msg.descriptor
        name = name_tok.text
        fd = desc.fields_by_name.get(name)
        if fd is None:
            names = [f.name for f in desc.fields]
            raise self.error(name_tok.pos, f"{desc.name} has no field '{name}'",
                             did_you_mean(name, names) or f"its fields are: {', '.join(names)}")
        is_msg = fd.type == FD.TYPE_MESSAGE
        tok = self.next("':' or '{'")
        colon = tok.kind == "sym" and tok.text == ":"
        if colon:
            tok = self.next("a value")
        opened = tok.kind == "sym" and tok.text in "{<"
        items: list[tuple[Any, int, Loc | None]]
        if opened:
            if not is_msg:
                raise self.error(tok.pos, f"field '{name}' of {desc.name} takes a value, not a block",
                                 f"write '{name}: value'")
            sub = self.message(fd.message_type, self.loc(name_tok.pos), "}" if tok.text == "{" else ">")
            items = [(sub, tok.pos, None)]
        else:
            if is_msg:
                raise self.error(tok.pos, f"field '{name}' of {desc.name} is a block",
                                 f"write '{name} {{ ... }}'")
            if not colon:
                raise self.error(tok.pos, f"expected ':' after '{name}'", f"write '{name}: value'")
            if tok.kind == "sym" and tok.text == "[":
                if not is_repeated(fd):
                    raise self.error(tok.pos, f"field '{name}' of {desc.name} takes one value, not a list",
                                     f"write '{name}: value'")
                items = []
                while True:
                    t = self.next("a value or ']'")
                    if t.kind == "sym" and t.text == "]" and not items:
                        break
                    items.append(self.scalar(fd, t))
                    t = self.next("',' or ']'")
                    if t.kind == "sym" and t.text == "]":
                        break
                    if not (t.kind == "sym" and t.text == ","):
                        raise self.error(t.pos, f"expected ',' or ']', got '{t.text}'",
                                         "separate list items with ','")
            else:
                items = [self.scalar(fd, tok)]
        existing = msg.fields.setdefault(name, [])
        if existing and not is_repeated(fd):
            first = existing[0].loc
            raise self.error(name_tok.pos, f"field '{name}' of {desc.name} is given twice",
                             f"it is already given at line {first.line}; keep one of them")
        for value, pos, content in items:
            existing.append(Field(name, value, self.loc(name_tok.pos), self.loc(pos), content, is_msg))

    def scalar(self, fd, tok: _Tok) -> tuple[Any, int, Loc | None]:
        kind, text = tok.kind, tok.text
        ftype = fd.type

        def bad(what: str, hint: str):
            return self.error(tok.pos, f"field '{fd.name}' {what}, got {text}"[:300], hint)

        if kind == "placeholder":
            self.note_placeholders(text, tok.pos)
            return text, tok.pos, self.loc(tok.pos)
        if kind == "string":
            value, content = self.strings(tok)
            if ftype not in (FD.TYPE_STRING, FD.TYPE_BYTES):
                if PLACEHOLDER_RE.fullmatch(value.strip()):
                    return value.strip(), tok.pos, content
                raise bad("takes " + self.kind_name(fd) + ", not quoted text", "remove the quotes")
            return value, tok.pos, content
        if ftype in (FD.TYPE_STRING, FD.TYPE_BYTES):
            raise bad("takes quoted text", f'write {fd.name}: "..."')
        if ftype == FD.TYPE_BOOL:
            if text in ("true", "True", "t", "1"):
                return True, tok.pos, None
            if text in ("false", "False", "f", "0"):
                return False, tok.pos, None
            raise bad("takes true or false", f"write {fd.name}: true")
        if ftype == FD.TYPE_ENUM:
            names = [v.name for v in fd.enum_type.values]
            if kind == "ident" and text in fd.enum_type.values_by_name:
                return text, tok.pos, None
            if (kind == "number" and len(text) <= _MAX_INT_CHARS and re.fullmatch(r"-?[0-9]+", text)
                    and int(text) in fd.enum_type.values_by_number):
                return fd.enum_type.values_by_number[int(text)].name, tok.pos, None
            raise bad(f"takes one of {', '.join(names)}",
                      did_you_mean(text, names) or f"write e.g. {fd.name}: {names[0]}")
        if ftype in _INTS:
            if kind != "number" or not re.fullmatch(r"-?(?:0[xX][0-9a-fA-F]+|[0-9]+)", text):
                raise bad("takes an integer", "write a whole number")
            if len(text) > _MAX_INT_CHARS:      # int() of a 5000-digit literal is refused by Python itself
                lo, hi = _INTS[ftype]
                raise bad(f"has an integer literal that is too long ({len(text)} characters)",
                          f"use a value in [{lo}, {hi}]")
            value = int(text, 0) if not re.fullmatch(r"-?0[0-9]+", text) else int(text, 8)
            lo, hi = _INTS[ftype]
            if not lo <= value <= hi:
                raise bad(f"must be in [{lo}, {hi}]", "use a value in range")
            return value, tok.pos, None
        if ftype in _FLOATS:
            low = text.lower()
            if kind == "ident" and low.lstrip("-") in ("inf", "infinity", "nan"):
                return float(low), tok.pos, None
            if kind != "number" or low.startswith(("0x", "-0x")):
                raise bad("takes a number", "write e.g. 0.5")
            return float(low.rstrip("f")), tok.pos, None
        raise bad("has a type this reader does not support", "remove the field")

    @staticmethod
    def kind_name(fd) -> str:
        if fd.type == FD.TYPE_BOOL:
            return "true or false"
        if fd.type == FD.TYPE_ENUM:
            return "an enum name"
        return "a number"

    def strings(self, tok: _Tok) -> tuple[str, Loc | None]:
        pieces, first = [], tok
        while True:
            raw = tok.text[1:-1]
            if "\\" in raw:
                try:
                    raw = codecs.escape_decode(raw.encode("utf-8"))[0].decode("utf-8")
                except (ValueError, UnicodeDecodeError):
                    raise self.error(tok.pos, "bad escape sequence in quoted text",
                                     "write \\\\ for a backslash") from None
            pieces.append(raw)
            nxt = self.peek()
            if nxt is None or nxt.kind != "string":
                break
            self.i += 1
            tok = nxt
        value = "".join(pieces)
        simple = len(pieces) == 1 and "\\" not in first.text
        content = self.loc(first.pos + 1) if simple else None
        self.note_placeholders(value, first.pos + 1 if simple else first.pos)
        return value, content

    def note_placeholders(self, text: str, pos: int) -> None:
        for m in re.finditer(r"\$\{([^}]*)\}", text):
            for name in _NAME_IN_EXPR.findall(m.group(1)):
                self.placeholders.setdefault(name, self.loc(pos + m.start()))


def parse(text: str, filename: str, descriptor) -> tuple[Message, dict[str, Loc]]:
    """Read ``text`` as a ``descriptor`` message; returns it and the ``${NAME}``
    placeholders found (name -> first position)."""
    p = _Parser(text, filename)
    msg = p.message(descriptor, Loc(filename, 1, 1), None)
    return msg, p.placeholders
