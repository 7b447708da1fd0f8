"""The root of every user-facing error.

Anything a user can cause (a bad netdef, a missing file, a corrupt image) raises a
subclass of :class:`DeepLabError`.  The command-line tools print ``str(err)`` as a
single line and exit with status 2; no traceback is shown for these.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Loc:
    """A position in a source file (1-based line and column)."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.col}"
        return self.file


class DeepLabError(Exception):
    """A user error: printed as one line, exit code 2.

    The message reads ``file:line:col: layer 'x' (Type): what is wrong; how to fix it``
    with the parts that are unknown left out.
    """

    def __init__(self, message: str, *, loc: Loc | None = None, layer: str | None = None,
                 type: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.loc = loc
        self.layer = layer
        self.type = type
        self.hint = hint

    def __str__(self) -> str:
        out = ""
        if self.loc is not None:
            out += f"{self.loc}: "
        if self.layer is not None:
            out += f"layer '{self.layer}'"
            out += f" ({self.type}): " if self.type else ": "
        out += self.message
        if self.hint:
            out += f"; {self.hint}"
        return out

    def at(self, loc: Loc | None) -> "DeepLabError":
        """Attach a location if none is known yet; returns self for ``raise e.at(loc)``."""
        if self.loc is None and loc is not None:
            self.loc = loc
        return self
