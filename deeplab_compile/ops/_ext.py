"""Loads the compiled extension ``deeplab_compile._C`` once.

Importing ``_C`` registers the C++/CUDA kernels of the ``deeplab`` op namespace with
the PyTorch dispatcher.  When it did not build (or ``DEEPLAB_NO_EXT=1`` is set) every
op falls back to its pure-PyTorch reference; the first fallback warns once per op.
"""
from __future__ import annotations

import os
import platform
import threading
import warnings

import torch

_lock = threading.Lock()
_state: dict | None = None
_warned: set[tuple[str, str]] = set()


def _load() -> dict:
    global _state
    with _lock:
        if _state is not None:
            return _state
        state = {"loaded": False, "path": None, "error": None}
        if os.environ.get("DEEPLAB_NO_EXT", "0") == "1":
            state["error"] = "disabled by DEEPLAB_NO_EXT=1"
        else:
            try:
                from .. import _C  # noqa: F401  (registers the kernels)
                state["loaded"] = True
                state["path"] = getattr(_C, "__file__", None)
            except ImportError as err:  # not built, or built against another torch
                state["error"] = f"{type(err).__name__}: {err}"
        _state = state
        return state


def available() -> bool:
    """True when ``_C`` is loaded (the op schemas exist in ``torch.ops.deeplab``)."""
    return _load()["loaded"]


def has_kernel(op: str, dispatch_key: str) -> bool:
    """True when ``deeplab::<op>`` has a compiled kernel for ``dispatch_key`` ("CPU", "CUDA")."""
    if not available():
        return False
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(f"deeplab::{op}", dispatch_key)
    except RuntimeError:
        return False


def use_compiled(op: str, *tensors: torch.Tensor) -> bool:
    """Whether ``op`` can run compiled on the device of ``tensors``; warns once per op
    when it cannot and the PyTorch reference is used instead."""
    dev = tensors[0].device.type if tensors else "cpu"
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(dev)
    if key is not None and has_kernel(op, key):
        return True
    if (op, dev) not in _warned:
        _warned.add((op, dev))
        why = _load()["error"] or f"no {dev} kernel was built"
        warnings.warn(f"deeplab::{op}: using the slow PyTorch reference on {dev} ({why})",
                      RuntimeWarning, stacklevel=3)
    return False


CRF_STORAGES = ("half", "float32")


def crf_storage() -> str:
    """How the CPU dense CRF stores lattice values between its float32 steps: "half" on
    x86-64 unless ``DEEPLAB_CRF_STORAGE=float32``.  Raises ValueError for any other
    value of the variable (the kernel refuses it too)."""
    value = os.environ.get("DEEPLAB_CRF_STORAGE", "")
    if value and value not in CRF_STORAGES:
        raise ValueError(f"DEEPLAB_CRF_STORAGE must be \"half\" or \"float32\", got {value!r}")
    if value == "float32" or platform.machine().lower() not in ("x86_64", "amd64"):
        return "float32"
    return "half"


def _crf_storage_info() -> str:
    try:
        return crf_storage()
    except ValueError as err:
        return f"invalid: {err}"


def backends() -> dict:
    """What the kernels run on, for ``deeplab-compile --info``.

    ``extension``: whether ``_C`` loaded (``extension_path`` / ``extension_error``);
    ``cpu`` / ``cuda``: the ``deeplab`` ops with a compiled kernel for that device;
    ``cuda_device``: whether torch sees a GPU; ``threads``: torch's intra-op threads;
    ``crf_storage``: how the CPU dense CRF stores lattice values between its float32
    steps ("half" on x86-64 unless ``DEEPLAB_CRF_STORAGE=float32``).
    """
    st = _load()
    ops = ["dense_crf", "permutohedral_filter", "_permutohedral_filter_backward",
           "aspp_sum", "_aspp_sum_backward", "aspp_v3_head"]
    return {
        "extension": st["loaded"],
        "extension_path": st["path"],
        "extension_error": st["error"],
        "cpu": [op for op in ops if has_kernel(op, "CPU")],
        "cuda": [op for op in ops if has_kernel(op, "CUDA")],
        "cuda_device": torch.cuda.is_available(),
        "threads": torch.get_num_threads(),
        "crf_storage": _crf_storage_info(),
        "torch": torch.__version__,
    }
