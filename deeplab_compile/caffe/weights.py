"""``load_weights(net, path)``: a caffemodel or a PyTorch checkpoint into a compiled net."""
from __future__ import annotations

import os
import zipfile

import torch

from ..errors import Loc
from .caffemodel import WeightsError, caffe_state_dict, check_state_dict

__all__ = ["load_state", "load_weights", "read_checkpoint", "CHECKPOINT_SUFFIXES"]

CHECKPOINT_SUFFIXES = (".pt", ".pth")


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state_dict in a ``.pt`` file: a plain state_dict, or a dict holding one under
    ``state_dict`` or ``model``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsError(f"no such checkpoint '{path}'", loc=Loc(path), hint="check the path")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"cannot read the checkpoint: {first}"[:300], loc=Loc(path),
                           hint="the file is damaged or not a PyTorch checkpoint") from None
    except Exception as err:    # pickle errors of files torch.load refuses
        raise WeightsError(f"cannot read the checkpoint: {type(err).__name__}", loc=Loc(path),
                           hint="the file is damaged or not a PyTorch checkpoint") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise WeightsError("the checkpoint holds no state_dict", loc=Loc(path),
                           hint="save it with torch.save(net.state_dict(), path)")
    return obj


def load_state(net, path: str | os.PathLike, *, allow_missing: bool = False,
               progress: bool = False) -> dict[str, torch.Tensor]:
    """The state_dict for ``net`` from a ``.caffemodel`` or ``.pt``/``.pth`` file, checked
    against the net (one :class:`WeightsError` table for everything that does not fit)."""
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".caffemodel":
        return caffe_state_dict(net, path, allow_missing=allow_missing, progress=progress)
    if suffix in CHECKPOINT_SUFFIXES:
        return check_state_dict(net, read_checkpoint(path), path, allow_missing=allow_missing)
    raise WeightsError(f"unknown weights format '{suffix or path}'", loc=Loc(path),
                       hint="give a .caffemodel or a .pt/.pth checkpoint")


def load_weights(net, path: str | os.PathLike, *, allow_missing: bool = False,
                 progress: bool = False):
    """Load ``path`` (``.caffemodel`` or ``.pt``) into the compiled ``net`` in place and
    return it.  Strict by default: a missing or unexpected blob is an error;
    ``allow_missing=True`` loads what matches.  Shape and blob-count mismatches always
    fail."""
    state = load_state(net, path, allow_missing=allow_missing, progress=progress)
    with torch.no_grad():
        net.load_state_dict(state, strict=False)
    return net
