"""Caffe's Eltwise: SUM (with optional ``coeff``), PROD or MAX over equally shaped bottoms."""
from __future__ import annotations

import torch
from torch import nn

from ..graph import Layer, Shape
from ..netdef.errors import ParameterError, ShapeError
from ._args import fmt
from .base import LayerType, P


class CaffeEltwise(nn.Module):
    def __init__(self, *, operation: str = "sum", coeff: list[float] | None = None):
        super().__init__()
        self.operation = operation
        self.coeff = [float(c) for c in coeff] if coeff else None

    def extra_repr(self) -> str:
        return f"operation={self.operation}" + (f", coeff={self.coeff}" if self.coeff else "")

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.operation == "prod":
            y = xs[0]
            for x in xs[1:]:
                y = y * x
            return y
        if self.operation == "max":
            y = xs[0]
            for x in xs[1:]:
                y = torch.maximum(y, x)
            return y
        if self.coeff is None:
            y = xs[0]
            for x in xs[1:]:
                y = y + x
            return y
        y = xs[0] * self.coeff[0] if self.coeff[0] != 1.0 else xs[0]
        for c, x in zip(self.coeff[1:], xs[1:]):
            y = y + (x if c == 1.0 else x * c)
        return y


class Eltwise(LayerType):
    type_name = "Eltwise"
    params = {
        "operation": P("enum", "sum", choices=("sum", "prod", "max")),
        "coeff": P("floats", [], doc="one weight per bottom, SUM only"),
        "stable_prod_grad": P("bool", True, doc="accepted, ignored (autograd is exact)"),
    }
    bottoms = (2, None)

    def check(self, layer: Layer) -> None:
        p = layer.params
        if p["coeff"]:
            if p["operation"] != "sum":
                raise layer.error(f"'coeff' is only for operation SUM, not {p['operation'].upper()}",
                                  key="coeff", hint="drop 'coeff' or use operation: SUM", cls=ParameterError)
            if len(p["coeff"]) != len(layer.bottoms):
                raise layer.error(f"{len(p['coeff'])} coeff values for {len(layer.bottoms)} bottoms",
                                  key="coeff", hint="give one coefficient per bottom", cls=ParameterError)

    def shapes(self, layer: Layer, in_shapes: list[Shape]) -> list[Shape]:
        first = in_shapes[0]
        for i, s in enumerate(in_shapes[1:], 1):
            if tuple(s) != tuple(first):
                raise layer.error(
                    f"bottom '{layer.bottoms[i]}' is {fmt(s)} but bottom '{layer.bottoms[0]}' is {fmt(first)}",
                    hint="Eltwise needs equal shapes; crop or resize one of them (Crop / Interp)",
                    cls=ShapeError)
        return [first]

    def build(self, layer: Layer) -> nn.Module:
        return CaffeEltwise(operation=layer.params["operation"], coeff=layer.params["coeff"] or None)
