"""ConvolutionBN: a Convolution with the BatchNorm (global statistics) and Scale after
it folded in, made by the ``fold_bn`` pass for inference (it refuses to run in training
mode when the BatchNorm would then use batch statistics, see :mod:`._units`).

The module holds the convolution's own ``weight``/``bias`` (the layer keeps the
convolution's name) and reads the BatchNorm and Scale tensors from their original
modules, which codegen keeps, so parameter names are unchanged.  The fold runs on the
weights at each call (see :mod:`._units`): the activations make one pass instead of
three.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..graph import Layer, Shape
from ._units import Folding, fold, mode_bns, unit_meta, unit_refs
from .base import LayerType
from .conv import Convolution


class FoldedConv2d(Folding):
    def __init__(self, conv: nn.Conv2d, meta: tuple, mode_bn: list[str] | None = None):
        super().__init__(mode_bn)
        self.weight = conv.weight
        self.bias = conv.bias
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.meta = meta

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[1] * self.groups}, {self.weight.shape[0]}, kernel_size={tuple(self.weight.shape[2:])}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"folded (bias, bn eps, scale, scale bias)={self.meta}")

    def forward(self, x: torch.Tensor, *tensors: torch.Tensor) -> torch.Tensor:
        self.check_eval()
        own = [self.weight] + ([self.bias] if self.bias is not None else [])
        w, b = fold(self.meta, iter(own + list(tensors)))
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)


class ConvolutionBN(LayerType):
    """Made by ``fold_bn`` only; not for netdefs (its parameters come from the pass)."""

    type_name = "ConvolutionBN"
    params = {}
    blobs = ("weight", "bias")
    _conv = Convolution()

    def _leaves(self, layer: Layer) -> dict[str, Layer]:
        return {l.name: l for l in layer.absorbed}

    def conv_layer(self, layer: Layer) -> Layer:
        return self._leaves(layer)[layer.params["unit"]["conv"]]

    def shapes(self, layer: Layer, in_shapes: list[Shape]) -> list[Shape]:
        return self._conv.shapes(self.conv_layer(layer), in_shapes)

    def build(self, layer: Layer) -> nn.Module:
        leaves = self._leaves(layer)
        unit = layer.params["unit"]
        return FoldedConv2d(self._conv.build(self.conv_layer(layer)), unit_meta(unit, leaves),
                            mode_bns(unit, leaves))

    def param_shapes(self, layer: Layer) -> dict[str, Shape]:
        return self._conv.param_shapes(self.conv_layer(layer))

    def tensor_refs(self, layer: Layer) -> list[tuple[str, str]]:
        """Tensors read from other layers' modules (after the module's own weight and bias)."""
        conv = self.conv_layer(layer).name
        return [r for r in unit_refs(layer.params["unit"], self._leaves(layer)) if r[0] != conv]

    def flops(self, layer: Layer) -> int:
        return self._conv.flops(self.conv_layer(layer))

    def geometry(self, layer: Layer):
        return self._conv.geometry(self.conv_layer(layer))
