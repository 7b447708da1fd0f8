"""Reading YAML netdef text into plain values that remember where they came from.

``load(path)`` and ``loads(text, filename)`` return a :class:`~.nodes.Map` (a ``dict``)
whose nested mappings are :class:`~.nodes.Map` and whose lists are :class:`~.nodes.Seq`
(:mod:`.nodes`: each knows its own position, and its keys' or items'); scalars stay
plain Python values.  ``dump(doc)`` writes an expanded netdef back as YAML.

The reader is strict where YAML is forgiving:

* only a ``yaml.SafeLoader`` subclass is used (never an unsafe load);
* a key given twice in one mapping is an error (YAML would keep the last one);
* scalars follow the YAML 1.2 core schema, so ``yes``/``no``/``on``/``off`` are text
  (only ``true``/``false`` are booleans), ``1e-3`` is a float, ``010`` is the integer 10
  and dates stay text;
* mapping keys are always text (``1: x`` has the key ``"1"``);
* ``${...}`` may be written unquoted even inside ``{...}`` and ``[...]``
  (``{num_output: ${num_classes}}``, ``[3, ${crop}, ${crop}]``);
* anchors and aliases (``&w`` / ``*w``) work, but an alias inside its own anchor, YAML
  merge keys (``<<``), explicit tags such as ``!!set`` and nesting deeper than
  :data:`MAX_DEPTH` levels are errors;
* a document may hold at most :data:`MAX_NODES` values (mappings, lists and scalars)
  counted as if every alias were written out in full; the count is kept while the text
  is read, so nested aliases that multiply (an "alias bomb") stop at the alias that
  crosses the limit, before anything is copied;
* a syntax error, an empty file and a top level that is not a mapping raise
  :class:`NetDefSyntaxError` as one line: ``file:line:col: what; how to fix``.

This module reads YAML only.  Picking a reader by file suffix (``.prototxt`` to the Caffe
importer) is the compiler's loader, :func:`deeplab_compile.compiler.load`; ``read_text``
is the file reading (with its one-line errors) that both share.
"""
from __future__ import annotations

import math
import os
import re
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from .errors import Loc, NetDefError, NetDefSyntaxError
from .nodes import Map, Seq, loc_of, value_pos

__all__ = ["Map", "Seq", "loc_of", "value_pos", "read_text", "load", "loads", "dump", "parse_scalar",
           "MAX_DEPTH", "MAX_NODES"]

MAX_DEPTH = 100          # mappings/lists nested deeper than this are refused
MAX_NODES = 200_000      # values in one document, aliases counted in full (the zoo's largest file: 538)
_MAX_INT_DIGITS = 4000   # below Python's int/str conversion limit


# ---------------------------------------------------------------- scalars (YAML 1.2 core)

_INT_RE = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT_RE = re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                       r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")
_BOOL_RE = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_NULL_RE = re.compile(r"^(?:~|null|Null|NULL|)$")


class _Resolver(BaseResolver):
    """Implicit scalar types of the YAML 1.2 core schema (no merge key, no timestamps)."""


_Resolver.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL_RE, list("tTfF"))
_Resolver.add_implicit_resolver("tag:yaml.org,2002:int", _INT_RE, list("-+0123456789"))
_Resolver.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_RE, list("-+0123456789."))
_Resolver.add_implicit_resolver("tag:yaml.org,2002:null", _NULL_RE, ["~", "n", "N", ""])


def _to_int(text: str) -> int:
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    if body.startswith("0x"):
        return int(body[2:], 16)
    if body.startswith("0o"):
        return int(body[2:], 8)
    return sign * int(body, 10)


def _to_float(text: str) -> float:
    low = text.lower()
    if low.endswith(".inf"):
        return -math.inf if low.startswith("-") else math.inf
    if low == ".nan":
        return math.nan
    return float(text)


def parse_scalar(text: str) -> Any:
    """Read one scalar the way a netdef would (``"3"`` -> 3, ``"1e-3"`` -> 0.001,
    ``"true"`` -> True, ``"yes"`` -> ``"yes"``); used for ``-D name=value``."""
    if _NULL_RE.match(text):
        return None
    if _BOOL_RE.match(text):
        return text.lower() == "true"
    if _INT_RE.match(text) and len(text) <= _MAX_INT_DIGITS:
        return _to_int(text)
    if _FLOAT_RE.match(text):
        return _to_float(text)
    return text


# ---------------------------------------------------------------- the loader

def _loc(filename: str, mark) -> Loc:
    return Loc(filename, mark.line + 1, mark.column + 1)


class _Loader(Reader, Scanner, Parser, Composer, SafeConstructor, _Resolver):
    """SafeLoader's pieces with position-keeping containers and stricter rules."""

    yaml_constructors = {}   # filled below; never SafeConstructor's table

    def __init__(self, stream: str, filename: str):
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        _Resolver.__init__(self)
        self.filename = filename
        self._depth = 0
        self._open_anchors: set[str] = set()
        self._nodes = 0                       # values so far, every alias counted in full
        self._sizes: dict[int, int] = {}      # id(anchored node) -> the values it holds

    def scan_plain(self):
        # PyYAML's plain-scalar scanner, except that a ``${...}`` on one line is read as
        # part of the scalar even in flow context, so ``{num_output: ${n}}`` and
        # ``[3, ${crop / 2}]`` need no quotes.
        chunks = []
        start_mark = self.get_mark()
        end_mark = start_mark
        indent = self.indent + 1
        spaces = []
        breaks = "\0 \t\r\n\x85\u2028\u2029"
        while True:
            length = 0
            if self.peek() == "#":
                break
            while True:
                ch = self.peek(length)
                if ch == "$" and self.peek(length + 1) == "{":
                    end = length + 2
                    while self.peek(end) not in "}\0\r\n\x85\u2028\u2029":
                        end += 1
                    if self.peek(end) == "}":
                        length = end + 1
                        continue
                if ch in breaks or (ch == ":" and self.peek(length + 1) in breaks + (
                        ",[]{}" if self.flow_level else "")) or (self.flow_level and ch in ",?[]{}"):
                    break
                length += 1
            if length == 0:
                break
            self.allow_simple_key = False
            chunks.extend(spaces)
            chunks.append(self.prefix(length))
            self.forward(length)
            end_mark = self.get_mark()
            spaces = self.scan_plain_spaces(indent, start_mark)
            if not spaces or self.peek() == "#" or (not self.flow_level and self.column < indent):
                break
        return yaml.tokens.ScalarToken("".join(chunks), True, start_mark, end_mark)

    def _error(self, mark, what: str, hint: str) -> NetDefSyntaxError:
        return NetDefSyntaxError(what, loc=_loc(self.filename, mark), hint=hint)

    def _count(self, n: int, mark, what: str) -> None:
        self._nodes += n
        if self._nodes > MAX_NODES:
            raise self._error(mark, f"{what} makes the document hold more than {MAX_NODES:,} values "
                              "(each alias counts as a full copy of its anchor)",
                              "aliases of aliases multiply; write the values out once, or use "
                              "a template or a repeat")

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open_anchors:
                raise self._error(event.start_mark, f"alias '*{event.anchor}' is used inside "
                                  f"its own anchor '&{event.anchor}'",
                                  "a value cannot contain itself; copy the part you need")
            node = super().compose_node(parent, index)
            self._count(self._sizes.get(id(node), 1), event.start_mark, f"alias '*{event.anchor}'")
            return node
        anchor = getattr(event, "anchor", None)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise self._error(event.start_mark, f"nesting deeper than {MAX_DEPTH} levels",
                              "flatten the structure or use templates")
        before = self._nodes
        self._count(1, event.start_mark, "this value")
        if anchor:
            self._open_anchors.add(anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if anchor:
                self._open_anchors.discard(anchor)
        if anchor:
            self._sizes[id(node)] = self._nodes - before
        return node

    def _value_pos(self, node) -> tuple[Loc, Loc | None]:
        start = _loc(self.filename, node.start_mark)
        content = None
        if isinstance(node, yaml.ScalarNode) and node.start_mark.line == node.end_mark.line:
            raw = node.end_mark.index - node.start_mark.index
            quote = 0 if node.style in (None, "") else 1
            if node.style in (None, "", "'", '"') and raw == len(node.value) + 2 * quote:
                content = Loc(start.file, start.line, start.col + quote)
        return start, content

    def construct_map(self, node):
        if not isinstance(node, yaml.MappingNode):
            raise self._error(node.start_mark, "expected a mapping", "write key: value pairs")
        data = Map(loc=_loc(self.filename, node.start_mark))
        yield data
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self._error(key_node.start_mark, "a mapping key must be plain text",
                                  "use a name such as 'kernel_size' as the key")
            key = key_node.value
            if key == "<<" and not key_node.style:
                raise self._error(key_node.start_mark, "YAML merge keys ('<<') are not supported",
                                  "use a template to share layer settings")
            if key in data:
                first = data.key_locs[key]
                raise self._error(key_node.start_mark, f"duplicate key '{key}'",
                                  f"it is already given at line {first.line}; keep one of them")
            data[key] = self.construct_object(value_node, deep=False)
            data.key_locs[key] = _loc(self.filename, key_node.start_mark)
            data.value_locs[key] = self._value_pos(value_node)

    def construct_seq(self, node):
        if not isinstance(node, yaml.SequenceNode):
            raise self._error(node.start_mark, "expected a list", "write [a, b] or '- item' lines")
        data = Seq(loc=_loc(self.filename, node.start_mark))
        yield data
        for item in node.value:
            data.append(self.construct_object(item, deep=False))
            data.item_locs.append(_loc(self.filename, item.start_mark))
            data.value_locs.append(self._value_pos(item))

    def construct_int(self, node):
        text = self.construct_scalar(node)
        if len(text) > _MAX_INT_DIGITS:
            raise self._error(node.start_mark, "integer literal is too long",
                              f"use at most {_MAX_INT_DIGITS} digits")
        try:
            return _to_int(text)
        except ValueError:
            raise self._error(node.start_mark, f"'{text}' is not an integer",
                              "remove the !!int tag or fix the number") from None

    def construct_float(self, node):
        text = self.construct_scalar(node)
        try:
            return _to_float(text)
        except ValueError:
            raise self._error(node.start_mark, f"'{text}' is not a number",
                              "remove the !!float tag or fix the number") from None

    def construct_bool(self, node):
        text = self.construct_scalar(node)
        if not _BOOL_RE.match(text):
            raise self._error(node.start_mark, f"'{text}' is not a boolean", "write true or false")
        return text.lower() == "true"

    def construct_null(self, node):
        self.construct_scalar(node)
        return None

    def construct_str(self, node):
        return self.construct_scalar(node)

    def construct_unknown(self, node):
        raise self._error(node.start_mark, f"the tag '{node.tag}' is not supported",
                          "netdefs use plain mappings, lists, text and numbers; remove the tag")


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _Loader.construct_seq)
_Loader.add_constructor("tag:yaml.org,2002:str", _Loader.construct_str)
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _Loader.construct_float)
_Loader.add_constructor("tag:yaml.org,2002:bool", _Loader.construct_bool)
_Loader.add_constructor("tag:yaml.org,2002:null", _Loader.construct_null)
_Loader.add_constructor(None, _Loader.construct_unknown)


_HINTS = [
    ("'\\t'", "YAML does not allow tabs for indentation; use spaces"),
    ("mapping values are not allowed", "check the indentation, or quote a value that contains ': '"),
    ("expected <block end>", "check the indentation of this line against the lines above"),
    ("could not find expected ':'", "a key needs ': ' after it; quote text that spans lines"),
    ("found undefined alias", "define the anchor (&name) before using the alias (*name)"),
    ("expected a single document", "a netdef is one YAML document; remove the extra '---'"),
    ("while scanning a quoted scalar", "close the quote"),
    ("flow", "check the brackets [ ] and braces { }"),
]


def _syntax_error(err: yaml.YAMLError, filename: str, text: str) -> NetDefSyntaxError:
    if isinstance(err, yaml.reader.ReaderError):
        before = text[:err.position]
        line = before.count("\n") + 1
        col = err.position - (before.rfind("\n") + 1) + 1
        return NetDefSyntaxError(f"unacceptable character #x{err.character:04x}",
                                 loc=Loc(filename, line, col),
                                 hint="remove the control character or binary data")
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    if "<stream end>" in str(getattr(err, "problem", "")) and getattr(err, "context_mark", None):
        mark = err.context_mark      # an unclosed bracket: point at where it opens
    loc = _loc(filename, mark) if mark is not None else Loc(filename, 1, 1)
    problem = " ".join(str(getattr(err, "problem", None) or err).split())
    context = getattr(err, "context", None)
    context = " ".join(str(context).split()) if context else ""
    if context and problem.startswith("but "):
        what = f"YAML syntax error: {context}, {problem}"
    elif context:
        what = f"YAML syntax error: {problem} ({context})"
    else:
        what = f"YAML syntax error: {problem}"
    full = f"{problem} {context or ''}"
    hint = next((h for key, h in _HINTS if key in full), "fix the YAML syntax at this position")
    return NetDefSyntaxError(what, loc=loc, hint=hint)


def loads(text: str, filename: str = "<string>") -> Map:
    """Parse YAML netdef ``text``; ``filename`` names it in error messages."""
    try:
        loader = _Loader(text, filename)
    except yaml.YAMLError as err:
        raise _syntax_error(err, filename, text) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise NetDefSyntaxError("the netdef is empty", loc=Loc(filename, 1, 1),
                                    hint="define at least 'name' and 'layers'")
        if not isinstance(node, yaml.MappingNode):
            kind = "a list" if isinstance(node, yaml.SequenceNode) else "a single value"
            raise NetDefSyntaxError(f"the top level is {kind}, not a mapping",
                                    loc=_loc(filename, node.start_mark),
                                    hint="start with 'name:', 'vars:', 'layers:' keys")
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise _syntax_error(err, filename, text) from None
    finally:
        loader.dispose()


def read_text(path: str | os.PathLike) -> str:
    """The text of the netdef file at ``path`` (UTF-8, a BOM allowed); a missing,
    unreadable or undecodable file is a one-line :class:`NetDefError`."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise NetDefError(f"no such netdef file '{name}'", loc=Loc(name),
                          hint="check the path") from None
    except IsADirectoryError:
        raise NetDefError(f"'{name}' is a directory, not a netdef file", loc=Loc(name),
                          hint="name a .yaml or .prototxt file") from None
    except OSError as err:
        raise NetDefError(f"cannot read netdef file '{name}': {err.strerror or err}",
                          loc=Loc(name), hint="check the path and its permissions") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        before = raw[:err.start]
        line = before.count(b"\n") + 1
        col = err.start - (before.rfind(b"\n") + 1) + 1
        raise NetDefSyntaxError("the file is not UTF-8 text", loc=Loc(name, line, col),
                                hint="save it as UTF-8") from None


def load(path: str | os.PathLike) -> Map:
    """Read and parse the YAML netdef file at ``path``."""
    name = os.fspath(path)
    return loads(read_text(name), name)


# ---------------------------------------------------------------- writing

class _Dumper(yaml.emitter.Emitter, yaml.serializer.Serializer,
              yaml.representer.SafeRepresenter, _Resolver):
    """SafeDumper with our resolver, so quoting matches what :func:`loads` reads."""

    def __init__(self, stream, default_flow_style=None, width=None, **_ignored):
        yaml.emitter.Emitter.__init__(self, stream, width=width, allow_unicode=True)
        yaml.serializer.Serializer.__init__(self)
        yaml.representer.SafeRepresenter.__init__(self, default_flow_style=default_flow_style,
                                                  sort_keys=False)
        _Resolver.__init__(self)


_Dumper.add_representer(Map, yaml.representer.SafeRepresenter.represent_dict)
_Dumper.add_representer(Seq, yaml.representer.SafeRepresenter.represent_list)


def _escape(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, dict):
        return {k: _escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape(v) for v in value]
    return value


def _flow(value: Any) -> str:
    return yaml.dump(value, Dumper=_Dumper, default_flow_style=True, width=10 ** 6).strip()


def _flow_pair(key: str, value: Any) -> str:
    return _flow({key: value})[1:-1]      # "{k: v}" -> "k: v"


def dump(doc: dict) -> str:
    """Write an expanded netdef back as YAML text that :func:`loads` reads to the same
    values: one variable, input and layer per line, and every ``$`` in text written as
    ``$$``."""
    out = []
    for key, value in doc.items():
        value = _escape(value)
        if key == "layers" and isinstance(value, list) and value:
            out.append("layers:\n")
            out.extend(f"  - {_flow(layer)}\n" for layer in value)
        elif key in ("vars", "inputs") and isinstance(value, dict) and value:
            out.append(f"{key}:\n")
            out.extend(f"  {_flow_pair(k, v)}\n" for k, v in value.items())
        else:
            out.append(_flow_pair(key, value) + "\n")
    return "".join(out)
