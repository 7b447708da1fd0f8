"""The kernel settings read from the environment, checked in one place.

=========================  ====================  =====================================
variable                   values                what it picks
=========================  ====================  =====================================
DEEPLAB_ASPP_CPU_KERNEL    auto, direct, gemm    float32 CPU forward of aspp_sum
DEEPLAB_CRF_STORAGE        half, float32         CPU dense CRF lattice storage
=========================  ====================  =====================================

Unset (or empty) means the default.  The kernels read the variables on every call and
refuse other values too; :func:`check` gives the one-line error with its fix before any
work is done.  Torch-free, so the console scripts can check at start-up for nothing.
"""
from __future__ import annotations

import os

from .errors import DeepLabError

SETTINGS = {
    "DEEPLAB_ASPP_CPU_KERNEL": (("auto", "direct", "gemm"),
                                "unset it, or set it to gemm for the banded GEMM kernel"),
    "DEEPLAB_CRF_STORAGE": (("half", "float32"), "unset it (half-float storage) or set it to float32"),
}


class SettingError(DeepLabError, ValueError):
    """A kernel setting in the environment has a value the kernels refuse."""


def check(var: str) -> str:
    """The value of ``var`` ("" when unset); SettingError when it is not allowed."""
    allowed, hint = SETTINGS[var]
    value = os.environ.get(var, "")
    if value and value not in allowed:
        raise SettingError(f"{var} must be one of {', '.join(allowed)}, got {value!r}", hint=hint)
    return value


def check_all() -> None:
    """Every setting of :data:`SETTINGS`; the first bad one raises SettingError."""
    for var in SETTINGS:
        check(var)
