"""The real peer models (torchvision, timm) for parity tests, with random weights.

torchvision's wheel on the package registry is a CUDA build whose C extension cannot
load on the CPU torch; its Python model code runs once the two operator schemas its
meta registrations refer to exist.  They are defined here, before the import, and only
here (never in the package).  Where torchvision or timm is not installed the tests that
need them skip with the reason.
"""
from __future__ import annotations

import importlib

import pytest
import torch

_LIB = None


def _define_torchvision_schemas() -> None:
    global _LIB
    if _LIB is not None:
        return
    try:
        torch.ops.torchvision.nms.default  # the real extension (a build that loads) has it
        return
    except (AttributeError, RuntimeError):
        pass
    _LIB = torch.library.Library("torchvision", "DEF")
    _LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


def _import(name: str):
    if name in ("torchvision", "timm"):
        _define_torchvision_schemas()
    try:
        return importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - any import failure means: not available here
        pytest.skip(f"{name} is not importable here ({type(exc).__name__}: {exc}); "
                    "install requirements-peers.txt with --no-deps")


def torchvision():
    return _import("torchvision")


def timm():
    return _import("timm")


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics and affine terms, so a mapping that mixes up
    mean/var/gamma/beta or forgets eps is caught."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            if m.affine:
                m.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()
