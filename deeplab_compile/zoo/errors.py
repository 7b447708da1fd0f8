"""The zoo's error: a source state dict that does not fit its table or the net."""
from __future__ import annotations

from ..errors import DeepLabError


class ZooError(DeepLabError):
    """A source state dict that does not fit the table or the net."""
