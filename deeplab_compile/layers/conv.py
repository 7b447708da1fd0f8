"""Convolution and Deconvolution, with Caffe's parameters and default fillers.

Caffe's default fillers are kept: weight and bias both ``constant 0``.  A netdef that
trains from scratch must therefore name a ``weight_filler`` (as Caffe prototxts do).
DeepLab v1's ``hole`` is an alias of ``dilation``.  ``engine`` is accepted and ignored.

``geometry`` is reported along H (W follows the same rule).
"""
from __future__ import annotations

from fractions import Fraction

from torch import nn

from ..graph import Layer, Shape
from ..netdef.errors import ParameterError, ShapeError
from ._args import fmt, spatial_pair, spatial_params
from .base import LayerType, P, positive_size
from .fillers import apply_filler, check_fill

_ZERO = {"type": "constant", "value": 0.0}


def conv_params() -> dict[str, P]:
    return {
        "num_output": P("int", min=1),
        **spatial_params("kernel_size", None, min=1),
        **spatial_params("stride", 1, min=1),
        **spatial_params("pad", 0, min=0),
        "dilation": P("ints", [1], min=1, aliases=("hole",), doc="atrous rate; 'hole' is DeepLab v1's name"),
        "group": P("int", 1, min=1),
        "bias_term": P("bool", True),
        "weight_filler": P("filler", _ZERO, doc="Caffe's default: constant 0"),
        "bias_filler": P("filler", _ZERO, doc="Caffe's default: constant 0"),
        "engine": P("enum", "default", choices=("default", "caffe", "cudnn"), doc="accepted, ignored"),
        "axis": P("int", 1, doc="channel axis; only 1 is supported"),
        "force_nd_im2col": P("bool", False, doc="accepted, ignored"),
    }


class _ConvBase(LayerType):
    params = conv_params()
    blobs = ("weight", "bias")

    def geom(self, layer: Layer):
        p = layer.params
        k = spatial_pair(layer, "kernel_size", None)
        s = spatial_pair(layer, "stride", 1)
        pad = spatial_pair(layer, "pad", 0, both_required=False)
        d = p["dilation"]
        if len(d) not in (1, 2):
            raise layer.error(f"parameter 'dilation' has {len(d)} values; a 2-D layer takes 1 or 2",
                              key="dilation", hint="write 'dilation: N' or 'dilation: [H, W]'",
                              cls=ParameterError)
        d = (d[0], d[-1])
        return k, s, pad, d

    def check(self, layer: Layer) -> None:
        p = layer.params
        self.geom(layer)
        if p["axis"] != 1:
            raise layer.error(f"axis {p['axis']} is not supported", key="axis",
                              hint="use axis: 1 (channels after the batch)", cls=ParameterError)
        if p["num_output"] % p["group"]:
            raise layer.error(f"num_output {p['num_output']} is not divisible by group {p['group']}",
                              key="group", hint="make num_output a multiple of group", cls=ParameterError)

    def _check_input(self, layer: Layer, in_shapes: list[Shape]) -> Shape:
        x = in_shapes[0]
        if len(x) != 4:
            raise layer.error(f"input is {fmt(x)}, a 2-D convolution needs N x C x H x W",
                              hint="feed it a 4-D blob", cls=ShapeError)
        if x[1] % layer.params["group"]:
            raise layer.error(f"input channels {x[1]} are not divisible by group {layer.params['group']}",
                              key="group", hint="use a group that divides the input channels",
                              cls=ShapeError)
        return x

    def param_shapes(self, layer: Layer) -> dict[str, Shape]:
        k, *_ = self.geom(layer)
        c, co, g = layer.in_shapes[0][1], layer.params["num_output"], layer.params["group"]
        weight = (co, c // g, *k) if self.type_name == "Convolution" else (c, co // g, *k)
        return {"weight": weight, **({"bias": (co,)} if layer.params["bias_term"] else {})}

    def _fill(self, layer: Layer, mod: nn.Module) -> nn.Module:
        check_fill(layer, "weight_filler", tuple(mod.weight.shape))
        apply_filler(mod.weight, layer.params["weight_filler"])
        if mod.bias is not None:
            apply_filler(mod.bias, layer.params["bias_filler"])
        return mod


class Convolution(_ConvBase):
    """Caffe's Convolution: output ``(H + 2p - (d(k-1)+1)) // s + 1``; ``nn.Conv2d``."""

    type_name = "Convolution"

    def shapes(self, layer: Layer, in_shapes: list[Shape]) -> list[Shape]:
        n, c, h, w = self._check_input(layer, in_shapes)
        k, s, pad, d = self.geom(layer)
        ho = (h + 2 * pad[0] - (d[0] * (k[0] - 1) + 1)) // s[0] + 1
        wo = (w + 2 * pad[1] - (d[1] * (k[1] - 1) + 1)) // s[1] + 1
        return [positive_size(layer, (n, layer.params["num_output"], ho, wo))]

    def build(self, layer: Layer) -> nn.Module:
        p = layer.params
        k, s, pad, d = self.geom(layer)
        mod = nn.Conv2d(layer.in_shapes[0][1], p["num_output"], k, stride=s, padding=pad,
                        dilation=d, groups=p["group"], bias=p["bias_term"])
        return self._fill(layer, mod)

    def flops(self, layer: Layer) -> int:
        (n, c, _, _), (_, co, ho, wo) = layer.in_shapes[0], layer.out_shapes[0]
        k, *_ = self.geom(layer)
        return n * co * ho * wo * (c // layer.params["group"]) * k[0] * k[1]

    def geometry(self, layer: Layer):
        k, s, _, d = self.geom(layer)
        return d[0] * (k[0] - 1) + 1, s[0]


class Deconvolution(_ConvBase):
    """Caffe's Deconvolution: output ``(H-1)s - 2p + d(k-1) + 1``; ``nn.ConvTranspose2d``.

    The weight is ``[Cin, Cout/group, kh, kw]`` as in Caffe.  With ``weight_filler:
    {type: bilinear}``, ``group = num_output = C``, ``kernel_size = 2f - f%2``, ``stride = f``
    and ``pad = ceil((f-1)/2)`` it upsamples bilinearly by ``f``.

    ``geometry``: a top pixel depends on ``ceil(k_eff / s)`` bottom pixels and the stride
    is ``Fraction(1, s)``.  ``flops`` counts ``N*Cin*H*W*(Cout/group)*kh*kw`` (Caffe runs
    it as the backward of a convolution over the bottom).
    """

    type_name = "Deconvolution"

    def shapes(self, layer: Layer, in_shapes: list[Shape]) -> list[Shape]:
        n, c, h, w = self._check_input(layer, in_shapes)
        k, s, pad, d = self.geom(layer)
        ho = (h - 1) * s[0] - 2 * pad[0] + d[0] * (k[0] - 1) + 1
        wo = (w - 1) * s[1] - 2 * pad[1] + d[1] * (k[1] - 1) + 1
        return [positive_size(layer, (n, layer.params["num_output"], ho, wo))]

    def build(self, layer: Layer) -> nn.Module:
        p = layer.params
        k, s, pad, d = self.geom(layer)
        mod = nn.ConvTranspose2d(layer.in_shapes[0][1], p["num_output"], k, stride=s, padding=pad,
                                 dilation=d, groups=p["group"], bias=p["bias_term"])
        return self._fill(layer, mod)

    def flops(self, layer: Layer) -> int:
        n, c, h, w = layer.in_shapes[0]
        k, *_ = self.geom(layer)
        return n * c * h * w * (layer.params["num_output"] // layer.params["group"]) * k[0] * k[1]

    def geometry(self, layer: Layer):
        k, s, _, d = self.geom(layer)
        return -(-(d[0] * (k[0] - 1) + 1) // s[0]), Fraction(1, s[0])     # ceil, exact for any size
