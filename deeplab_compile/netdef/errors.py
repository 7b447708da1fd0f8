"""Errors raised while reading, expanding, validating and shaping a netdef.

Every one of them is a :class:`NetDefError` and prints as one line::

    netdef/x.yaml:42:5: layer 'fc6' (Convolution): unknown parameter 'dilaton'; did you mean 'dilation'?
"""
from __future__ import annotations

import difflib
from typing import Iterable

from ..errors import DeepLabError, Loc

__all__ = [
    "Loc", "NetDefError", "NetDefSyntaxError", "IncludeError", "VariableError", "TemplateError",
    "UnknownLayerError", "ParameterError", "WiringError", "ShapeError", "did_you_mean",
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


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """``"did you mean 'x'?"`` for the closest choice (case-insensitive), or None."""
    choices = list(choices)
    lower = {c.lower(): c for c in choices}
    if word.lower() in lower and lower[word.lower()] != word:
        return f"did you mean '{lower[word.lower()]}'?"
    close = difflib.get_close_matches(word.lower(), list(lower), n=1, cutoff=0.6)
    return f"did you mean '{lower[close[0]]}'?" if close else None
