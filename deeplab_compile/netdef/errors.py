"""Errors raised while reading, expanding, validating and shaping a netdef.

Every one of them is a :class:`NetDefError` and prints as one line::

    netdef/x.yaml:42:5: layer 'fc6' (Convolution): unknown parameter 'dilaton'; did you mean 'dilation'?
"""
from __future__ import annotations

from ..errors import DeepLabError, Loc, did_you_mean

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
