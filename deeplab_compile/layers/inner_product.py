"""Caffe's InnerProduct: flattens from ``axis`` and applies a fully connected map.

The weight is ``[num_output, K]`` (``[K, num_output]`` with ``transpose: true``), as in
Caffe, where K is the product of the bottom's dims from ``axis`` on.  Caffe's default
fillers (constant 0) are kept.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..graph import Layer, Shape
from ._args import canonical_axis, count
from .base import LayerType, P, positive_size
from .fillers import apply_filler, check_fill

_ZERO = {"type": "constant", "value": 0.0}


class CaffeInnerProduct(nn.Module):
    def __init__(self, *, in_features: int, out_features: int, axis: int = 1,
                 bias: bool = True, transpose: bool = False):
        super().__init__()
        self.axis, self.transpose = axis, transpose
        shape = (in_features, out_features) if transpose else (out_features, in_features)
        self.weight = nn.Parameter(torch.zeros(shape))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(self.axis) if self.axis < x.dim() - 1 else x
        w = self.weight.t() if self.transpose else self.weight
        return F.linear(x, w, self.bias)


class InnerProduct(LayerType):
    type_name = "InnerProduct"
    params = {
        "num_output": P("int", min=1),
        "bias_term": P("bool", True),
        "weight_filler": P("filler", _ZERO, doc="Caffe's default: constant 0"),
        "bias_filler": P("filler", _ZERO, doc="Caffe's default: constant 0"),
        "axis": P("int", 1),
        "transpose": P("bool", False),
    }
    blobs = ("weight", "bias")

    def shapes(self, layer: Layer, in_shapes: list[Shape]) -> list[Shape]:
        x = in_shapes[0]
        axis = canonical_axis(layer, layer.params["axis"], len(x))
        return [positive_size(layer, x[:axis] + (layer.params["num_output"],))]

    def build(self, layer: Layer) -> nn.Module:
        x = layer.in_shapes[0]
        axis = canonical_axis(layer, layer.params["axis"], len(x))
        p = layer.params
        mod = CaffeInnerProduct(in_features=count(x, axis), out_features=p["num_output"], axis=axis,
                                bias=p["bias_term"], transpose=p["transpose"])
        check_fill(layer, "weight_filler", tuple(mod.weight.shape))
        apply_filler(mod.weight, p["weight_filler"])
        if mod.bias is not None:
            apply_filler(mod.bias, p["bias_filler"])
        return mod

    def param_shapes(self, layer: Layer) -> dict[str, Shape]:
        x = layer.in_shapes[0]
        p = layer.params
        k, n = count(x, canonical_axis(layer, p["axis"], len(x))), p["num_output"]
        return {"weight": (k, n) if p["transpose"] else (n, k), **({"bias": (n,)} if p["bias_term"] else {})}

    def flops(self, layer: Layer) -> int:
        x = layer.in_shapes[0]
        axis = canonical_axis(layer, layer.params["axis"], len(x))
        return count(x, 0, axis) * count(x, axis) * layer.params["num_output"]
