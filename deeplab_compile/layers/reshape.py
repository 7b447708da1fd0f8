"""Caffe's Flatten and Reshape.  Both compute the output shape from the input's shape at
run time with the same rule as the shape inference, so the batch size may change."""
from __future__ import annotations

from math import prod

import torch
from torch import nn

from ..graph import Layer, Shape
from ..netdef.errors import ParameterError, ShapeError
from ._args import canonical_axis, fmt
from .base import LayerType, P


class Flatten(LayerType):
    """Merge axes ``axis .. end_axis`` (inclusive; default 1 .. -1) into one."""

    type_name = "Flatten"
    params = {"axis": P("int", 1), "end_axis": P("int", -1)}

    def _axes(self, layer: Layer, ndim: int) -> tuple[int, int]:
        a = canonical_axis(layer, layer.params["axis"], ndim)
        e = canonical_axis(layer, layer.params["end_axis"], ndim, key="end_axis")
        if e < a:
            raise layer.error(f"end_axis {layer.params['end_axis']} comes before axis {layer.params['axis']} "
                              f"for a {ndim}-D input", key="end_axis",
                              hint="use an end_axis at or after axis", cls=ShapeError)
        return a, e

    def shapes(self, layer: Layer, in_shapes: list[Shape]) -> list[Shape]:
        x = in_shapes[0]
        a, e = self._axes(layer, len(x))
        return [x[:a] + (prod(x[a:e + 1]),) + x[e + 1:]]

    def build(self, layer: Layer) -> nn.Module:
        a, e = self._axes(layer, len(layer.in_shapes[0]))
        return nn.Flatten(a, e)


def caffe_reshape(shape: Shape, dims: list[int], axis: int = 0, num_axes: int = -1) -> Shape:
    """Caffe's Reshape rule: replace ``shape[axis : axis+num_axes]`` by ``dims``, where 0
    copies the input dim at the same position and one -1 is inferred.  Raises ValueError."""
    n = len(shape)
    start = axis if axis >= 0 else n + axis + 1
    if not 0 <= start <= n:
        raise ValueError(f"axis {axis} is out of range for a {n}-D input")
    end = n if num_axes == -1 else start + num_axes
    if end > n:
        raise ValueError(f"axis {axis} with num_axes {num_axes} goes past the {n}-D input")
    out: list[int] = []
    infer = None
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= n:
                raise ValueError(f"dim {i} is 0 (copy) but the input has no axis {start + i}")
            out.append(shape[start + i])
        elif d == -1:
            if infer is not None:
                raise ValueError("more than one -1 in the shape")
            infer = len(out)
            out.append(1)
        elif d < -1:
            raise ValueError(f"dim {d} is negative (only -1, inferred, is allowed)")
        else:
            out.append(d)
    new = list(shape[:start]) + out + list(shape[end:])
    total, known = prod(shape), prod(new)
    if infer is not None:
        if known == 0 or total % known:
            raise ValueError(f"cannot infer the -1 dim: {total} elements do not divide by {known}")
        new[start + infer] = total // known
    elif known != total:
        raise ValueError(f"the output has {known} elements but the input has {total}")
    return tuple(new)


class CaffeReshape(nn.Module):
    def __init__(self, *, dims: list[int], axis: int = 0, num_axes: int = -1):
        super().__init__()
        self.dims, self.axis, self.num_axes = list(dims), axis, num_axes

    def extra_repr(self) -> str:
        return f"dims={self.dims}, axis={self.axis}, num_axes={self.num_axes}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(caffe_reshape(tuple(x.shape), self.dims, self.axis, self.num_axes))


class Reshape(LayerType):
    type_name = "Reshape"
    params = {"shape": P("any", doc="list of dims (0 = copy, -1 = infer), or {dim: [...]}"),
              "axis": P("int", 0), "num_axes": P("int", -1, min=-1)}

    def dims(self, layer: Layer) -> list[int]:
        s = layer.params["shape"]
        if isinstance(s, dict) and set(s) <= {"dim"}:
            s = s.get("dim", [])
        if isinstance(s, int) and not isinstance(s, bool):
            s = [s]
        if not isinstance(s, list) or any(isinstance(d, bool) or not isinstance(d, int) for d in s):
            raise layer.error(f"parameter 'shape' must be a list of integers, got {s!r}", key="shape",
                              hint="write 'shape: [0, -1, 1, 1]' (0 copies a dim, -1 is inferred)",
                              cls=ParameterError)
        return s

    def check(self, layer: Layer) -> None:
        d = self.dims(layer)
        if d.count(-1) > 1 or any(x < -1 for x in d):
            raise layer.error(f"shape {d} has more than one -1 or a dim below -1", key="shape",
                              hint="use positive dims, 0 to copy and at most one -1", cls=ParameterError)

    def shapes(self, layer: Layer, in_shapes: list[Shape]) -> list[Shape]:
        try:
            return [caffe_reshape(in_shapes[0], self.dims(layer), layer.params["axis"], layer.params["num_axes"])]
        except ValueError as e:
            raise layer.error(f"cannot reshape {fmt(in_shapes[0])} to {self.dims(layer)}: {e}", key="shape",
                              hint="fix 'shape' (0 copies a dim, -1 is inferred), 'axis' or 'num_axes'",
                              cls=ShapeError) from None

    def build(self, layer: Layer) -> nn.Module:
        p = layer.params
        return CaffeReshape(dims=self.dims(layer), axis=p["axis"], num_axes=p["num_axes"])
