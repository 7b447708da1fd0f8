"""Element-wise activations: ReLU, PReLU, Sigmoid, TanH, Dropout.  Shapes pass through."""
from __future__ import annotations

import torch
from torch import nn

from ..graph import Layer, Shape
from ..netdef.errors import ParameterError, ShapeError
from .base import LayerType, P
from .fillers import apply_filler


class _Elementwise(LayerType):
    def shapes(self, layer: Layer, in_shapes: list[Shape]) -> list[Shape]:
        return [in_shapes[0]]


class ReLU(_Elementwise):
    """``max(0, x) + negative_slope * min(0, x)``."""

    type_name = "ReLU"
    params = {"negative_slope": P("float", 0.0),
              "engine": P("enum", "default", choices=("default", "caffe", "cudnn"), doc="accepted, ignored")}

    def build(self, layer: Layer) -> nn.Module:
        slope = layer.params["negative_slope"]
        return nn.ReLU() if slope == 0 else nn.LeakyReLU(slope)


class PReLU(_Elementwise):
    """Learned slope per channel (axis 1), or one shared slope; Caffe's filler default 0.25."""

    type_name = "PReLU"
    params = {"channel_shared": P("bool", False),
              "filler": P("filler", {"type": "constant", "value": 0.25})}
    blobs = ("weight",)

    def shapes(self, layer: Layer, in_shapes: list[Shape]) -> list[Shape]:
        if len(in_shapes[0]) < 2 and not layer.params["channel_shared"]:
            raise layer.error(f"input has {len(in_shapes[0])} axes, a per-channel PReLU needs a channel axis",
                              hint="use channel_shared: true", cls=ShapeError)
        return [in_shapes[0]]

    def param_shapes(self, layer: Layer) -> dict[str, Shape]:
        return {"weight": (1 if layer.params["channel_shared"] else layer.in_shapes[0][1],)}

    def build(self, layer: Layer) -> nn.Module:
        n = 1 if layer.params["channel_shared"] else layer.in_shapes[0][1]
        mod = nn.PReLU(num_parameters=n)
        apply_filler(mod.weight, layer.params["filler"])
        return mod


class Sigmoid(_Elementwise):
    type_name = "Sigmoid"
    params = {"engine": P("enum", "default", choices=("default", "caffe", "cudnn"), doc="accepted, ignored")}

    def build(self, layer: Layer) -> nn.Module:
        return nn.Sigmoid()


class TanH(_Elementwise):
    type_name = "TanH"
    params = {"engine": P("enum", "default", choices=("default", "caffe", "cudnn"), doc="accepted, ignored")}

    def build(self, layer: Layer) -> nn.Module:
        return nn.Tanh()


class CaffeDropout(nn.Module):
    """Dropout; with ``scale_train`` (Caffe's default) kept units are scaled by
    ``1/(1-p)`` in training and the layer is the identity in eval; without it units are not
    scaled in training and the eval output is multiplied by ``1-p``."""

    def __init__(self, *, p: float = 0.5, scale_train: bool = True):
        super().__init__()
        self.p, self.scale_train = p, scale_train

    def extra_repr(self) -> str:
        return f"p={self.p}, scale_train={self.scale_train}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale_train:
            return nn.functional.dropout(x, self.p, self.training)
        if self.training:
            return nn.functional.dropout(x, self.p, True) * (1.0 - self.p)
        return x * (1.0 - self.p)


class Dropout(_Elementwise):
    type_name = "Dropout"
    params = {"dropout_ratio": P("float", 0.5, min=0.0),
              "scale_train": P("bool", True)}

    def check(self, layer: Layer) -> None:
        r = layer.params["dropout_ratio"]
        if r >= 1.0:
            raise layer.error(f"parameter 'dropout_ratio' must be < 1, got {r:g}", key="dropout_ratio",
                              hint="use a ratio in [0, 1), e.g. 0.5", cls=ParameterError)

    def build(self, layer: Layer) -> nn.Module:
        return CaffeDropout(p=layer.params["dropout_ratio"], scale_train=layer.params["scale_train"])
