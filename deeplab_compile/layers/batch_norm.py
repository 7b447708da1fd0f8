"""Caffe's BatchNorm: normalization only (no affine part; a Scale layer follows).

Which statistics are used
    ``use_global_stats`` unset (Caffe's default) follows the module's mode: ``train()``
    normalizes with the batch statistics and updates the running estimates (Caffe's TRAIN
    phase), ``eval()`` uses the running estimates (Caffe's TEST phase).  ``true`` always
    uses the running estimates (DeepLab v2's ResNets); ``false`` always uses the batch
    statistics (the running estimates are then updated in training mode only).
    DeepLab v2's ``update_global_stats: true`` with ``use_global_stats: true`` normalizes
    with the running estimates and still updates them from each batch in training mode.

Running estimates, exactly as Caffe keeps them
    Caffe stores three blobs: ``mean_sum``, ``var_sum`` and a scalar ``weight``; each step
    ``weight <- maf * weight + 1``, ``mean_sum <- maf * mean_sum + mean`` and
    ``var_sum <- maf * var_sum + m/(m-1) * var`` (m = elements per channel, so the stored
    variance is unbiased), and the estimate used is ``sum / weight``.  Here the buffers
    hold the estimates themselves, like PyTorch: ``running_mean = mean_sum / weight``,
    ``running_var = var_sum / weight``, plus ``running_weight = weight``.  The update is
    then an exponential average with momentum ``1 / weight``, which tends to PyTorch's
    ``momentum = 1 - moving_average_fraction`` as training goes on.

Caffe blob mapping (for the caffemodel importer and exporter)
    ``blobs[0] = running_mean * running_weight``, ``blobs[1] = running_var * running_weight``,
    ``blobs[2] = [running_weight]``; importing: ``running_mean = blobs[0] / blobs[2]`` (0 when
    ``blobs[2]`` is 0), likewise ``running_var``, ``running_weight = blobs[2]``.
    A fresh layer starts with ``running_var = 1`` (PyTorch's convention) and weight 0, so its
    first training step sets the estimates to that batch's statistics.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..graph import Layer, Shape
from ..netdef.errors import ShapeError
from ._args import fmt
from .base import LayerType, P


class CaffeBatchNorm(nn.Module):
    def __init__(self, *, channels: int, use_global_stats: bool | None = None,
                 moving_average_fraction: float = 0.999, eps: float = 1e-5,
                 update_global_stats: bool = False):
        super().__init__()
        self.channels, self.use_global_stats = channels, use_global_stats
        self.update_global_stats = update_global_stats
        self.moving_average_fraction, self.eps = moving_average_fraction, eps
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.register_buffer("running_weight", torch.zeros(()))

    def extra_repr(self) -> str:
        return (f"{self.channels}, use_global_stats={self.use_global_stats}, "
                f"moving_average_fraction={self.moving_average_fraction}, eps={self.eps}")

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        """Normalize ``x``; ``weight``/``bias`` (a Scale layer's, passed by the lowering
        in :mod:`deeplab_compile.lower`) make it one call of BatchNorm and Scale."""
        use_global = (not self.training) if self.use_global_stats is None else self.use_global_stats
        if use_global:
            y = F.batch_norm(x, self.running_mean, self.running_var, weight, bias, training=False, eps=self.eps)
            if self.update_global_stats and self.training:
                self._update(x.detach())
            return y
        if self.training and x.dtype == self.running_mean.dtype:
            # one pass: torch's update with momentum 1/weight_new is Caffe's (module docstring),
            # with the same unbiased variance
            w_new = self.moving_average_fraction * self._weight_value() + 1.0
            y = F.batch_norm(x, self.running_mean, self.running_var, weight, bias, training=True,
                             momentum=1.0 / w_new, eps=self.eps)
            with torch.no_grad():
                self.running_weight.mul_(self.moving_average_fraction).add_(1.0)
            self._weight_seen = (self._weight_key(), w_new)
            return y
        y = F.batch_norm(x, None, None, weight, bias, training=True, eps=self.eps)
        if self.training:
            self._update(x.detach())
        return y

    def _weight_key(self) -> tuple:
        w = self.running_weight
        return w.data_ptr(), w._version, w.device

    def _weight_value(self) -> float:
        """``running_weight`` as a number, read from the tensor only when it changed
        elsewhere (a loaded state_dict): no device sync per step on a GPU."""
        seen = self.__dict__.get("_weight_seen")
        if seen is None or seen[0] != self._weight_key():
            seen = (self._weight_key(), float(self.running_weight))
            self._weight_seen = seen
        return seen[1]

    @torch.no_grad()
    def _update(self, x: torch.Tensor) -> None:
        dims = [d for d in range(x.dim()) if d != 1]
        m = x.numel() // max(x.shape[1], 1)
        mean = x.mean(dim=dims)
        var = x.var(dim=dims, correction=1 if m > 1 else 0)
        lam = self.moving_average_fraction
        w_new = lam * self.running_weight + 1.0
        keep = lam * self.running_weight / w_new
        self.running_mean.mul_(keep).add_(mean.to(self.running_mean.dtype) / w_new)
        self.running_var.mul_(keep).add_(var.to(self.running_var.dtype) / w_new)
        self.running_weight.copy_(w_new)


class BatchNorm(LayerType):
    """Caffe's BatchNorm; see the module docstring for phases and the blob mapping."""

    type_name = "BatchNorm"
    params = {
        "use_global_stats": P("bool", None, doc="unset: follow train()/eval(), as Caffe's phases"),
        "moving_average_fraction": P("float", 0.999, min=0.0, max=1.0),
        "eps": P("float", 1e-5, min=0.0),
        "update_global_stats": P("bool", False, doc="DeepLab v2: normalize with the running estimates "
                                 "and still update them from each training batch"),
        "engine": P("enum", "default", choices=("default", "caffe", "cudnn"), doc="accepted, ignored"),
    }
    # Caffe's three blobs, in order, so that prototxts with three ``param`` entries (DeepLab
    # sets lr_mult 0 on each) are accepted.  They are buffers, not Parameters: nothing of
    # BatchNorm is learned, and the entries have no effect.  Their values map to Caffe's
    # blobs as the module docstring says.
    blobs = ("running_mean", "running_var", "running_weight")

    def param_shapes(self, layer: Layer) -> dict[str, Shape]:
        return {}       # no learnable tensors

    def buffer_bytes(self, layer: Layer) -> int:
        return 4 * (2 * layer.in_shapes[0][1] + 1)     # running mean and variance, the scalar weight

    def shapes(self, layer: Layer, in_shapes: list[Shape]) -> list[Shape]:
        x = in_shapes[0]
        if len(x) < 2:
            raise layer.error(f"input is {fmt(x)}, BatchNorm needs N x C x ...",
                              hint="feed it a blob with a channel axis", cls=ShapeError)
        return [x]

    def build(self, layer: Layer) -> nn.Module:
        p = layer.params
        return CaffeBatchNorm(channels=layer.in_shapes[0][1], use_global_stats=p["use_global_stats"],
                              moving_average_fraction=p["moving_average_fraction"], eps=p["eps"],
                              update_global_stats=p["update_global_stats"])
