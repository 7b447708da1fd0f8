"""Caffe's Slice (cut one blob into several along ``axis``) and Split (copy a blob to
several tops).  Modules of layers with several tops return a tuple, one tensor per top."""
from __future__ import annotations

import torch
from torch import nn

from ..graph import Layer, Shape
from ..netdef.errors import ParameterError, ShapeError
from ._args import canonical_axis, fmt
from .base import LayerType, P


class CaffeSlice(nn.Module):
    def __init__(self, *, axis: int, sizes: list[int]):
        super().__init__()
        self.axis, self.sizes = axis, list(sizes)

    def extra_repr(self) -> str:
        return f"axis={self.axis}, sizes={self.sizes}"

    def forward(self, x: torch.Tensor):
        if len(self.sizes) == 1:
            return x
        return tuple(torch.split(x, self.sizes, dim=self.axis))


class Slice(LayerType):
    """``slice_point`` lists the cut positions (one fewer than the tops); without it the
    axis is split into equal parts, one per top."""

    type_name = "Slice"
    params = {"axis": P("int", 1, aliases=("slice_dim",)),
              "slice_point": P("ints", [], min=1)}
    tops = (1, None)

    def check(self, layer: Layer) -> None:
        pts = layer.params["slice_point"]
        if pts and len(pts) != len(layer.tops) - 1:
            raise layer.error(f"{len(pts)} slice points for {len(layer.tops)} tops", key="slice_point",
                              hint="give one slice point fewer than the tops", cls=ParameterError)
        if any(b <= a for a, b in zip(pts, pts[1:])):
            raise layer.error(f"slice points {pts} are not increasing", key="slice_point",
                              hint="list the cut positions in increasing order", cls=ParameterError)

    def sizes(self, layer: Layer, shape: Shape) -> tuple[int, list[int]]:
        axis = canonical_axis(layer, layer.params["axis"], len(shape))
        dim, n, pts = shape[axis], len(layer.tops), layer.params["slice_point"]
        if pts:
            if pts[-1] >= dim:
                raise layer.error(f"slice point {pts[-1]} is not inside axis {axis} of size {dim} "
                                  f"(input {fmt(shape)})", key="slice_point",
                                  hint=f"use slice points between 1 and {dim - 1}", cls=ShapeError)
            bounds = [0, *pts, dim]
            return axis, [b - a for a, b in zip(bounds, bounds[1:])]
        if dim % n:
            raise layer.error(f"axis {axis} of size {dim} does not split into {n} equal parts "
                              f"(input {fmt(shape)})", hint="give 'slice_point', or a number of tops that "
                              f"divides {dim}", cls=ShapeError)
        return axis, [dim // n] * n

    def shapes(self, layer: Layer, in_shapes: list[Shape]) -> list[Shape]:
        x = in_shapes[0]
        axis, sizes = self.sizes(layer, x)
        return [x[:axis] + (s,) + x[axis + 1:] for s in sizes]

    def build(self, layer: Layer) -> nn.Module:
        axis, sizes = self.sizes(layer, layer.in_shapes[0])
        return CaffeSlice(axis=axis, sizes=sizes)


class CaffeSplit(nn.Module):
    def __init__(self, *, n: int):
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor):
        return x if self.n == 1 else (x,) * self.n


class Split(LayerType):
    """Every top is the bottom (gradients add up, as in Caffe)."""

    type_name = "Split"
    params = {}
    tops = (1, None)

    def shapes(self, layer: Layer, in_shapes: list[Shape]) -> list[Shape]:
        return [in_shapes[0]] * len(layer.tops)

    def build(self, layer: Layer) -> nn.Module:
        return CaffeSplit(n=len(layer.tops))
