"""``deeplab::permutohedral_filter``: Gaussian filtering in feature space through the
permutohedral lattice (Adams, Baek and Davis 2010).

Shapes::

    features  (N, D)  float    point positions, already divided by the kernel's std
    values    (N, V)  float32 or float64
    returns   (N, V)  same dtype as values
                      out_i ~= sum_j exp(-|f_i - f_j|^2 / 2) values_j   (self term included)

The lattice approximation is close to, but not exactly, that Gaussian (a truncated,
slightly anisotropic kernel; see the tests for the measured error).  The op is linear
in ``values`` and differentiable with respect to them (the backward op applies the
transposed filter); ``features`` only place the points and get no gradient.
Under ``torch.autocast`` (bf16/fp16) reduced-precision inputs are cast to float32 and
the result is float32 (:mod:`._autocast`, policy "float32"); float64 stays float64.
"""
from __future__ import annotations

import torch

from . import _autocast, _ext
from . import _lattice_reference as ref

_ext.available()


def permutohedral_filter_reference(features: torch.Tensor, values: torch.Tensor,
                                   reverse: bool = False) -> torch.Tensor:
    """The same filter in plain PyTorch (``reverse`` gives the transposed filter)."""
    _check(features, values)
    if values.shape[0] == 0:
        return values.new_zeros(values.shape)
    lat = ref.build(features.detach().to(values.dtype))
    return ref.filter(lat, values, reverse=reverse)


def permutohedral_filter(features: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Filter ``values`` (N, V) with a unit Gaussian over ``features`` (N, D); see the module doc."""
    dev = values.device.type
    if torch.is_autocast_enabled(dev):      # float32 kernels: reduced-precision inputs back to float32
        features, values = _autocast.to_float32(dev, features, values)
        with torch.autocast(dev, enabled=False):
            return permutohedral_filter(features, values)
    _check(features, values)
    if _ext.use_compiled("permutohedral_filter", values):
        return torch.ops.deeplab.permutohedral_filter(features, values)
    return permutohedral_filter_reference(features, values)


def _check(features: torch.Tensor, values: torch.Tensor) -> None:
    if features.dim() != 2 or features.shape[1] < 1:
        raise ValueError(f"permutohedral_filter: 'features' must be (N, D) with D >= 1, got {tuple(features.shape)}")
    if values.dim() != 2:
        raise ValueError(f"permutohedral_filter: 'values' must be (N, V), got {tuple(values.shape)}")
    if features.shape[0] != values.shape[0]:
        raise ValueError(f"permutohedral_filter: 'features' has {features.shape[0]} points, "
                         f"'values' has {values.shape[0]}")
    if values.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"permutohedral_filter: 'values' must be float32 or float64, got {values.dtype}")
    if not features.is_floating_point():
        raise TypeError(f"permutohedral_filter: 'features' must be floating point, got {features.dtype}")


if _ext.available():
    @torch.library.register_fake("deeplab::permutohedral_filter")
    def _filter_fake(features, values):
        torch._check(features.dim() == 2 and values.dim() == 2)
        torch._check(features.shape[0] == values.shape[0])
        return values.new_empty(values.shape)

    @torch.library.register_fake("deeplab::_permutohedral_filter_backward")
    def _filter_backward_fake(features, grad):
        torch._check(features.dim() == 2 and grad.dim() == 2)
        torch._check(features.shape[0] == grad.shape[0])
        return grad.new_empty(grad.shape)

    def _setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    def _filter_backward(ctx, grad):
        (features,) = ctx.saved_tensors
        return None, torch.ops.deeplab._permutohedral_filter_backward(features, grad.contiguous())

    def _filter_double_backward(ctx, grad):
        # The backward is the transposed filter, so its own gradient is the filter again.
        (features,) = ctx.saved_tensors
        return None, torch.ops.deeplab.permutohedral_filter(features, grad.contiguous())

    torch.library.register_autograd("deeplab::permutohedral_filter", _filter_backward,
                                    setup_context=_setup_context)
    torch.library.register_autograd("deeplab::_permutohedral_filter_backward", _filter_double_backward,
                                    setup_context=_setup_context)
    _autocast.register("deeplab::permutohedral_filter", "float32")
    _autocast.register("deeplab::_permutohedral_filter_backward", "float32")
