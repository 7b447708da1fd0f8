"""Caffe's Silence: consumes its bottoms and has no tops (its module returns ``()``)."""
from __future__ import annotations

import torch
from torch import nn

from ..graph import Layer, Shape
from .base import LayerType


class Sink(nn.Module):
    """Takes any tensors and returns an empty tuple."""

    def forward(self, *xs: torch.Tensor) -> tuple:
        return ()


class Silence(LayerType):
    type_name = "Silence"
    params = {}
    bottoms = (1, None)
    tops = (0, 0)

    def shapes(self, layer: Layer, in_shapes: list[Shape]) -> list[Shape]:
        return []

    def build(self, layer: Layer) -> nn.Module:
        return Sink()
