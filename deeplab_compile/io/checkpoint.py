"""Snapshots and weights.

A snapshot (``<snapshot_prefix>_iter_<N>.pt``) is one ``torch.save`` file holding
everything needed to continue the run bit for bit::

    {"format": "deeplab-compile-snapshot", "version": 1,
     "iter": N,                      # iterations done
     "model": state_dict,            # parameters and buffers, by layer name (fc6.weight,
                                     # bn1.running_mean; never a DDP or SyncBN wrapper's)
     "optimizer": state_dict,        # CaffeSGD momentum history
     "rng": [per-process RNG states],# torch (+ CUDA) generator of every process
     "seed": int, "world_size": int,
     "history": {"iter": [...], "loss": [...], "lr": [...]},   # for the loss plot
     "solver": {...}, "net": "path", "vars": {...}}

It is written to a temporary file beside the target and renamed, so a crash or Ctrl-C
during the write leaves the previous snapshots intact and never a partial file.  It holds
plain data only (tensors, numbers, strings, lists, dicts), so that
:func:`deeplab_compile.weights.load_snapshot` reads it with ``weights_only=True``;
:func:`save_snapshot` checks that before writing.
"""
from __future__ import annotations

from typing import Any

import torch

from ..errors import DeepLabError
from .atomic import atomic_path

FORMAT = "deeplab-compile-snapshot"


class CheckpointError(DeepLabError):
    """A snapshot or weights file that is missing, corrupt or does not fit the net."""


def _check_plain(obj: Any, where: str) -> None:
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"snapshot entry {where} has a key of type {type(k).__name__}")
            _check_plain(v, f"{where}[{k!r}]")
        return
    raise TypeError(f"snapshot entry {where} is a {type(obj).__name__}, not plain data")


def save_snapshot(path: str, state: dict[str, Any]) -> str:
    state = {"format": FORMAT, "version": 1, **state}
    _check_plain(state, "snapshot")
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


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
