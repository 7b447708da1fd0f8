"""DeepLab's MatWrite feature files, through the shared .mat writer.

``<prefix><id>_blob_<i>.mat`` holds one variable ``data``: single precision, dims
[W, H, C, N] as MATLAB sees them (column-major), i.e. a numpy (N, C, H, W) blob
transposed.  ``deeplab_compile.io.mat`` (MATLAB v5 writer/reader) does the file format
when present; otherwise scipy.io writes the same layout.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import DeepLabError
from .atomic import atomic_path


def feature_path(prefix: str, image_id: str, blob: int = 0) -> str:
    return f"{prefix}{image_id}_blob_{blob}.mat"


def write_blob(path: str, blob: np.ndarray) -> str:
    """Write an (N, C, H, W) (or (C, H, W)) blob as MatWrite does."""
    x = np.asarray(blob, dtype=np.float32)
    if x.ndim == 3:
        x = x[None]
    whcn = np.asfortranarray(x.transpose(3, 2, 1, 0))
    try:
        from . import mat as _mat
        writer = getattr(_mat, "write_mat", None) or getattr(_mat, "save_mat", None)
    except ImportError:
        writer = None
    with atomic_path(path) as tmp:
        if writer is not None:
            writer(tmp, whcn)
        else:
            import scipy.io
            scipy.io.savemat(tmp, {"data": whcn}, format="5", do_compression=False, oned_as="column")
    return path


def read_blob(path: str) -> np.ndarray:
    """Read a MatWrite file back as an (N, C, H, W) float32 blob."""
    if not os.path.exists(path):
        raise DeepLabError(f"feature file '{path}' does not exist")
    try:
        try:
            from . import mat as _mat
            reader = getattr(_mat, "read_mat", None) or getattr(_mat, "load_mat", None)
        except ImportError:
            reader = None
        if reader is not None:
            arr = reader(path)
            if isinstance(arr, dict):
                arr = arr["data"]
        else:
            import scipy.io
            arr = scipy.io.loadmat(path)["data"]
    except DeepLabError:
        raise
    except Exception as e:
        raise DeepLabError(f"cannot read feature file '{path}': {e}") from None
    arr = np.asarray(arr, dtype=np.float32)
    while arr.ndim < 4:
        arr = arr[..., None]
    return np.ascontiguousarray(arr.transpose(3, 2, 1, 0))
