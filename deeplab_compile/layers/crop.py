"""Caffe's Crop: cut ``bottom[0]`` to the size of ``bottom[1]`` in every axis from ``axis``
(default 2) on, starting at ``offset`` (none: 0; one value: all axes; else one per axis)."""
from __future__ import annotations

import torch
from torch import nn

from ..graph import Layer, Shape
from ..netdef.errors import ParameterError, ShapeError
from ._args import canonical_axis, fmt
from .base import LayerType, P


class CaffeCrop(nn.Module):
    def __init__(self, *, axis: int, offsets: list[int]):
        super().__init__()
        self.axis, self.offsets = axis, list(offsets)

    def extra_repr(self) -> str:
        return f"axis={self.axis}, offsets={self.offsets}"

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        for i, off in enumerate(self.offsets):
            d = self.axis + i
            x = x.narrow(d, off, ref.shape[d])
        return x


class Crop(LayerType):
    type_name = "Crop"
    params = {"axis": P("int", 2), "offset": P("ints", [], min=0)}
    bottoms = (2, 2)

    def offsets(self, layer: Layer, in_shapes: list[Shape]) -> tuple[int, list[int]]:
        x, ref = in_shapes
        if len(x) != len(ref):
            raise layer.error(f"bottom '{layer.bottoms[0]}' is {fmt(x)} and bottom '{layer.bottoms[1]}' "
                              f"is {fmt(ref)}: they need the same number of axes",
                              hint="crop to a reference blob with as many axes", cls=ShapeError)
        axis = canonical_axis(layer, layer.params["axis"], len(x))
        n = len(x) - axis
        off = layer.params["offset"]
        if len(off) not in (0, 1, n):
            raise layer.error(f"{len(off)} offsets for {n} cropped axes", key="offset",
                              hint=f"give no offset, one for all axes, or {n} (one per axis from {axis})",
                              cls=ParameterError)
        offs = [0] * n if not off else off * n if len(off) == 1 else list(off)
        for i, o in enumerate(offs):
            d = axis + i
            if o + ref[d] > x[d]:
                raise layer.error(
                    f"crop of size {ref[d]} at offset {o} does not fit in axis {d} of size {x[d]} "
                    f"(bottom '{layer.bottoms[0]}' {fmt(x)}, bottom '{layer.bottoms[1]}' {fmt(ref)})",
                    key="offset", hint="use a smaller offset or a smaller reference blob", cls=ShapeError)
        return axis, offs

    def shapes(self, layer: Layer, in_shapes: list[Shape]) -> list[Shape]:
        axis, _ = self.offsets(layer, in_shapes)
        x, ref = in_shapes
        return [tuple(x[:axis]) + tuple(ref[axis:])]

    def build(self, layer: Layer) -> nn.Module:
        axis, offs = self.offsets(layer, layer.in_shapes)
        return CaffeCrop(axis=axis, offsets=offs)
