"""``deeplab::aspp_v3_head``: DeepLab v3's ASPP head fused for inference.

Shapes::

    x                 (N, C, H, W)
    weights           B x (Cb_i, C, k, k), k = 1 or 3   branch convolutions, BatchNorm folded in
    biases            B x (Cb_i,)
    rates             B ints                             dilation of the 3x3 branches (1x1: ignored)
    proj_weights      B x (Co, Cb_i)                     each branch's slice of the 1x1 projection
    pool_weight       (Cp, C) or None                    image pooling's 1x1 conv (BN folded)
    pool_bias         (Cp,) or None
    pool_proj_weight  (Co, Cp) or None                   the projection's slice for image pooling
    proj_bias         (Co,)
    relu_out          bool                               ReLU after the projection
    tap_branches      ints (default none)                3x3 branches run through deeplab::aspp_sum
    returns           (N, Co, H, W)

    y = act(proj_bias + pool_proj_weight relu(pool_weight mean_hw(x) + pool_bias)
            + sum_i proj_weights[i] relu(conv_i(x)))

which equals the unfused head ``conv_i -> BN -> ReLU``, image pooling -> bilinear
upsampling, concat, 1x1 projection -> BN -> ReLU, with the concat (B + 1) * Cb channels
wide never built.  Inference only: training keeps the unfused graph, and calling it on
tensors that need gradients raises.

The atrous kernel: a 3x3 branch in ``tap_branches`` is convolved by ``deeplab::aspp_sum``
with its one rate instead of the library convolution.
:func:`aspp_v3_head_auto` puts a branch there only when the dispatcher measured that
faster for the branch's shape and rate (benchmarks/RESULTS.md: on our 2-core CPU, rates of 12 and up).

Under ``torch.autocast`` the op takes the region's dtype, as the convolutions it
replaces do (:mod:`._autocast`, policy "lower").
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from . import _autocast, _ext, dispatch
from .aspp_sum import aspp_sum_choice

_ext.available()


def aspp_v3_head_reference(x, weights, biases, rates, proj_weights, pool_weight, pool_bias, pool_proj_weight,
                           proj_bias, relu_out: bool) -> torch.Tensor:
    """The library path, as the unfused graph runs it: branches, concat, projection."""
    _check(x, weights, biases, rates, proj_weights)
    n, _, h, w = x.shape
    outs = []
    for wt, b, r in zip(weights, biases, rates):
        k = wt.shape[-1]
        outs.append(F.relu(F.conv2d(x, wt, b, padding=int(r) * (k - 1) // 2, dilation=int(r) if k > 1 else 1)))
    proj = list(proj_weights)
    if pool_weight is not None:
        p = F.relu(F.conv2d(x.mean((2, 3), keepdim=True), pool_weight[:, :, None, None], pool_bias))
        outs.append(p.expand(n, p.shape[1], h, w))
        proj.append(pool_proj_weight)
    cat = torch.cat(outs, 1)
    y = F.conv2d(cat, torch.cat(proj, 1)[:, :, None, None], proj_bias)
    return F.relu(y) if relu_out else y


def aspp_v3_head(x, weights, biases, rates, proj_weights, pool_weight, pool_bias, pool_proj_weight,
                 proj_bias, relu_out: bool, tap_branches: Sequence[int] = ()) -> torch.Tensor:
    """The fused head (compiled kernel, or the reference without the extension)."""
    _check(x, weights, biases, rates, proj_weights)
    if _ext.use_compiled("aspp_v3_head", x):
        return torch.ops.deeplab.aspp_v3_head(x, list(weights), list(biases), [int(r) for r in rates],
                                              list(proj_weights), pool_weight, pool_bias, pool_proj_weight,
                                              proj_bias, bool(relu_out), [int(t) for t in tap_branches])
    return aspp_v3_head_reference(x, weights, biases, rates, proj_weights, pool_weight, pool_bias,
                                  pool_proj_weight, proj_bias, relu_out)


def pick_tap_branches(x, weights, biases, rates) -> list[int]:
    """The 3x3 branches (rate > 1) whose convolution measured faster through
    ``deeplab::aspp_sum`` with their one rate than through the library
    (:func:`~.aspp_sum.aspp_sum_choice`, once per device, dtype, shape bucket and rate)."""
    return [i for i, (w, b, r) in enumerate(zip(weights, biases, rates))
            if w.shape[-1] == 3 and int(r) > 1 and aspp_sum_choice(x, [w], [b], [r]) == "ours"]


def aspp_v3_head_auto(*args) -> torch.Tensor:
    """:func:`aspp_v3_head` or the reference, whichever measured faster for this device and
    shape bucket; the fused head convolves each 3x3 branch the faster way (:func:`pick_tap_branches`)."""
    x, weights, biases, rates = args[0], args[1], args[2], args[3]
    ours = _ext.has_kernel("aspp_v3_head", dispatch.device_key(x))
    if not ours:
        return aspp_v3_head_reference(*args)
    taps = pick_tap_branches(x, weights, biases, rates)
    key = ("aspp_v3_head", x.device.type, x.dtype, dispatch.shape_bucket(x.shape), x.is_contiguous(),
           tuple(tuple(w.shape) for w in weights), tuple(int(r) for r in rates), args[5] is not None, tuple(taps),
           _autocast.region(x))
    name = dispatch.choose(key, {"ours": lambda *a: aspp_v3_head(*a, tap_branches=taps),
                                 "library": aspp_v3_head_reference}, args)
    return aspp_v3_head(*args, tap_branches=taps) if name == "ours" else aspp_v3_head_reference(*args)


def _check(x, weights, biases, rates, proj_weights) -> None:
    if x.dim() != 4:
        raise ValueError(f"aspp_v3_head: 'x' must be (N, C, H, W), got {tuple(x.shape)}")
    if not (len(weights) == len(biases) == len(rates) == len(proj_weights)):
        raise ValueError(f"aspp_v3_head: {len(weights)} weights, {len(biases)} biases, {len(rates)} rates and "
                         f"{len(proj_weights)} proj_weights; give one of each per branch")


if _ext.available():
    @torch.library.register_fake("deeplab::aspp_v3_head")
    def _aspp_v3_head_fake(x, weights, biases, rates, proj_weights, pool_weight, pool_bias, pool_proj_weight,
                           proj_bias, relu_out, tap_branches=()):
        torch._check(x.dim() == 4)
        return x.new_empty((x.shape[0], proj_bias.shape[0], x.shape[2], x.shape[3]))

    def _no_backward(ctx, grad):
        raise RuntimeError("deeplab::aspp_v3_head is inference only; compile the net with fuse=False "
                           "(or --no-fuse) or in the train phase to train it")

    def _setup_context(ctx, inputs, output):
        pass

    torch.library.register_autograd("deeplab::aspp_v3_head", _no_backward, setup_context=_setup_context)
    _autocast.register("deeplab::aspp_v3_head", "lower")
