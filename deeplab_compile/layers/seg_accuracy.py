"""DeepLab's SegAccuracy: pixel accuracy, mean class recall and mean IoU of a batch.

Bottoms: scores (N, C, H, W) and labels (N, 1, H, W).  The prediction is the arg-max over
C; pixels whose label is in ``ignore_label`` (a list) are skipped.  The output is
(1, 1, 1, 3), computed from the confusion matrix M (rows: ground truth) as DeepLab's
``ConfusionMatrix`` does:

* ``[0]`` accuracy: ``trace(M) / sum(M)`` (0 for an empty matrix);
* ``[1]`` mean recall: ``M[c,c] / rowsum(c)`` averaged over the classes present in the
  ground truth (``rowsum > 0``), 0 if there are none;
* ``[2]`` mean IoU: ``M[c,c] / (rowsum + colsum - M[c,c])`` averaged over all C classes,
  where a class absent from both prediction and ground truth counts as 1 (DeepLab's
  ``avgJaccard``: intersection == union gives 1).

With ``reset: true`` (the default) each call sees only its batch; with ``reset: false``
the confusion matrix (buffer ``confusion``) accumulates over calls, as DeepLab's does.
Where DeepLab aborts on a label outside [0, C) that is not ignored, such pixels are left
out here.  Ties in the arg-max go to the lowest class index (DeepLab: the highest).
"""
from __future__ import annotations

import torch
from torch import nn

from ..graph import Layer, Shape
from ..netdef.errors import ShapeError
from ._args import fmt
from .base import LayerType, P


def seg_metrics(conf: torch.Tensor) -> torch.Tensor:
    """[accuracy, mean recall, mean IoU] of a C x C confusion matrix (rows: ground truth)."""
    conf = conf.to(torch.float64)
    diag = conf.diagonal()
    rows, cols, total = conf.sum(1), conf.sum(0), conf.sum()
    acc = torch.where(total > 0, diag.sum() / total.clamp_min(1), total.new_zeros(()))
    present = rows > 0
    recall = torch.where(present, diag / rows.clamp_min(1), torch.zeros_like(diag))
    n_present = present.sum()
    mean_recall = torch.where(n_present > 0, recall.sum() / n_present.clamp_min(1), total.new_zeros(()))
    union = rows + cols - diag
    iou = torch.where(union == diag, torch.ones_like(diag), diag / union.clamp_min(1))
    return torch.stack([acc, mean_recall, iou.mean()])


class CaffeSegAccuracy(nn.Module):
    def __init__(self, *, num_classes: int, ignore_label: list[int] = (), reset: bool = True):
        super().__init__()
        self.num_classes, self.ignore_label, self.reset = num_classes, list(ignore_label), reset
        self.register_buffer("confusion", torch.zeros(num_classes, num_classes, dtype=torch.float64),
                             persistent=False)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, ignore_label={self.ignore_label}, reset={self.reset}"

    @torch.no_grad()
    def forward(self, score: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        c = self.num_classes
        pred = score.argmax(dim=1).reshape(-1)
        gt = label.reshape(-1)
        gt = gt.long() if gt.is_floating_point() else gt.to(torch.long)
        keep = (gt >= 0) & (gt < c)
        for ig in self.ignore_label:
            keep = keep & (gt != ig)
        idx = torch.where(keep, gt * c + pred, torch.zeros_like(gt))
        conf = torch.zeros(c * c, dtype=torch.float64, device=score.device)
        conf = conf.scatter_add_(0, idx, keep.to(torch.float64)).view(c, c)
        if not self.reset:
            self.confusion.add_(conf)
            conf = self.confusion
        return seg_metrics(conf).to(score.dtype).reshape(1, 1, 1, 3)


class SegAccuracy(LayerType):
    type_name = "SegAccuracy"
    params = {"ignore_label": P("ints", [], doc="labels to skip, e.g. [255]"),
              "reset": P("bool", True, doc="false: accumulate the confusion matrix over calls"),
              # DeepLab (v1 and v2) reads it and reports all three values anyway: its
              # switch on the metric is commented out.  Accepted, no effect.
              "metric": P("enum", "pixelaccuracy", choices=("pixelaccuracy", "classaccuracy", "pixeliou"),
                          doc="accepted, no effect: all three are output, as in DeepLab")}
    bottoms = (2, 2)
    is_metric = True

    def shapes(self, layer: Layer, in_shapes: list[Shape]) -> list[Shape]:
        score, label = in_shapes
        if len(score) != 4 or tuple(label) != (score[0], 1, score[2], score[3]):
            raise layer.error(
                f"label '{layer.bottoms[1]}' is {fmt(label)} but the scores '{layer.bottoms[0]}' are "
                f"{fmt(score)}; the label must be N x 1 x H x W of the scores",
                hint="resize the label or the scores (Interp) so that H and W agree", cls=ShapeError)
        return [(1, 1, 1, 3)]

    def buffer_bytes(self, layer: Layer) -> int:
        return 8 * layer.in_shapes[0][1] ** 2           # the float64 confusion matrix

    def build(self, layer: Layer) -> nn.Module:
        return CaffeSegAccuracy(num_classes=layer.in_shapes[0][1], ignore_label=layer.params["ignore_label"],
                                reset=layer.params["reset"])
