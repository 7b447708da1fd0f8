"""Caffe's Softmax along ``axis`` (default 1, the channels)."""
from __future__ import annotations

from torch import nn

from ..graph import Layer, Shape
from ._args import canonical_axis
from .base import LayerType, P


class Softmax(LayerType):
    type_name = "Softmax"
    params = {"axis": P("int", 1),
              "engine": P("enum", "default", choices=("default", "caffe", "cudnn"), doc="accepted, ignored")}

    def shapes(self, layer: Layer, in_shapes: list[Shape]) -> list[Shape]:
        canonical_axis(layer, layer.params["axis"], len(in_shapes[0]))
        return [in_shapes[0]]

    def build(self, layer: Layer) -> nn.Module:
        return nn.Softmax(dim=canonical_axis(layer, layer.params["axis"], len(layer.in_shapes[0])))
