"""Caffe's SoftmaxWithLoss: softmax over ``axis`` then the mean negative log-likelihood.

Bottoms: scores (N, C, H, W) and labels with N*H*W entries: (N, 1, H, W) or (N, H, W),
float (as Caffe blobs, truncated to integers) or integer.  Pixels whose label equals
``ignore_label`` add nothing.  The sum is divided by the ``normalization`` count:
FULL N*H*W, VALID the non-ignored pixels (Caffe's default), BATCH_SIZE N, NONE 1; Caffe
clamps the count to at least 1.  The legacy ``normalize: false`` means BATCH_SIZE and
``normalize: true`` VALID.  ``loss_weight`` belongs to the compiler, not to this schema.

Top 0 is the loss, a scalar (shape ``()``); an optional top 1 is the softmax.
The log-probability is taken with ``log_softmax`` (Caffe clamps the probability at
FLT_MIN, which matters only for scores more than ~87 apart).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DeepLabError
from ..graph import Layer, Shape
from ..netdef.errors import ShapeError
from ._args import canonical_axis, fmt
from .base import LayerType, P


class LabelValueError(DeepLabError):
    """A label that is neither a class of the scores nor ``ignore_label``."""


class CaffeSoftmaxLoss(nn.Module):
    def __init__(self, *, axis: int = 1, ignore_label: int | None = None,
                 normalization: str = "valid", with_prob: bool = False, name: str | None = None):
        super().__init__()
        self.axis, self.ignore_label = axis, ignore_label
        self.normalization, self.with_prob = normalization, with_prob
        self.layer_name = name

    def extra_repr(self) -> str:
        return f"axis={self.axis}, ignore_label={self.ignore_label}, normalization={self.normalization}"

    def _check_labels(self, lab: torch.Tensor, valid: torch.Tensor | None, classes: int) -> None:
        """Caffe only DCHECKs this (a release build reads past the scores); here a label
        out of range is one clear error instead of an index error deep in gather."""
        bad = (lab < 0) | (lab >= classes)
        if valid is not None:
            bad &= valid
        if bool(bad.any()):
            value = int(lab[bad][0])
            ignore = f" nor ignore_label {self.ignore_label}" if self.ignore_label is not None else ""
            raise LabelValueError(
                f"layer '{self.layer_name or 'loss'}': label value {value} is neither a class of the "
                f"{classes} scores (0..{classes - 1}){ignore}",
                hint="a label resized bilinearly mixes ids at borders: give the Interp that resizes it "
                     "'interpolation: nearest'; else check num_classes, ignore_label and the label files")

    def forward(self, score: torch.Tensor, label: torch.Tensor):
        a = self.axis
        logp = F.log_softmax(score, dim=a)
        lab_shape = score.shape[:a] + (1,) + score.shape[a + 1:]
        lab = label.reshape(lab_shape)
        lab = lab.long()      # Caffe's static_cast<int>: truncation
        if self.ignore_label is not None:
            valid = lab != self.ignore_label
            lab = torch.where(valid, lab, torch.zeros_like(lab))
        else:
            valid = None
        self._check_labels(lab, valid, score.shape[a])
        nll = -logp.gather(a, lab)
        if valid is not None:
            nll = nll * valid.to(nll.dtype)
        total = nll.sum()
        outer_inner = nll.numel()
        if self.normalization == "full":
            loss = total / max(outer_inner, 1)
        elif self.normalization == "valid":
            n = valid.sum().to(total.dtype) if valid is not None else total.new_tensor(float(outer_inner))
            loss = total / n.clamp_min(1.0)
        elif self.normalization == "batch_size":
            loss = total / max(int(score.shape[:a].numel()), 1)
        else:
            loss = total
        if self.with_prob:
            return loss, logp.exp()
        return loss


class SoftmaxWithLoss(LayerType):
    type_name = "SoftmaxWithLoss"
    params = {
        "axis": P("int", 1),
        "ignore_label": P("int", None),
        "normalization": P("enum", "valid", choices=("full", "valid", "batch_size", "none")),
        "normalize": P("bool", None, doc="legacy: true = VALID, false = BATCH_SIZE"),
        "engine": P("enum", "default", choices=("default", "caffe", "cudnn"), doc="accepted, ignored"),
    }
    bottoms = (2, 2)
    tops = (1, 2)
    is_loss = True

    def mode(self, layer: Layer) -> str:
        p = layer.params
        if p["normalize"] is not None:
            return "valid" if p["normalize"] else "batch_size"
        return p["normalization"]

    def shapes(self, layer: Layer, in_shapes: list[Shape]) -> list[Shape]:
        score, label = in_shapes
        a = canonical_axis(layer, layer.params["axis"], len(score))
        outer, inner = score[:a], score[a + 1:]
        ok = tuple(label) in (tuple(outer) + (1,) + tuple(inner), tuple(outer) + tuple(inner))
        if not ok:
            raise layer.error(
                f"label '{layer.bottoms[1]}' is {fmt(label)} but the scores '{layer.bottoms[0]}' are "
                f"{fmt(score)}: the label needs one value per score pixel "
                f"({fmt(tuple(outer) + (1,) + tuple(inner))})",
                hint="resize the label to the score size (e.g. Interp with shrink_factor) or the "
                     "scores to the label size", cls=ShapeError)
        return [()] + ([tuple(score)] if len(layer.tops) > 1 else [])

    def build(self, layer: Layer) -> nn.Module:
        return CaffeSoftmaxLoss(axis=canonical_axis(layer, layer.params["axis"], len(layer.in_shapes[0])),
                                ignore_label=layer.params["ignore_label"], normalization=self.mode(layer),
                                with_prob=len(layer.tops) > 1, name=layer.name)
