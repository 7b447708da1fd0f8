"""The values a netdef is read into: mappings and lists that remember where they were written.

:class:`Map` (a ``dict``) and :class:`Seq` (a ``list``) know their own position
(``.loc``) and the position of each key (``Map.key_locs``) or item (``Seq.item_locs``);
scalars stay plain Python values.  ``loc_of(node, key)`` picks the most precise position
for an error message.  The YAML reader (:mod:`.parse`) and the Caffe prototxt importer
(:mod:`deeplab_compile.caffe.prototxt`) both build them, so every later step sees one
kind of document whatever the source.
"""
from __future__ import annotations

from typing import Any

from .errors import Loc

__all__ = ["Map", "Seq", "loc_of", "value_pos"]


class Map(dict):
    """A mapping read from a netdef: ``loc`` is where it starts, ``key_locs[k]`` where key
    ``k`` is written, ``value_locs[k]`` where its value is written."""

    def __init__(self, *args, loc: Loc | None = None, key_locs: dict | None = None,
                 value_locs: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.loc = loc
        self.key_locs: dict[str, Loc] = dict(key_locs or {})
        self.value_locs: dict[str, tuple[Loc, Loc | None]] = dict(value_locs or {})
        self.expanded = False   # set by expand(): strings are final text, not templates
        self.validated = False  # set on layer entries by the compiler's validate(): parameters complete


class Seq(list):
    """A list read from a netdef: ``loc`` is where it starts, ``item_locs[i]`` where item
    ``i`` is written."""

    def __init__(self, *args, loc: Loc | None = None, item_locs: list | None = None,
                 value_locs: list | None = None):
        super().__init__(*args)
        self.loc = loc
        self.item_locs: list[Loc] = list(item_locs or [])
        self.value_locs: list[tuple[Loc, Loc | None]] = list(value_locs or [])


def loc_of(node: Any, key: Any = None) -> Loc | None:
    """The position of ``node`` (a :class:`Map` or :class:`Seq`), or of its key / item
    ``key`` when given and known; None for plain values."""
    if isinstance(node, Map):
        if key is not None and key in node.key_locs:
            return node.key_locs[key]
        return node.loc
    if isinstance(node, Seq):
        if isinstance(key, int) and not isinstance(key, bool) and 0 <= key < len(node.item_locs):
            return node.item_locs[key]
        return node.loc
    return None


def value_pos(node: Any, key: Any) -> tuple[Loc | None, Loc | None]:
    """``(start, content)`` of the scalar at ``node[key]``: ``start`` is where it is
    written; ``content`` is where its first character is, when text offsets map one to
    one onto columns (single-line, no escapes), else None."""
    try:
        if isinstance(node, Map) and key in node.value_locs:
            return node.value_locs[key]
        if isinstance(node, Seq) and 0 <= key < len(node.value_locs):
            return node.value_locs[key]
    except TypeError:
        pass
    return loc_of(node, key), None
