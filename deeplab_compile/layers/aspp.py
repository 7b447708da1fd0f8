"""Fused ASPP layer types, made by the ``fuse_aspp`` pass (not written in netdefs).

``ASPPSum``   DeepLab v2's ASPP: parallel 3x3 convolutions at several rates from one bottom,
              summed (Eltwise SUM) -> ``deeplab::aspp_sum`` (or the library path where that
              measured faster, see :mod:`deeplab_compile.ops.dispatch`).  Trains too.
``ConvSum``   1x1 convolutions of several bottoms summed (VGG16 ASPP-L's fc8_1..fc8_4 ->
              fc8): the products accumulate into one output, no per-branch outputs.  Trains.
``ASPPHead``  DeepLab v3's head: 1x1 and atrous 3x3 branches (+BN+ReLU), image pooling,
              concat, 1x1 projection (+BN+ReLU) -> ``deeplab::aspp_v3_head``.  Inference only.

A fused module that folds a BatchNorm whose ``use_global_stats`` is unset refuses to
run in training mode (the unfused net would use batch statistics there; ``_units.py``).

Every fused layer keeps the modules of the layers it absorbed under their own names and
reads their tensors (``Layer.absorbed``; codegen passes them as ``get_attr`` inputs), so a
fused net has exactly the parameter names and state_dict of the unfused one.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..graph import Layer, Shape
from ._units import Folding, fold, mode_bns, unit_meta, unit_refs
from .base import LayerType
from .conv import Convolution


def _leaves(layer: Layer) -> dict[str, Layer]:
    return {l.name: l for l in layer.absorbed}


_CONV = Convolution()


def _unit_flops(unit: dict, leaves: dict[str, Layer]) -> int:
    return _CONV.flops(leaves[unit["conv"]])


class _Fused(LayerType):
    params = {}

    def shapes(self, layer: Layer, in_shapes: list[Shape]) -> list[Shape]:
        return list(layer.out_shapes)          # set by the pass from the layers it replaced

    def units(self, layer: Layer) -> list[dict]:
        raise NotImplementedError

    def tensor_refs(self, layer: Layer) -> list[tuple[str, str]]:
        leaves = _leaves(layer)
        return [r for u in self.units(layer) for r in unit_refs(u, leaves)]

    def metas(self, layer: Layer) -> list[tuple]:
        leaves = _leaves(layer)
        return [unit_meta(u, leaves) for u in self.units(layer)]

    def mode_bns(self, layer: Layer) -> list[str]:
        """Folded BatchNorms that follow the module's mode: the module is then eval only."""
        leaves = _leaves(layer)
        return [n for u in self.units(layer) for n in mode_bns(u, leaves)]

    def flops(self, layer: Layer) -> int:
        leaves = _leaves(layer)
        return sum(_unit_flops(u, leaves) for u in self.units(layer))


# ---------------------------------------------------------------------------- v2

class ASPPSumModule(Folding):
    def __init__(self, *, rates: list[int], metas: list[tuple], mode_bn: list[str] | None = None):
        super().__init__(mode_bn)
        self.rates, self.metas = list(rates), list(metas)

    def extra_repr(self) -> str:
        return f"rates={self.rates}"

    def forward(self, x: torch.Tensor, *tensors: torch.Tensor) -> torch.Tensor:
        from ..ops import aspp_sum_auto
        self.check_eval()
        it = iter(tensors)
        wb = [fold(m, it) for m in self.metas]
        ws = [w for w, _ in wb]
        bs = [b for _, b in wb]
        if any(b is None for b in bs):
            bs = [b if b is not None else ws[0].new_zeros(ws[0].shape[0]) for b in bs] if any(
                b is not None for b in bs) else []
        return aspp_sum_auto(x, ws, bs, self.rates)


class ASPPSum(_Fused):
    """``params``: ``branches`` (unit per rate), ``rates``."""

    type_name = "ASPPSum"

    def units(self, layer: Layer) -> list[dict]:
        return list(layer.params["branches"])

    def build(self, layer: Layer) -> nn.Module:
        return ASPPSumModule(rates=layer.params["rates"], metas=self.metas(layer), mode_bn=self.mode_bns(layer))

    def geometry(self, layer: Layer):
        return 2 * max(layer.params["rates"]) + 1, 1


class ConvSumModule(Folding):
    def __init__(self, *, metas: list[tuple], mode_bn: list[str] | None = None):
        super().__init__(mode_bn)
        self.metas = list(metas)

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        self.check_eval()
        xs, it = args[:len(self.metas)], iter(args[len(self.metas):])
        y = None
        bias = None
        for x, m in zip(xs, self.metas):
            w, b = fold(m, it)
            w2 = w.reshape(w.shape[0], w.shape[1])
            xf = x.flatten(2)
            if y is None:
                y = torch.matmul(w2, xf)
            else:
                y = torch.baddbmm(y, w2.expand(x.shape[0], *w2.shape), xf)
            if b is not None:
                bias = b if bias is None else bias + b
        if bias is not None:
            y = y + bias.view(1, -1, 1)
        x0 = xs[0]
        return y.view(x0.shape[0], y.shape[1], x0.shape[2], x0.shape[3])


class ConvSum(_Fused):
    """``params``: ``branches`` (one 1x1 unit per bottom, in bottom order)."""

    type_name = "ConvSum"
    bottoms = (2, None)

    def units(self, layer: Layer) -> list[dict]:
        return list(layer.params["branches"])

    def build(self, layer: Layer) -> nn.Module:
        return ConvSumModule(metas=self.metas(layer), mode_bn=self.mode_bns(layer))


# ---------------------------------------------------------------------------- v3

class ASPPHeadModule(Folding):
    def __init__(self, *, kinds: list[str], rates: list[int], channels: list[int], metas: list[tuple],
                 relu_out: bool, mode_bn: list[str] | None = None):
        super().__init__(mode_bn)
        self.kinds, self.rates, self.channels = list(kinds), list(rates), list(channels)
        self.metas, self.relu_out = list(metas), relu_out

    def extra_repr(self) -> str:
        return f"branches={self.kinds}, rates={self.rates}, relu_out={self.relu_out}"

    def forward(self, x: torch.Tensor, *tensors: torch.Tensor) -> torch.Tensor:
        from ..ops import aspp_v3_head_auto
        self.check_eval()
        return aspp_v3_head_auto(x, *self.head_args(tensors), self.relu_out)

    def head_args(self, tensors) -> tuple:
        """The folded tensors as ``deeplab::aspp_v3_head`` takes them: weights, biases, rates
        and projection slices of the convolution branches, then the pooling branch's weight,
        bias and projection slice (None without one), then the projection's bias."""
        it = iter(tensors)
        wbs = [fold(m, it) for m in self.metas]          # branches in concat order, then the projection
        pw, pb = wbs[-1]
        pw = pw.reshape(pw.shape[0], pw.shape[1])
        if pb is None:
            pb = pw.new_zeros(pw.shape[0])
        slices = torch.split(pw, self.channels, dim=1)
        ws, bs, rates, projs = [], [], [], []
        pool = (None, None, None)
        for kind, rate, (w, b), s in zip(self.kinds, self.rates, wbs[:-1], slices):
            b = b if b is not None else w.new_zeros(w.shape[0])
            if kind == "pool":
                pool = (w.reshape(w.shape[0], w.shape[1]), b, s)
            else:
                ws.append(w), bs.append(b), rates.append(rate), projs.append(s)
        return ws, bs, rates, projs, pool[0], pool[1], pool[2], pb


class ASPPHead(_Fused):
    """``params``: ``branches`` (units in concat order), ``kinds`` ("conv"/"pool" each),
    ``rates``, ``channels`` (each branch's output channels), ``proj`` (unit), ``relu_out``."""

    type_name = "ASPPHead"

    def units(self, layer: Layer) -> list[dict]:
        return list(layer.params["branches"]) + [layer.params["proj"]]

    def build(self, layer: Layer) -> nn.Module:
        p = layer.params
        return ASPPHeadModule(kinds=p["kinds"], rates=p["rates"], channels=p["channels"], metas=self.metas(layer),
                              relu_out=p["relu_out"], mode_bn=self.mode_bns(layer))

    def geometry(self, layer: Layer) -> Any:
        k = max((2 * r + 1) if kind == "conv" else 1 for kind, r in zip(layer.params["kinds"], layer.params["rates"]))
        return k, 1
