"""The root of every user-facing error.

Anything a user can cause (a bad netdef, a missing file, a corrupt image) raises a
subclass of :class:`DeepLabError`.  The command-line tools print ``str(err)`` as a
single line and exit with status 2; no traceback is shown for these.
:func:`did_you_mean` makes the usual hint for a misspelt name.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable


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


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """``"did you mean 'x'?"`` for the closest choice (case-insensitive), or None."""
    choices = list(choices)
    lower = {c.lower(): c for c in choices}
    if word.lower() in lower and lower[word.lower()] != word:
        return f"did you mean '{lower[word.lower()]}'?"
    close = difflib.get_close_matches(word.lower(), list(lower), n=1, cutoff=0.6)
    return f"did you mean '{lower[close[0]]}'?" if close else None
