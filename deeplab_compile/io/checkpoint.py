"""Snapshots and weights.

A snapshot (``<snapshot_prefix>_iter_<N>.pt``) is one ``torch.save`` file holding
everything needed to continue the run bit for bit::

    {"format": "deeplab-compile-snapshot", "version": 1,
     "iter": N,                      # iterations done
     "model": state_dict,            # parameters and buffers, by layer name (fc6.weight)
     "optimizer": state_dict,        # CaffeSGD momentum history
     "rng": [per-process RNG states],# torch (+ CUDA) generator of every process
     "seed": int, "world_size": int,
     "history": {"iter": [...], "loss": [...], "lr": [...]},   # for the loss plot
     "solver": {...}, "net": "path", "vars": {...}}

It is written to a temporary file beside the target and renamed, so a crash or Ctrl-C
during the write leaves the previous snapshots intact and never a partial file.

``load_weights_into(net, path)`` initialises a net from a ``.pt`` state dict, a snapshot,
or (through ``deeplab_compile.load_weights`` when the Caffe importer is installed) a
``.caffemodel``.  As Caffe's ``CopyTrainedLayersFrom``, tensors the net does not have are
skipped and the net's own tensors missing from the file keep their fillers; any tensor
whose shape differs stops with a table of all mismatches.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from typing import Any

import torch
from torch import nn

from ..errors import DeepLabError
from .atomic import atomic_path

FORMAT = "deeplab-compile-snapshot"


class CheckpointError(DeepLabError):
    """A snapshot or weights file that is missing, corrupt or does not fit the net."""


def save_snapshot(path: str, state: dict[str, Any]) -> str:
    state = {"format": FORMAT, "version": 1, **state}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def _torch_load(path: str) -> Any:
    if not os.path.exists(path):
        raise CheckpointError(f"'{path}' does not exist", hint="check the path")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read '{path}': {first}",
                              hint="the file is truncated or not a PyTorch file") from None


def load_snapshot(path: str) -> dict[str, Any]:
    obj = _torch_load(path)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not a training snapshot",
                              hint="--resume takes a <prefix>_iter_<N>.pt written by deeplab-train; "
                                   "use --weights for plain weights")
    return obj


def state_dict_of(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: a state dict, a snapshot, or a caffemodel."""
    if path.endswith(".caffemodel"):
        raise CheckpointError("reading .caffemodel needs the Caffe importer", hint="use load_weights_into")
    obj = _torch_load(path)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        obj = obj["model"]
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    elif isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"'{path}' holds no state dict (name -> tensor)",
                              hint="save weights with torch.save(net.state_dict(), path)")
    return obj


def mismatch_table(rows: list[tuple[str, str, str]]) -> str:
    w = max([len("tensor")] + [len(r[0]) for r in rows])
    f = max([len("in file")] + [len(r[1]) for r in rows])
    lines = [f"  {'tensor':<{w}}  {'in file':<{f}}  in net"]
    lines += [f"  {a:<{w}}  {b:<{f}}  {c}" for a, b, c in rows]
    return "\n".join(lines)


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


def load_weights_into(net: nn.Module, path: str, *, strict: bool = False) -> dict[str, list[str]]:
    """Copy the tensors of ``path`` into ``net`` by name.  Returns ``{"loaded": [...],
    "missing": [...] (kept their fillers), "skipped": [...] (not in the net)}``."""
    if path.endswith(".caffemodel"):
        if not os.path.exists(path):
            raise CheckpointError(f"'{path}' does not exist", hint="check the path")
        try:
            from ..caffe.weights import load_state
        except ImportError:
            raise CheckpointError(f"cannot read '{path}': the .caffemodel importer is not available "
                                  "in this installation",
                                  hint="convert it with deeplab-convert, or pass a .pt state dict") from None
        # Caffe's CopyTrainedLayersFrom: layers absent from the file keep their fillers
        state = load_state(net, path, allow_missing=True)
        own = net.state_dict()
        with torch.no_grad():
            net.load_state_dict(state, strict=False)
        return {"loaded": list(state), "missing": [k for k in own if k not in state], "skipped": []}
    src = state_dict_of(path)
    own = net.state_dict()
    rows, loaded, skipped = [], [], []
    for k, v in src.items():
        if k not in own:
            skipped.append(k)
        elif tuple(own[k].shape) != tuple(v.shape):
            rows.append((k, _shape(v), _shape(own[k])))
        else:
            loaded.append(k)
    missing = [k for k in own if k not in src]
    if rows:
        raise CheckpointError(f"{len(rows)} tensor(s) of '{path}' do not fit the net "
                              f"(first: {rows[0][0]} is {rows[0][1]} in the file, {rows[0][2]} in the net); "
                              "rename the layer to start it from its filler\n" + mismatch_table(rows))
    if not loaded:
        raise CheckpointError(f"no tensor of '{path}' matches the net "
                              f"(file: {', '.join(list(src)[:3])}...; net: {', '.join(list(own)[:3])}...)",
                              hint="names are <layer>.<blob>, e.g. fc6.weight")
    if strict and (missing or skipped):
        raise CheckpointError(f"'{path}' does not match the net exactly: "
                              f"{len(missing)} missing, {len(skipped)} unexpected "
                              f"(e.g. {(missing or skipped)[0]})")
    with torch.no_grad():
        for k in loaded:
            own[k].copy_(src[k])
    return {"loaded": loaded, "missing": missing, "skipped": skipped}


def rng_state() -> dict[str, Any]:
    st = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(st["cuda"])
        except (RuntimeError, IndexError):
            pass
