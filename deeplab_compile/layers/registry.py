"""The one list of layer types the compiler knows.

Every layer module is imported here explicitly and its types listed in ``_TYPES``;
nothing registers itself as an import side effect.
"""
from __future__ import annotations

from .activation import PReLU, ReLU, Dropout, Sigmoid, TanH
from .aspp import ASPPHead, ASPPSum, ConvSum
from .base import LayerType
from .batch_norm import BatchNorm
from .clip import Clip
from .concat import Concat
from .conv import Convolution, Deconvolution
from .conv_bn import ConvolutionBN
from .crop import Crop
from .data import ImageSegData, Input
from .dense_crf import DenseCRF
from .eltwise import Eltwise
from .inner_product import InnerProduct
from .interp import Interp
from .loss import SoftmaxWithLoss
from .mat_io import MatRead, MatWrite
from .pooling import Pooling
from .reshape import Flatten, Reshape
from .scale import Bias, Scale
from .seg_accuracy import SegAccuracy
from .silence import Silence
from .slice import Slice, Split
from .softmax import Softmax

_TYPES: list[type[LayerType]] = [
    # data
    Input, ImageSegData, MatRead,
    # vision
    Convolution, Deconvolution, Pooling, Interp,
    # learned / normalisation
    InnerProduct, BatchNorm, Scale, Bias,
    # element-wise
    ReLU, PReLU, Sigmoid, TanH, Clip, Dropout, Softmax, Eltwise,
    # blob plumbing
    Concat, Slice, Split, Crop, Flatten, Reshape, Silence,
    # losses, metrics, output
    SoftmaxWithLoss, SegAccuracy, MatWrite,
    DenseCRF,
]

# Made by the passes (deeplab_compile/passes), not written in netdefs.
_FUSED_TYPES: list[type[LayerType]] = [ConvolutionBN, ASPPSum, ConvSum, ASPPHead]

REGISTRY: dict[str, LayerType] = {cls.type_name: cls() for cls in _TYPES + _FUSED_TYPES}


def get(type_name: str) -> LayerType | None:
    """The layer type named ``type_name`` (Caffe spelling), or None."""
    return REGISTRY.get(type_name)


def known_types() -> list[str]:
    """The types a netdef may use (the fused ones are made by passes only)."""
    fused = {cls.type_name for cls in _FUSED_TYPES}
    return sorted(t for t in REGISTRY if t not in fused)
