"""Caffe's Pooling: MAX and AVE with Caffe's output size and window clipping.

Caffe's rules (``pooling_layer.cpp``), per axis, for input size H, kernel k, stride s, pad p:

* output ``Ho = ceil((H + 2p - k) / s) + 1``; when the layer has any padding (pad_h or
  pad_w > 0, on either axis) and the last window would start in the bottom/right padding
  (``(Ho-1)s >= H + p``) it is dropped;
* MAX takes the maximum over the window clipped to the input (padding never wins);
* AVE sums over the clipped window but divides by the window size clipped only to the
  padded extent ``H + p``, so padding counts and what lies beyond it does not.

``F.max_pool2d`` / ``F.avg_pool2d`` (``ceil_mode=True, count_include_pad=True``) follow
the same rules whenever torch accepts the arguments and agrees on the size.  Two cases
differ and take the explicit path in :class:`CaffePool2d`:

* ``p > k // 2``: torch refuses it (Caffe only needs ``p < k``);
* no padding at all and ``k < s``: torch drops a last window that starts past the
  input, Caffe keeps it (an empty window: MAX gives ``-FLT_MAX``, AVE gives 0 here where Caffe
  divides 0 by a non-positive count).

Global pooling takes the whole H x W; ``geometry`` then returns the bottom's height as the
kernel extent, so the usual receptive-field rule covers the whole input.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..graph import Layer, Shape
from ..netdef.errors import ParameterError, ShapeError
from ._args import fmt, spatial_pair, spatial_params
from .base import LayerType, P, positive_size

FLT_MAX = 3.4028234663852886e38


def caffe_pool_size(size: int, k: int, s: int, p: int, padded: bool, ceil: bool = True) -> int:
    """Caffe's pooled size along one axis; ``padded``: the layer pads along some axis;
    ``ceil``: Caffe's default CEIL rounding, else FLOOR (``round_mode: FLOOR``)."""
    out = (-(-(size + 2 * p - k) // s) if ceil else (size + 2 * p - k) // s) + 1
    if padded and (out - 1) * s >= size + p:
        out -= 1
    return out


def torch_pool_size(size: int, k: int, s: int, p: int, ceil: bool = True) -> int:
    """torch's pooled size along one axis (``ceil_mode=ceil``)."""
    out = (-(-(size + 2 * p - k) // s) if ceil else (size + 2 * p - k) // s) + 1
    if (out - 1) * s >= size + p:
        out -= 1
    return out


def _ave_divisor(size: int, out: int, k: int, s: int, p: int) -> list[float]:
    """Caffe's AVE divisor per output position; 1 for an empty window (its sum is 0)."""
    div = []
    for o in range(out):
        start = o * s - p
        n = min(start + k, size + p) - start
        div.append(float(n) if n > 0 and start < size else 1.0)
    return div


class CaffePool2d(nn.Module):
    """2-D max or average pooling with Caffe's output size, clipping and AVE divisor."""

    def __init__(self, *, pool: str, kernel: tuple[int, int], stride: tuple[int, int],
                 pad: tuple[int, int], global_pooling: bool = False, ceil_mode: bool = True):
        super().__init__()
        if pool not in ("max", "ave"):
            raise ValueError(f"pool must be 'max' or 'ave', got {pool!r}")
        if not global_pooling and (pad[0] >= kernel[0] or pad[1] >= kernel[1]):
            raise ValueError(f"pad {pad} must be smaller than kernel {kernel} (as in Caffe)")
        self.pool, self.kernel, self.stride, self.pad = pool, tuple(kernel), tuple(stride), tuple(pad)
        self.global_pooling = global_pooling
        self.ceil_mode = ceil_mode

    def extra_repr(self) -> str:
        if self.global_pooling:
            return f"pool={self.pool}, global_pooling=True"
        return (f"pool={self.pool}, kernel={self.kernel}, stride={self.stride}, pad={self.pad}"
                + ("" if self.ceil_mode else ", round_mode=floor"))

    def _native(self, h: int, w: int) -> bool:
        k, s, p = self.kernel, self.stride, self.pad
        return (2 * p[0] <= k[0] and 2 * p[1] <= k[1]
                and self.out_size(h, w) == (torch_pool_size(h, k[0], s[0], p[0], self.ceil_mode),
                                            torch_pool_size(w, k[1], s[1], p[1], self.ceil_mode)))

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        k, s, p = self.kernel, self.stride, self.pad
        padded = p != (0, 0)
        c = self.ceil_mode
        return caffe_pool_size(h, k[0], s[0], p[0], padded, c), caffe_pool_size(w, k[1], s[1], p[1], padded, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_pooling:
            return x.amax(dim=(-2, -1), keepdim=True) if self.pool == "max" else x.mean(dim=(-2, -1), keepdim=True)
        h, w = int(x.shape[-2]), int(x.shape[-1])
        k, s, p = self.kernel, self.stride, self.pad
        if self._native(h, w):
            if self.pool == "max":
                return F.max_pool2d(x, k, s, p, ceil_mode=self.ceil_mode)
            return F.avg_pool2d(x, k, s, p, ceil_mode=self.ceil_mode, count_include_pad=True)
        return self._explicit(x, h, w)

    def _explicit(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        k, s, p = self.kernel, self.stride, self.pad
        ho, wo = self.out_size(h, w)
        # pad so that every Caffe window lies inside the padded tensor, then pool unpadded
        right_h = (ho - 1) * s[0] + k[0] - h - p[0]
        right_w = (wo - 1) * s[1] + k[1] - w - p[1]
        fill = float("-inf") if self.pool == "max" else 0.0
        xp = F.pad(x, (p[1], right_w, p[0], right_h), value=fill)
        if self.pool == "max":
            y = F.max_pool2d(xp, k, s)[..., :ho, :wo]
            return y.clamp_min(-FLT_MAX)       # Caffe starts each window at -FLT_MAX
        y = F.avg_pool2d(xp, k, s)[..., :ho, :wo] * float(k[0] * k[1])
        dh = torch.tensor(_ave_divisor(h, ho, k[0], s[0], p[0]), dtype=x.dtype, device=x.device)
        dw = torch.tensor(_ave_divisor(w, wo, k[1], s[1], p[1]), dtype=x.dtype, device=x.device)
        return y / (dh[:, None] * dw[None, :])


class Pooling(LayerType):
    """Caffe's Pooling layer (MAX, AVE; STOCHASTIC is not supported)."""

    type_name = "Pooling"
    params = {
        "pool": P("enum", "max", choices=("max", "ave", "stochastic")),
        **spatial_params("kernel_size", None, min=1),
        **spatial_params("stride", 1, min=1),
        **spatial_params("pad", 0, min=0),
        "global_pooling": P("bool", False),
        "engine": P("enum", "default", choices=("default", "caffe", "cudnn"), doc="accepted, ignored"),
        "round_mode": P("enum", "ceil", choices=("ceil", "floor"),
                        doc="CEIL is Caffe's (and DeepLab's); FLOOR matches torchvision/TF models"),
    }

    def geom(self, layer: Layer, in_shape: Shape | None = None):
        p = layer.params
        if p["global_pooling"]:
            hw = in_shape[2:] if in_shape else (1, 1)
            return tuple(hw), (1, 1), (0, 0)
        k = spatial_pair(layer, "kernel_size", None)
        s = spatial_pair(layer, "stride", 1)
        pad = spatial_pair(layer, "pad", 0, both_required=False)
        return k, s, pad

    def check(self, layer: Layer) -> None:
        p = layer.params
        if p["pool"] == "stochastic":
            raise layer.error("pool STOCHASTIC is not supported", key="pool",
                              hint="use pool: MAX or pool: AVE", cls=ParameterError)
        if p["global_pooling"]:
            given = [k for k in ("kernel_size", "kernel_h", "kernel_w") if p[k] is not None]
            if given:
                raise layer.error(f"'{given[0]}' given with global_pooling", key=given[0],
                                  hint="drop the kernel size: global pooling covers the whole input",
                                  cls=ParameterError)
            if spatial_pair(layer, "pad", 0, both_required=False) != (0, 0) or \
                    spatial_pair(layer, "stride", 1) != (1, 1):
                raise layer.error("global_pooling takes no pad and no stride", key="global_pooling",
                                  hint="drop 'pad' and 'stride'", cls=ParameterError)
            return
        k, s, pad = self.geom(layer)
        for ax, name in enumerate("hw"):
            if pad[ax] >= k[ax]:
                raise layer.error(f"pad {pad[ax]} is not smaller than kernel {k[ax]} (along {name.upper()})",
                                  key="pad" if p["pad"] is not None else f"pad_{name}",
                                  hint="use a pad smaller than the kernel size", cls=ParameterError)

    def shapes(self, layer: Layer, in_shapes: list[Shape]) -> list[Shape]:
        x = in_shapes[0]
        if len(x) != 4:
            raise layer.error(f"input is {fmt(x)}, pooling needs N x C x H x W",
                              hint="feed it a 4-D blob", cls=ShapeError)
        n, c, h, w = x
        if layer.params["global_pooling"]:
            return [(n, c, 1, 1)]
        k, s, pad = self.geom(layer)
        if h + 2 * pad[0] < k[0] or w + 2 * pad[1] < k[1]:
            raise layer.error(f"kernel {k[0]}x{k[1]} is larger than the padded input {fmt(x)}",
                              hint="use a smaller kernel or a larger input", cls=ShapeError)
        padded = tuple(pad) != (0, 0)
        ceil = layer.params["round_mode"] == "ceil"
        return [positive_size(layer, (n, c, caffe_pool_size(h, k[0], s[0], pad[0], padded, ceil),
                                      caffe_pool_size(w, k[1], s[1], pad[1], padded, ceil)))]

    def build(self, layer: Layer) -> nn.Module:
        k, s, pad = self.geom(layer, layer.in_shapes[0] if layer.in_shapes else None)
        return CaffePool2d(pool=layer.params["pool"], kernel=k, stride=s, pad=pad,
                           global_pooling=layer.params["global_pooling"],
                           ceil_mode=layer.params["round_mode"] == "ceil")

    def geometry(self, layer: Layer):
        """(kernel extent, stride) along H; global pooling: the bottom's height, 1."""
        k, s, _ = self.geom(layer, layer.in_shapes[0] if layer.in_shapes else None)
        return k[0], s[0]
