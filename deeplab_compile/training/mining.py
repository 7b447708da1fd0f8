"""Hard-pixel mining (TF DeepLab's ``top_k_percent_pixels``): the loss keeps only the
hardest ``k`` fraction of the pixels (TF's ``add_softmax_cross_entropy_loss_for_each_scale``).

With ``hard_example_mining_step`` the fraction anneals linearly from 1 to ``k`` over that
many iterations (:func:`hard_pixel_ratio`).  :func:`install_hard_mining` wraps the
compiled net's SoftmaxWithLoss modules in :class:`TopKSoftmaxLoss`; the loop sets each
wrapper's ``ratio`` before every iteration.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def hard_pixel_ratio(s: Any, it: int) -> float:
    """TF DeepLab's kept fraction of pixels at iteration ``it`` (``s``: the solver)."""
    k = s.top_k_percent_pixels
    if k >= 1.0:
        return 1.0
    if not s.hard_example_mining_step:
        return k
    r = min(1.0, it / s.hard_example_mining_step)
    return r * k + (1.0 - r)


class TopKSoftmaxLoss(nn.Module):
    """SoftmaxWithLoss keeping the hardest ``ratio`` of the pixels (TF DeepLab): the sum of
    the ``int(ratio * N)`` largest per-pixel losses (ignored pixels count 0) divided by how
    many of those are non-zero.  With ``ratio == 1`` it is the wrapped layer itself."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.ratio = 1.0

    def forward(self, score: torch.Tensor, label: torch.Tensor):
        if self.ratio >= 1.0:
            return self.inner(score, label)
        a = self.inner.axis
        logp = F.log_softmax(score, dim=a)
        lab = label.reshape(score.shape[:a] + (1,) + score.shape[a + 1:]).long()
        valid = torch.ones_like(lab, dtype=torch.bool)
        if self.inner.ignore_label is not None:
            valid = lab != self.inner.ignore_label
        if hasattr(self.inner, "_check_labels"):
            self.inner._check_labels(lab, valid, score.shape[a])
        nll = -logp.gather(a, torch.where(valid, lab, torch.zeros_like(lab))) * valid.to(score.dtype)
        flat = nll.reshape(-1)
        k = max(int(self.ratio * flat.numel()), 1)
        top = torch.topk(flat, k, sorted=False).values
        present = (top != 0).sum().to(top.dtype)
        loss = torch.where(present > 0, top.sum() / present.clamp_min(1), top.sum() * 0)
        if getattr(self.inner, "with_prob", False):
            return loss, logp.exp()
        return loss


def install_hard_mining(net: nn.Module) -> list[TopKSoftmaxLoss]:
    """Wrap every SoftmaxWithLoss module of a compiled net in :class:`TopKSoftmaxLoss`
    (the graph calls submodules by name, so swapping them rewires the net)."""
    from ..codegen import module_name
    out = []
    for lay in net.net.layers:
        if lay.type == "SoftmaxWithLoss":
            name = module_name(lay.name)
            wrapped = TopKSoftmaxLoss(getattr(net, name))
            setattr(net, name, wrapped)
            out.append(wrapped)
    return out
