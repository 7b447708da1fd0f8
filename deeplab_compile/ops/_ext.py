"""Loads the compiled extension ``deeplab_compile._C`` once.

Importing ``_C`` registers the C++/CUDA kernels of the ``deeplab`` op namespace with
the PyTorch dispatcher.  When it did not build (or ``DEEPLAB_NO_EXT=1`` is set) every
op falls back to its pure-PyTorch reference; the first fallback warns once per op.
"""
from __future__ import annotations

import os
import threading
import warnings

import torch

from .. import settings

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


def _reported(key: str, without_extension: str) -> str:
    """What the loaded kernels report for ``key`` (``_C.cpu_paths()``)."""
    if not available():
        return without_extension
    from .. import _C
    if not hasattr(_C, "cpu_paths"):  # built before cpu_paths() existed
        return "unknown (rebuild the extension: pip install -e . --no-build-isolation)"
    return _C.cpu_paths()[key]


def crf_storage() -> str:
    """How the CPU dense CRF stores lattice values between its float32 steps, as the
    kernel reports it: "half" on x86-64 CPUs with AVX2/F16C unless
    ``DEEPLAB_CRF_STORAGE=float32``; "float32" elsewhere and without the extension;
    "unknown (...)" for an extension built before the report existed.  A bad value of
    the variable raises :class:`~deeplab_compile.settings.SettingError` (a ValueError)."""
    settings.check("DEEPLAB_CRF_STORAGE")
    return _reported("crf_storage", "float32")


def aspp_cpu_kernel() -> str:
    """The float32 CPU forward of ``deeplab::aspp_sum``, as the kernel reports it:
    "direct" (per-tap-group register tiles, x86-64 with AVX-512) or "gemm" (banded tap
    GEMMs, elsewhere or with ``DEEPLAB_ASPP_CPU_KERNEL=gemm``); "reference" without the
    extension; "unknown (...)" for an extension built before the report existed.  A
    bad value of the variable raises SettingError (a ValueError)."""
    settings.check("DEEPLAB_ASPP_CPU_KERNEL")
    return _reported("aspp_sum_forward", "reference")


def _info(fn) -> str:
    try:
        return fn()
    except ValueError as err:
        return f"invalid: {err}"


def backends() -> dict:
    """What the kernels run on, for ``deeplab-compile --info``.

    ``extension``: whether ``_C`` loaded (``extension_path`` / ``extension_error``);
    ``cpu`` / ``cuda``: the ``deeplab`` ops with a compiled kernel for that device;
    ``cuda_device``: whether torch sees a GPU; ``threads``: torch's intra-op threads;
    ``crf_storage``: how the CPU dense CRF stores lattice values between its float32
    steps (:func:`crf_storage`); ``aspp_cpu_kernel``: the float32 CPU forward of
    ``aspp_sum`` (:func:`aspp_cpu_kernel`).
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
        "crf_storage": _info(crf_storage),
        "aspp_cpu_kernel": _info(aspp_cpu_kernel),
        "torch": torch.__version__,
    }
