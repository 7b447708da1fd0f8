"""Parameter schemas shared by the layer types, the solver and the data section.

:class:`P` describes one parameter (its kind, default, bounds, choices, aliases) and
checks a value written for it; :data:`REQUIRED` marks a parameter without a default;
:func:`did_you_mean` gives the hint for a misspelt key.  Errors are
:class:`~deeplab_compile.netdef.errors.ParameterError`, raised through the object that
holds the value, so they name its file, line and layer or section.  The layer types add
the ``filler`` kind (:class:`deeplab_compile.layers.base.P`).
"""
from __future__ import annotations

from typing import Any, Sequence

from .errors import did_you_mean
from .netdef.errors import ParameterError

__all__ = ["P", "REQUIRED", "KINDS", "did_you_mean"]

REQUIRED = object()

KINDS = ("int", "float", "bool", "str", "enum", "ints", "floats", "strs", "dict", "any")


class P:
    """Schema of one parameter.

    kind: ``int`` ``float`` ``bool`` ``str`` ``enum`` (case-insensitive, stored lower-case),
    ``ints`` / ``floats`` / ``strs`` (a scalar or a list; stored as a list), ``dict``,
    ``any``.  ``default`` is :data:`REQUIRED` for a parameter that must be given.
    """

    KINDS: tuple[str, ...] = KINDS

    def __init__(self, kind: str, default: Any = REQUIRED, *, choices: Sequence[str] | None = None,
                 min: float | None = None, max: float | None = None, aliases: Sequence[str] = (),
                 doc: str = ""):
        assert kind in self.KINDS, kind
        self.kind = kind
        self.default = default
        self.choices = tuple(c.lower() for c in choices) if choices else None
        self.min = min
        self.max = max
        self.aliases = tuple(aliases)
        self.doc = doc

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def coerce(self, key: str, value: Any, layer: Any):
        """``value`` checked and converted; ``layer`` is what errors are raised through
        (``layer.error(message, key=, hint=, cls=)``: a graph Layer, or a config section)."""
        def bad(what: str, hint: str | None = None):
            return layer.error(f"parameter '{key}' {what}", key=key, hint=hint, cls=ParameterError)

        def scalar(kind: str, v: Any):
            if kind == "int":
                if isinstance(v, bool) or not isinstance(v, int):
                    if isinstance(v, float) and v.is_integer():
                        v = int(v)
                    else:
                        raise bad(f"must be an integer, got {v!r}", f"write a whole number, e.g. '{key}: 1'")
            elif kind == "float":
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise bad(f"must be a number, got {v!r}", f"write e.g. '{key}: 0.5'")
                try:
                    v = float(v)
                except OverflowError:       # an integer past 1e308
                    raise bad(f"is too large for a number ({len(str(abs(v)))} digits)",
                              f"write e.g. '{key}: 0.5'") from None
            elif kind == "bool":
                if not isinstance(v, bool):
                    raise bad(f"must be true or false, got {v!r}", f"write '{key}: true' or '{key}: false'")
            elif kind == "str":
                if not isinstance(v, str):
                    raise bad(f"must be a string, got {v!r}", "quote the value")
            if kind in ("int", "float"):
                if self.min is not None and v < self.min:
                    raise bad(f"must be >= {self.min:g}, got {v!r}", f"set '{key}' to {self.min:g} or more")
                if self.max is not None and v > self.max:
                    raise bad(f"must be <= {self.max:g}, got {v!r}", f"set '{key}' to {self.max:g} or less")
            return v

        k = self.kind
        if k in ("int", "float", "bool", "str"):
            return scalar(k, value)
        if k == "enum":
            if not isinstance(value, str) or value.lower() not in self.choices:
                raise bad(f"must be one of {', '.join(self.choices)}, got {value!r}",
                          f"write e.g. '{key}: {self.choices[0].upper()}' (case does not matter)")
            return value.lower()
        if k in ("ints", "floats", "strs"):
            base = {"ints": "int", "floats": "float", "strs": "str"}[k]
            items = value if isinstance(value, list) else [value]
            return [scalar(base, v) for v in items]
        if k == "dict":
            if not isinstance(value, dict):
                raise bad(f"must be a mapping, got {value!r}", f"write '{key}: {{...}}'")
            return dict(value)
        return value
