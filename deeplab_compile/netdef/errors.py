"""Errors raised while reading, expanding, validating and shaping a netdef.

Every one of them is a :class:`NetDefError` and prints as one line::

    netdef/x.yaml:42:5: layer 'fc6' (Convolution): unknown parameter 'dilaton'; did you mean 'dilation'?
"""
from __future__ import annotations

from typing import Iterable

from ..errors import DeepLabError, Loc, did_you_mean

__all__ = [
    "Loc", "NetDefError", "NetDefSyntaxError", "IncludeError", "VariableError", "TemplateError",
    "UnknownLayerError", "ParameterError", "WiringError", "ShapeError", "SizeError", "did_you_mean",
    "near_miss",
]


class NetDefError(DeepLabError):
    """Any error in a network definition."""


class NetDefSyntaxError(NetDefError):
    """The text is not valid YAML / prototxt, is empty, or has the wrong top-level structure."""


class IncludeError(NetDefError):
    """An include is missing, unreadable, or forms a cycle."""


class VariableError(NetDefError):
    """An undefined variable, a malformed ``${...}`` expression, or a division by zero."""


class TemplateError(NetDefError):
    """A template is unknown, called with a missing or unknown argument, or a bad ``repeat``."""


class UnknownLayerError(NetDefError):
    """A layer type that is not in the registry."""


class ParameterError(NetDefError):
    """An unknown, missing, mistyped or out-of-range layer parameter."""


class WiringError(NetDefError):
    """A bottom nobody produced, a top produced twice, a duplicate layer name, ..."""


class ShapeError(NetDefError):
    """A shape rule failed: mismatched inputs, or an output size that would be <= 0."""


class SizeError(NetDefError):
    """Building the net would allocate more parameter memory than the limit allows."""


def near_miss(word: str, choices: Iterable[str]) -> str | None:
    """A choice ``word`` is a typo of, or None: the same name in another case, or one
    edit away (two for names of 8 characters or more).  Tighter than :func:`did_you_mean`,
    so that DeepLab's sibling variables (TRAIN_SET, TEST_SET) are not each other's typos."""
    for c in choices:
        if c.lower() == word.lower():
            return c
    for c in choices:
        limit = 2 if min(len(c), len(word)) >= 8 else 1
        if abs(len(c) - len(word)) <= limit and _edits(word.lower(), c.lower(), limit) <= limit:
            return c
    return None


def _edits(a: str, b: str, limit: int) -> int:
    """Levenshtein distance of ``a`` and ``b`` (stops early past ``limit``)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        if min(cur) > limit:
            return limit + 1
        prev = cur
    return prev[-1]
