"""``deeplab::aspp_sum``: DeepLab v2's atrous spatial pyramid pooling, summed.

Shapes::

    x        (N, C, H, W)          float32 / float64 (CPU also bfloat16 / float16)
    weights  R x (Co, C, 3, 3)     one 3x3 weight per rate
    biases   R x (Co,) or []       one bias per rate, or none
    rates    R ints >= 1           dilation = padding = rate
    returns  (N, Co, H, W)         sum_r conv2d(x, weights[r], biases[r], dilation=r, padding=r)

The input is read once and no per-rate output exists.  On CPU in float32, where the CPU
has AVX-512, the forward is the direct kernel (csrc/cpu/aspp_direct.h): the taps are
grouped by horizontal offset and register tiles of (tap, class) lanes x pixels form
products only where a tap reaches the map.  Elsewhere (other dtypes, other CPUs, CUDA,
``DEEPLAB_ASPP_CPU_KERNEL=gemm``) the kernels stack the weights of every tap into GEMMs
over row bands and place their output with shifted adds (csrc/cpu/aspp_sum.cpp).
Differentiable in ``x``, ``weights`` and ``biases`` through ``deeplab::_aspp_sum_backward``.

:func:`aspp_sum` runs the compiled kernel (or the reference without the extension);
:func:`aspp_sum_auto` lets :mod:`.dispatch` pick, per device and shape, whichever of the
kernel and the library path (``F.conv2d`` per rate, then the sum) measured faster.

Under ``torch.autocast`` the op takes the region's dtype, as ``conv2d`` does: every
floating input is cast to it (:mod:`._autocast`, policy "lower").
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from . import _autocast, _ext, dispatch

_ext.available()


def aspp_sum_reference(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
                       rates: Sequence[int]) -> torch.Tensor:
    """The library path: one ``F.conv2d`` per rate, then the sum."""
    _check(x, weights, biases, rates)
    y = None
    for i, (w, r) in enumerate(zip(weights, rates)):
        t = F.conv2d(x, w, biases[i] if biases else None, padding=int(r), dilation=int(r))
        y = t if y is None else y + t
    return y


def aspp_sum(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
             rates: Sequence[int]) -> torch.Tensor:
    """``sum_r conv2d(x, weights[r], biases[r], dilation=rates[r], padding=rates[r])``; see the module doc."""
    _check(x, weights, biases, rates)
    if _ext.use_compiled("aspp_sum", x):
        return torch.ops.deeplab.aspp_sum(x, list(weights), list(biases), [int(r) for r in rates])
    return aspp_sum_reference(x, weights, biases, rates)


def aspp_sum_choice(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
                    rates: Sequence[int]) -> str:
    """"ours" (:func:`aspp_sum`) or "library" (:func:`aspp_sum_reference`), whichever
    measured faster for this device, dtype, shape bucket and grad mode (measured once,
    then cached; see :mod:`.dispatch`)."""
    rates = [int(r) for r in rates]
    key = ("aspp_sum", x.device.type, x.dtype, dispatch.shape_bucket(x.shape), x.is_contiguous(),
           tuple(weights[0].shape), tuple(rates), bool(biases), _autocast.region(x))
    ours = _ext.has_kernel("aspp_sum", dispatch.device_key(x))
    return dispatch.choose(key, {"ours": aspp_sum, "library": aspp_sum_reference} if ours
                           else {"library": aspp_sum_reference}, (x, list(weights), list(biases), rates))


def aspp_sum_auto(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
                  rates: Sequence[int]) -> torch.Tensor:
    """:func:`aspp_sum` or :func:`aspp_sum_reference`, as :func:`aspp_sum_choice` decides."""
    fn = aspp_sum if aspp_sum_choice(x, weights, biases, rates) == "ours" else aspp_sum_reference
    return fn(x, list(weights), list(biases), [int(r) for r in rates])


def _check(x, weights, biases, rates) -> None:
    if x.dim() != 4:
        raise ValueError(f"aspp_sum: 'x' must be (N, C, H, W), got {tuple(x.shape)}")
    if not weights or len(weights) != len(rates):
        raise ValueError(f"aspp_sum: need one weight per rate, got {len(weights)} weights and {len(rates)} rates")
    if biases and len(biases) != len(weights):
        raise ValueError(f"aspp_sum: {len(biases)} biases for {len(weights)} weights; give one per weight or none")
    for i, w in enumerate(weights):
        if w.dim() != 4 or tuple(w.shape[1:]) != (x.shape[1], 3, 3) or w.shape[0] != weights[0].shape[0]:
            raise ValueError(f"aspp_sum: 'weights[{i}]' must be ({weights[0].shape[0]}, {x.shape[1]}, 3, 3), "
                             f"got {tuple(w.shape)}")
    for i, r in enumerate(rates):
        if int(r) < 1:
            raise ValueError(f"aspp_sum: 'rates[{i}]' must be >= 1, got {r}")


if _ext.available():
    @torch.library.register_fake("deeplab::aspp_sum")
    def _aspp_sum_fake(x, weights, biases, rates):
        torch._check(x.dim() == 4)
        torch._check(len(weights) == len(rates))
        return x.new_empty((x.shape[0], weights[0].shape[0], x.shape[2], x.shape[3]))

    @torch.library.register_fake("deeplab::_aspp_sum_backward")
    def _aspp_sum_backward_fake(grad, x, weights, rates, has_bias):
        torch._check(grad.dim() == 4 and x.dim() == 4)
        gb = [grad.new_empty((w.shape[0],)) for w in weights] if has_bias else []
        return x.new_empty(x.shape), [w.new_empty(w.shape) for w in weights], gb

    def _setup_context(ctx, inputs, output):
        x, weights, biases, rates = inputs
        ctx.save_for_backward(x, *weights)
        ctx.rates = list(rates)
        ctx.has_bias = len(biases) > 0

    def _backward(ctx, grad):
        x, *weights = ctx.saved_tensors
        gx, gw, gb = torch.ops.deeplab._aspp_sum_backward(grad.contiguous(), x, weights, ctx.rates, ctx.has_bias)
        return gx, list(gw), list(gb), None

    torch.library.register_autograd("deeplab::aspp_sum", _backward, setup_context=_setup_context)
    _autocast.register("deeplab::aspp_sum", "lower")
