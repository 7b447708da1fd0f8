"""DeepLab's MatWrite and MatRead (MATLAB .mat feature files).

Only the schema and the shapes live here; the runtime does the file I/O.  MatWrite's
module is a placeholder that returns ``()`` (it has no tops); the test runner writes
``<prefix><image id>_blob_0.mat`` for the bottom, one file per image named from the
``source`` list (``strip`` characters cut off the end of each id), every ``period``
calls.  MatRead is a data layer (its top is a graph input of shape
``(batch_size, *shape)``); its ``build`` returns None.
"""
from __future__ import annotations

import torch
from torch import nn

from ..graph import Layer, Shape
from ..netdef.errors import ParameterError
from .base import LayerType, P, positive_size
from .silence import Sink


class MatWrite(LayerType):
    type_name = "MatWrite"
    params = {"prefix": P("str", doc="output path prefix, e.g. features/val/fc8/"),
              "source": P("str", "", doc="image list; ids name the files"),
              "strip": P("int", 0, min=0, doc="characters cut off the end of each id"),
              "period": P("int", 1, min=1, doc="write every N calls")}
    bottoms = (1, None)
    tops = (0, 0)

    def shapes(self, layer: Layer, in_shapes: list[Shape]) -> list[Shape]:
        return []

    def build(self, layer: Layer) -> nn.Module:
        return Sink()


class MatRead(LayerType):
    type_name = "MatRead"
    params = {"prefix": P("str", doc="input path prefix"),
              "source": P("str", doc="image list; ids name the files"),
              "strip": P("int", 0, min=0),
              "batch_size": P("int", 1, min=1),
              "shape": P("ints", min=1, doc="C, H, W of one item (the files are read at run time)")}
    bottoms = (0, 0)
    tops = (1, 1)
    is_data = True

    def check(self, layer: Layer) -> None:
        if len(layer.params["shape"]) != 3:
            raise layer.error(f"parameter 'shape' has {len(layer.params['shape'])} values", key="shape",
                              hint="give C, H, W, e.g. 'shape: [21, 513, 513]'", cls=ParameterError)

    def shapes(self, layer: Layer, in_shapes: list[Shape]) -> list[Shape]:
        return [positive_size(layer, (layer.params["batch_size"], *layer.params["shape"]))]

    def build(self, layer: Layer) -> None:
        return None
