"""MATLAB .mat feature files in the format of DeepLab's MatWrite layer.

MatWrite saved each image's blob as ``<prefix><id>_blob_0.mat`` holding one variable,
``data``: float32 with MATLAB dimensions [W, H, C, N].  MATLAB is column-major, so
that is exactly Caffe's row-major N x C x H x W memory; in numpy terms the stored
array is ``blob.transpose(3, 2, 1, 0)``.  Features are at the network's input (crop)
size, e.g. 513 x 513, and must be cropped to the image size before use.
"""
from __future__ import annotations

import os

import numpy as np
import scipy.io

from ..errors import DeepLabError
from .atomic import atomic_path

FEATURE_SUFFIX = "_blob_0.mat"


class MatFileError(DeepLabError):
    """A .mat file that cannot be read, or lacks the expected variable."""


def read_blob(path: str | os.PathLike, var: str = "data") -> np.ndarray:
    """Read a MatWrite file; returns the blob as N x C x H x W float32."""
    path = os.fspath(path)
    try:
        mat = scipy.io.loadmat(path, variable_names=[var])
    except FileNotFoundError:
        raise MatFileError(f"{path}: no such feature file") from None
    except Exception as err:  # scipy raises several types for corrupt files
        raise MatFileError(f"{path}: not a readable .mat file ({type(err).__name__}: {err})") from None
    if var not in mat:
        keys = sorted(name for name, _shape, _cls in scipy.io.whosmat(path))
        raise MatFileError(f"{path}: no variable '{var}' in the .mat file",
                           hint=f"it holds {', '.join(keys) or 'nothing'}; MatWrite saves 'data'")
    a = np.asarray(mat[var])
    if a.dtype.kind not in "fiu" or a.ndim > 4:
        raise MatFileError(f"{path}: variable '{var}' must be a numeric array of at most 4 dims [W,H,C,N], "
                           f"got {a.dtype} with shape {a.shape}")
    # MATLAB drops trailing singleton dimensions: [W,H,C,1] may come back as [W,H,C].
    a = a.reshape(a.shape + (1,) * (4 - a.ndim))
    return np.ascontiguousarray(a.transpose(3, 2, 1, 0), dtype=np.float32)


def write_blob(path: str | os.PathLike, blob: np.ndarray, var: str = "data") -> None:
    """Write an N x C x H x W (or C x H x W) array as MatWrite did, atomically."""
    b = np.asarray(blob, dtype=np.float32)
    if b.ndim == 3:
        b = b[None]
    if b.ndim != 4:
        raise ValueError(f"write_blob: 'blob' must be N x C x H x W, got shape {b.shape}")
    with atomic_path(path) as tmp:
        scipy.io.savemat(tmp, {var: np.asfortranarray(b.transpose(3, 2, 1, 0))}, do_compression=False)


def read_scores(path: str | os.PathLike, height: int | None = None, width: int | None = None) -> np.ndarray:
    """Read one image's features as C x H x W, cropped to ``height`` x ``width``
    (the image size) when given.  Raises if the features are smaller than that."""
    blob = read_blob(path)
    if blob.shape[0] != 1:
        raise MatFileError(f"{os.fspath(path)}: expected one image (N = 1), got N = {blob.shape[0]}")
    s = blob[0]
    if height is not None and width is not None:
        if s.shape[1] < height or s.shape[2] < width:
            raise MatFileError(f"{os.fspath(path)}: features are {s.shape[1]}x{s.shape[2]} but the image is "
                               f"{height}x{width}", hint="features must be at least the image size (crop size)")
        s = s[:, :height, :width]
    return np.ascontiguousarray(s)
