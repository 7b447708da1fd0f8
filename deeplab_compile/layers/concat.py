"""Caffe's Concat along ``axis`` (``concat_dim`` is the legacy name)."""
from __future__ import annotations

import torch
from torch import nn

from ..graph import Layer, Shape
from ..netdef.errors import ShapeError
from ._args import canonical_axis, fmt
from .base import LayerType, P


class CaffeConcat(nn.Module):
    def __init__(self, *, axis: int = 1):
        super().__init__()
        self.axis = axis

    def extra_repr(self) -> str:
        return f"axis={self.axis}"

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return xs[0] if len(xs) == 1 else torch.cat(xs, dim=self.axis)


class Concat(LayerType):
    type_name = "Concat"
    params = {"axis": P("int", 1, aliases=("concat_dim",))}
    bottoms = (1, None)

    def shapes(self, layer: Layer, in_shapes: list[Shape]) -> list[Shape]:
        first = in_shapes[0]
        axis = canonical_axis(layer, layer.params["axis"], len(first))
        total = 0
        for i, s in enumerate(in_shapes):
            if len(s) != len(first) or any(a != b for d, (a, b) in enumerate(zip(s, first)) if d != axis):
                raise layer.error(
                    f"bottom '{layer.bottoms[i]}' is {fmt(s)} but bottom '{layer.bottoms[0]}' is "
                    f"{fmt(first)}; all dims except axis {axis} must agree",
                    hint="crop or resize the bottoms to one size (Crop / Interp), or change 'axis'",
                    cls=ShapeError)
            total += s[axis]
        return [first[:axis] + (total,) + first[axis + 1:]]

    def build(self, layer: Layer) -> nn.Module:
        return CaffeConcat(axis=canonical_axis(layer, layer.params["axis"], len(layer.in_shapes[0])))
