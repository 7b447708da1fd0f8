"""Errors of the data pipeline: a bad list file, a missing or corrupt image, a bad label."""
from __future__ import annotations

from ..errors import DeepLabError


class DataError(DeepLabError):
    """A list line, an image or a label map that cannot be used.  The message names the
    list file and line (``list/train.txt:12: ...``) and the file at fault."""
