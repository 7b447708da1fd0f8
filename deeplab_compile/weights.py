"""One reader for every weights file a user passes.

Formats
    ``.caffemodel``
        Caffe's binary NetParameter, read by our own wire-format reader
        (:mod:`deeplab_compile.caffe.caffemodel`); layers are matched by name.
    ``.pt`` / ``.pth``
        read with ``torch.load(weights_only=True)`` only: tensors, numbers, strings,
        lists and dicts.  A file whose pickle asks for anything else (a class, a function
        such as ``os.system``) is refused before any of it runs, with a
        :class:`WeightsError` that says the file is not a plain weights file.  The state
        dict is taken from

        * a training snapshot (``{"format": "deeplab-compile-snapshot", "model": ...}``),
        * a ``deeplab-convert`` output or any dict holding it under ``state_dict`` or
          ``model``,
        * or the file's dict itself (``torch.save(net.state_dict(), path)``).
    ``.safetensors``
        tensors only by construction (timm's and Hugging Face's files), read with the
        ``safetensors`` package.

Matching
    Every comparison of a file with a net ends in one :class:`WeightsError` holding one
    table of all missing, unexpected and wrongly shaped tensors
    (:class:`~deeplab_compile.caffe.caffemodel.Problems`), never cut.

    * :func:`load_state` / :func:`load_weights` (``deeplab-test``, ``deeplab-predict``,
      ``deeplab_compile.load_weights``): strict; every tensor of the net, buffers such as
      BatchNorm statistics included, must come from the file.  ``allow_missing=True``
      loads what matches and keeps the rest.
    * :func:`init_weights` (``deeplab-train --weights``, the solver's ``weights``):
      Caffe's ``CopyTrainedLayersFrom``.  Layers absent from the file keep their fillers
      and tensors of layers the net lacks are skipped, both counted in the returned
      report; a layer found in the file but with tensors missing (a BatchNorm without
      its statistics) is an error, as is any shape mismatch.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from typing import Any

import torch

from .caffe.caffemodel import Problems, WeightsError, caffe_state_dict, check_state_dict
from .errors import Loc
from .io.checkpoint import FORMAT as SNAPSHOT_FORMAT

__all__ = ["WeightsError", "SNAPSHOT_FORMAT", "CHECKPOINT_SUFFIXES", "read_pt", "read_state_dict",
           "load_snapshot", "load_state", "load_weights", "init_weights", "InitReport"]

CHECKPOINT_SUFFIXES = (".pt", ".pth")

_PLAIN_HINT = ("only tensors, numbers, strings, lists and dicts are read from weights files; "
               "if you trust its source, re-save its tensors with torch.save(state_dict, path)")


def _refused_global(err: Exception) -> str | None:
    m = re.search(r"unsupported GLOBAL ([\w.]+)", str(err))
    if m:
        return m.group(1)
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
    return m.group(1) if m else None


def _detail(err: Exception) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if ln.endswith("WeightsUnpickler error:") and i + 1 < len(lines):
            return lines[i + 1]
    return lines[0] if lines else type(err).__name__


def _read_safetensors(path: str) -> dict[str, torch.Tensor]:
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError:
        raise WeightsError("reading .safetensors needs the safetensors package", loc=Loc(path),
                           hint="pip install safetensors, or give the .pth/.bin file") from None
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"cannot read the safetensors file: {first}"[:300], loc=Loc(path),
                           hint="the file is truncated, damaged or not a safetensors file") from None


def read_pt(path: str | os.PathLike) -> Any:
    """What ``torch.load(path, weights_only=True)`` gives (for ``.safetensors``, its
    tensors), with one-line errors."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsError(f"no such weights file '{path}'", loc=Loc(path), hint="check the path")
    if path.endswith(".safetensors"):
        return _read_safetensors(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        what = _refused_global(err)
        if what:
            raise WeightsError(f"not a plain weights file: it asks to load {what}; nothing of it was run",
                               loc=Loc(path), hint=_PLAIN_HINT) from None
        raise WeightsError(f"cannot read the weights file: {_detail(err)}"[:300], loc=Loc(path),
                           hint="it is damaged, or not a plain weights file (tensors, numbers, strings, "
                                "lists and dicts)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError,
            IndexError, TypeError, AttributeError, UnicodeDecodeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"cannot read the weights file: {first}"[:300], loc=Loc(path),
                           hint="the file is truncated, damaged or not a PyTorch file") from None


def _state_of(obj: Any, path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    meta: dict[str, Any] = {}
    if isinstance(obj, dict) and obj.get("format") == SNAPSHOT_FORMAT:
        meta = {k: obj[k] for k in ("iter", "net", "vars", "preprocess", "solver") if k in obj}
        obj = obj.get("model")
    elif isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                meta = {k: obj[k] for k in ("netdef", "source", "vars", "layout", "preprocess") if k in obj}
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) for k in obj):
        raise WeightsError("the file holds no state dict (tensor names -> tensors)", loc=Loc(path),
                           hint="save weights with torch.save(net.state_dict(), path)")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"the state dict holds a non-tensor under '{bad[0]}'", loc=Loc(path),
                           hint="save weights with torch.save(net.state_dict(), path)")
    return obj, meta


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors of a ``.pt``/``.pth`` file and its plain metadata (``vars``, ``netdef``,
    ``source``, ``layout``, ``preprocess``, and a snapshot's ``iter``, ``net`` and ``solver``,
    where the file records them)."""
    path = os.fspath(path)
    return _state_of(read_pt(path), path)


def load_snapshot(path: str | os.PathLike) -> dict[str, Any]:
    """A training snapshot (``<prefix>_iter_<N>.pt``), read as plain data."""
    path = os.fspath(path)
    obj = read_pt(path)
    if not isinstance(obj, dict) or obj.get("format") != SNAPSHOT_FORMAT:
        raise WeightsError("not a training snapshot", loc=Loc(path),
                           hint="--resume takes a <prefix>_iter_<N>.pt written by deeplab-train; "
                                "use --weights for plain weights")
    _state_of(obj, path)
    return obj


def _suffix(path: str) -> str:
    suffix = os.path.splitext(path)[1].lower()
    if suffix != ".caffemodel" and suffix not in CHECKPOINT_SUFFIXES:
        raise WeightsError(f"unknown weights format '{suffix or path}'", loc=Loc(path),
                           hint="give a .caffemodel or a .pt/.pth file")
    return suffix


def load_state(net, path: str | os.PathLike, *, allow_missing: bool = False,
               progress: bool = False) -> dict[str, torch.Tensor]:
    """The state dict for ``net`` from any weights file, checked against the net."""
    path = os.fspath(path)
    if _suffix(path) == ".caffemodel":
        return caffe_state_dict(net, path, allow_missing=allow_missing, progress=progress)
    state, _ = read_state_dict(path)
    return check_state_dict(net, state, path, allow_missing=allow_missing)


def load_weights(net, path: str | os.PathLike, *, allow_missing: bool = False, progress: bool = False):
    """Load ``path`` into the compiled ``net`` in place and return it.  Strict by default:
    a missing or unexpected tensor is an error; ``allow_missing=True`` loads what
    matches.  Shape and blob-count mismatches always fail."""
    state = load_state(net, path, allow_missing=allow_missing, progress=progress)
    with torch.no_grad():
        net.load_state_dict(state, strict=False)
    return net


@dataclass
class InitReport:
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)    # kept their fillers (whole layers)
    skipped: list[str] = field(default_factory=list)    # in the file, not in the net

    def line(self, path: str) -> str:
        return (f"Initialised from {path}: {len(self.loaded)} tensors loaded, "
                f"{len(self.missing)} kept their fillers, {len(self.skipped)} in the file not used")


def _layer(key: str) -> str:
    return key.rsplit(".", 1)[0]


def init_weights(net, path: str | os.PathLike, *, progress: bool = False) -> InitReport:
    """Caffe's ``CopyTrainedLayersFrom``: initialise ``net`` from a weights file."""
    path = os.fspath(path)
    own = net.state_dict()
    rep = InitReport()
    if _suffix(path) == ".caffemodel":
        state = caffe_state_dict(net, path, allow_missing=True, progress=progress)
        rep.skipped = []
    else:
        src, _ = read_state_dict(path)
        problems = Problems(path)
        state = {}
        for key, t in src.items():
            if key not in own:
                rep.skipped.append(key)
            elif tuple(t.shape) != tuple(own[key].shape):
                problems.add("shape", _layer(key), key, "x".join(map(str, t.shape)) or "scalar",
                             "x".join(map(str, own[key].shape)) or "scalar")
            else:
                state[key] = t
        problems.raise_if_any(True)
        if not state:
            raise WeightsError(f"no tensor of the file matches the net (file: {', '.join(list(src)[:3])}, ...; "
                               f"net: {', '.join(list(own)[:3])}, ...)", loc=Loc(path),
                               hint="names are <layer>.<blob>, e.g. fc6.weight")
    # a layer the file has must come whole: a BatchNorm without its statistics is an error
    have = {_layer(k) for k in state}
    partial = [k for k in own if k not in state and _layer(k) in have]
    if partial:
        problems = Problems(path, loose_hint="a layer the file has must come whole (a BatchNorm "
                                             "with its running statistics); give a file made for this net")
        for k in partial:
            problems.add("missing", _layer(k), k, "-", "x".join(map(str, own[k].shape)) or "scalar")
        problems.raise_if_any(False)
    rep.loaded = list(state)
    rep.missing = [k for k in own if k not in state]
    with torch.no_grad():
        net.load_state_dict(state, strict=False)
    return rep
