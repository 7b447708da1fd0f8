"""DeepLab's MatWrite feature files: naming, on top of :mod:`deeplab_compile.io.mat`.

``<prefix><id>_blob_<i>.mat`` holds one variable ``data``: single precision, dims
[W, H, C, N] as MATLAB sees them, i.e. a numpy (N, C, H, W) blob transposed.
"""
from __future__ import annotations

import numpy as np

from . import mat


def feature_path(prefix: str, image_id: str, blob: int = 0) -> str:
    return f"{prefix}{image_id}_blob_{blob}.mat"


def write_blob(path: str, blob: np.ndarray) -> str:
    """Write an (N, C, H, W) (or (C, H, W)) blob as MatWrite does, atomically; returns ``path``."""
    mat.write_blob(path, blob)
    return path


def read_blob(path: str) -> np.ndarray:
    """Read a MatWrite file back as an (N, C, H, W) float32 blob."""
    return mat.read_blob(path)
