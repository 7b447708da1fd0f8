"""Caffe's message classes, built at import time from ``caffe.proto`` (no protoc step).

``caffe.proto`` beside this file is the one schema.  :func:`_file_descriptor` reads the
small proto2 subset it uses (``message``, nested ``enum``/``message``, ``option allow_alias``, ``optional`` /
``repeated`` / ``required`` fields with ``[default = ...]`` and ``[packed = true]``) into a
``FileDescriptorProto``; the descriptors live in a private pool, so another ``caffe``
package in the process cannot clash with them.

    from deeplab_compile.caffe import proto
    net = proto.NetParameter()          # message classes by name
    proto.descriptor("LayerParameter")  # their descriptors
"""
from __future__ import annotations

import os
import re

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = ["PROTO_PATH", "POOL", "descriptor", "message_class"]

PROTO_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "caffe.proto")
_PACKAGE = "caffe"

_TOKEN = re.compile(r'\s+|//[^\n]*|/\*.*?\*/|"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|'
                    r'[A-Za-z_][A-Za-z0-9_.]*|[-+]?[0-9][0-9.eE+-]*|[-+]?\.[0-9][0-9eE+-]*|[{}=;\[\],<>]',
                    re.S)
_SCALARS = {
    "double": descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE,
    "float": descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT,
    "int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
    "uint64": descriptor_pb2.FieldDescriptorProto.TYPE_UINT64,
    "int32": descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
    "uint32": descriptor_pb2.FieldDescriptorProto.TYPE_UINT32,
    "bool": descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
    "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
    "bytes": descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
}
_LABELS = {
    "optional": descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    "required": descriptor_pb2.FieldDescriptorProto.LABEL_REQUIRED,
    "repeated": descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
}


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            line = text.count("\n", 0, pos) + 1
            raise SyntaxError(f"{PROTO_PATH}:{line}: unexpected character {text[pos]!r}")
        tok = m.group(0)
        if not (tok.isspace() or tok.startswith("//") or tok.startswith("/*")):
            out.append(tok)
        pos = m.end()
    return out


class _Reader:
    def __init__(self, tokens: list[str]):
        self.toks, self.i = tokens, 0

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, want: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (want is not None and tok != want):
            raise SyntaxError(f"{PROTO_PATH}: expected {want or 'a token'}, got {tok!r}")
        self.i += 1
        return tok


def _enum(r: _Reader) -> descriptor_pb2.EnumDescriptorProto:
    e = descriptor_pb2.EnumDescriptorProto(name=r.take())
    r.take("{")
    while r.peek() != "}":
        if r.peek() == "option":        # option allow_alias = true;
            r.take()
            opt = r.take()
            r.take("=")
            flag = r.take()
            r.take(";")
            if opt == "allow_alias":
                e.options.allow_alias = flag == "true"
            continue
        value = e.value.add(name=r.take())
        r.take("=")
        value.number = int(r.take())
        r.take(";")
    r.take("}")
    return e


def _message(r: _Reader, fields: list, prefix: str) -> descriptor_pb2.DescriptorProto:
    m = descriptor_pb2.DescriptorProto(name=r.take())
    full = f"{prefix}.{m.name}"
    r.take("{")
    while r.peek() != "}":
        kw = r.take()
        if kw == "message":
            m.nested_type.append(_message(r, fields, full))
        elif kw == "enum":
            m.enum_type.append(_enum(r))
        elif kw in _LABELS:
            f = m.field.add(label=_LABELS[kw])
            type_name = r.take()
            f.name = r.take()
            r.take("=")
            f.number = int(r.take())
            if r.peek() == "[":
                r.take("[")
                while True:
                    opt = r.take()
                    r.take("=")
                    value = r.take()
                    if opt == "default":
                        f.default_value = value[1:-1] if value[:1] in "\"'" else value
                    elif opt == "packed":
                        f.options.packed = value == "true"
                    if r.take() == "]":
                        break
            r.take(";")
            fields.append((m.name, f.number, type_name, full))
        else:
            raise SyntaxError(f"{PROTO_PATH}: unexpected {kw!r} in message {m.name}")
    r.take("}")
    return m


def _file_descriptor(text: str) -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(name="deeplab_compile/caffe/caffe.proto",
                                             package=_PACKAGE, syntax="proto2")
    r = _Reader(_tokens(text))
    fields: list = []
    while r.peek() is not None:
        kw = r.take()
        if kw == "syntax":
            r.take("=")
            r.take()
            r.take(";")
        elif kw == "package":
            r.take()
            r.take(";")
        elif kw == "message":
            fdp.message_type.append(_message(r, fields, f".{_PACKAGE}"))
        elif kw == "enum":
            fdp.enum_type.append(_enum(r))
        else:
            raise SyntaxError(f"{PROTO_PATH}: unexpected {kw!r} at the top level")

    kinds: dict[str, str] = {}     # full name -> "message" | "enum"
    protos: dict[str, descriptor_pb2.DescriptorProto] = {}

    def walk(msgs, enums, prefix):
        for e in enums:
            kinds[f"{prefix}.{e.name}"] = "enum"
        for m in msgs:
            full = f"{prefix}.{m.name}"
            kinds[full] = "message"
            protos[full] = m
            walk(m.nested_type, m.enum_type, full)

    walk(fdp.message_type, fdp.enum_type, f".{_PACKAGE}")
    for _, number, type_name, owner in fields:
        f = next(x for x in protos[owner].field if x.number == number)
        if type_name in _SCALARS:
            f.type = _SCALARS[type_name]
            continue
        scope = owner
        while True:     # innermost scope first, as protoc resolves names
            candidate = f"{scope}.{type_name}"
            if candidate in kinds or scope == "":
                break
            scope = scope.rpartition(".")[0]
        if candidate not in kinds:
            raise SyntaxError(f"{PROTO_PATH}: unknown type {type_name!r} of field {f.name!r}")
        f.type_name = candidate
        f.type = (descriptor_pb2.FieldDescriptorProto.TYPE_ENUM if kinds[candidate] == "enum"
                  else descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE)
    return fdp


def _build():
    with open(PROTO_PATH, encoding="utf-8") as f:
        fdp = _file_descriptor(f.read())
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return pool, fdp


POOL, FILE = _build()
_CLASSES: dict[str, type] = {}


def descriptor(name: str):
    """The descriptor of message ``name`` (``"LayerParameter"``)."""
    return POOL.FindMessageTypeByName(f"{_PACKAGE}.{name}")


def message_class(name: str) -> type:
    """The message class of ``name``."""
    cls = _CLASSES.get(name)
    if cls is None:
        cls = _CLASSES[name] = message_factory.GetMessageClass(descriptor(name))
    return cls


def __getattr__(name: str):
    # proto.NetParameter, proto.BlobProto, ... as if this were a generated module.
    if name[:1].isupper():
        try:
            return message_class(name)
        except KeyError:
            pass
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
