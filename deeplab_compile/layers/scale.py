"""Caffe's Scale and Bias: multiply / add a tensor broadcast over ``bottom[0]``.

One bottom: the scale (bias) is learned, with shape ``bottom.shape[axis : axis+num_axes]``
(``num_axes: -1``: all axes from ``axis``; 0: a scalar).  Two bottoms: ``bottom[1]`` is the
scale (bias); its shape must equal ``bottom[0].shape[axis : axis+ndim(bottom[1])]``.
Scale's ``bias_term`` adds a learned bias of the scale's shape in both forms.

The blobs are ``("weight", "bias")`` for Scale.  In the two-bottom form the module has
``weight = None`` and the learned bias is Caffe's blob 0; a ``param:`` list for that form
should therefore name the bias as its second entry.
"""
from __future__ import annotations

import torch
from torch import nn

from ..graph import Layer, Shape
from ..netdef.errors import ParameterError, ShapeError
from ._args import canonical_axis, fmt
from .base import LayerType, P
from .fillers import apply_filler


class CaffeScale(nn.Module):
    """``y = x * scale (+ bias)``, the scale from ``bottom[1]`` or learned."""

    def __init__(self, *, axis: int, shape: tuple[int, ...], learned_scale: bool, bias: bool,
                 is_bias_layer: bool = False):
        super().__init__()
        self.axis, self.shape, self.is_bias_layer = axis, tuple(shape), is_bias_layer
        self.weight = nn.Parameter(torch.ones(shape)) if learned_scale and not is_bias_layer else None
        self.bias = nn.Parameter(torch.zeros(shape)) if bias else None

    def _bcast(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        trailing = ndim - self.axis - t.dim()
        return t.reshape(tuple(t.shape) + (1,) * trailing)

    def forward(self, x: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        if self.is_bias_layer:
            b = other if other is not None else self.bias
            return x + self._bcast(b, x.dim())
        s = other if other is not None else self.weight
        if self.bias is not None:
            # one pass over x instead of a multiply and then an add
            return torch.addcmul(self._bcast(self.bias, x.dim()), x, self._bcast(s, x.dim()))
        return x * self._bcast(s, x.dim())


class _ScaleLike(LayerType):
    bottoms = (1, 2)
    _bias_layer = False

    def param_shape(self, layer: Layer, in_shapes: list[Shape]) -> tuple[int, Shape]:
        x = in_shapes[0]
        p = layer.params
        if len(in_shapes) == 2:
            s = in_shapes[1]
            axis = 0 if not s else canonical_axis(layer, p["axis"], len(x))
            if tuple(x[axis:axis + len(s)]) != tuple(s):
                raise layer.error(
                    f"bottom '{layer.bottoms[1]}' is {fmt(s)} but bottom '{layer.bottoms[0]}' is "
                    f"{fmt(x)}: from axis {axis} it has {fmt(x[axis:axis + len(s)])}",
                    hint=f"the second bottom must match the first's dims from axis {p['axis']} on; "
                         "change 'axis' or the blob", cls=ShapeError)
            return axis, tuple(s)
        na = p["num_axes"]
        if na == 0:
            return 0, ()
        axis = canonical_axis(layer, p["axis"], len(x))
        end = len(x) if na == -1 else axis + na
        if end > len(x):
            raise layer.error(f"axis {axis} + num_axes {na} goes past the {len(x)}-D input {fmt(x)}",
                              key="num_axes", hint="use a smaller num_axes, or -1 for all remaining axes",
                              cls=ShapeError)
        return axis, tuple(x[axis:end])

    def check(self, layer: Layer) -> None:
        if layer.params["num_axes"] < -1:
            raise layer.error(f"parameter 'num_axes' must be >= -1, got {layer.params['num_axes']}",
                              key="num_axes", hint="use -1 (all axes from 'axis'), 0 (scalar) or a count",
                              cls=ParameterError)

    def shapes(self, layer: Layer, in_shapes: list[Shape]) -> list[Shape]:
        self.param_shape(layer, in_shapes)
        return [in_shapes[0]]


class Scale(_ScaleLike):
    type_name = "Scale"
    params = {
        "axis": P("int", 1),
        "num_axes": P("int", 1),
        "filler": P("filler", {"type": "constant", "value": 1.0}, doc="Caffe's default: constant 1"),
        "bias_term": P("bool", False),
        "bias_filler": P("filler", {"type": "constant", "value": 0.0}),
    }
    blobs = ("weight", "bias")

    def param_shapes(self, layer: Layer) -> dict[str, Shape]:
        _, shape = self.param_shape(layer, layer.in_shapes)
        out = {"weight": shape} if len(layer.in_shapes) == 1 else {}
        return {**out, **({"bias": shape} if layer.params["bias_term"] else {})}

    def build(self, layer: Layer) -> nn.Module:
        axis, shape = self.param_shape(layer, layer.in_shapes)
        mod = CaffeScale(axis=axis, shape=shape, learned_scale=len(layer.in_shapes) == 1,
                         bias=layer.params["bias_term"])
        if mod.weight is not None:
            apply_filler(mod.weight, layer.params["filler"])
        if mod.bias is not None:
            apply_filler(mod.bias, layer.params["bias_filler"])
        return mod


class Bias(_ScaleLike):
    type_name = "Bias"
    params = {
        "axis": P("int", 1),
        "num_axes": P("int", 1),
        "filler": P("filler", {"type": "constant", "value": 0.0}, doc="Caffe's default: constant 0"),
    }
    blobs = ("bias",)

    def param_shapes(self, layer: Layer) -> dict[str, Shape]:
        _, shape = self.param_shape(layer, layer.in_shapes)
        return {"bias": shape} if len(layer.in_shapes) == 1 else {}

    def build(self, layer: Layer) -> nn.Module:
        axis, shape = self.param_shape(layer, layer.in_shapes)
        one = len(layer.in_shapes) == 1
        mod = CaffeScale(axis=axis, shape=shape, learned_scale=False, bias=one, is_bias_layer=True)
        if mod.bias is not None:
            apply_filler(mod.bias, layer.params["filler"])
        return mod
