"""Caffe's Clip: ``min(max(x, min), max)`` element-wise; shapes pass through.

MobileNetV2 uses ReLU6, which is ``Clip`` with ``min: 0, max: 6`` (Caffe has no ReLU6
layer; its ``ClipLayer`` has exactly these two parameters).  The module is
``nn.ReLU6`` for that case, so exported graphs and fusers see the usual op, and
``nn.Hardtanh`` otherwise.
"""
from __future__ import annotations

from torch import nn

from ..graph import Layer, Shape
from ..netdef.errors import ParameterError
from .base import LayerType, P


class Clip(LayerType):
    type_name = "Clip"
    params = {"min": P("float", doc="lower bound"), "max": P("float", doc="upper bound")}

    def check(self, layer: Layer) -> None:
        lo, hi = layer.params["min"], layer.params["max"]
        if lo > hi:
            raise layer.error(f"min {lo:g} is greater than max {hi:g}", key="min",
                              hint="swap them, e.g. 'min: 0, max: 6' for ReLU6", cls=ParameterError)

    def shapes(self, layer: Layer, in_shapes: list[Shape]) -> list[Shape]:
        return [in_shapes[0]]

    def build(self, layer: Layer) -> nn.Module:
        lo, hi = layer.params["min"], layer.params["max"]
        if lo == 0.0 and hi == 6.0:
            return nn.ReLU6()
        return nn.Hardtanh(lo, hi)
