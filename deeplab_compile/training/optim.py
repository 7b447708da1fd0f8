"""Caffe's SGD update (``SGDSolver::ComputeUpdateValue``), not ``torch.optim.SGD``'s.

With ``lr = rate * lr_mult`` and ``decay = weight_decay * decay_mult``, per parameter::

    g = grad / iter_size;  g += decay * w (L2) or decay * sign(w) (L1)
    v = momentum * v + lr * g;   w -= v

PyTorch's SGD keeps ``v = momentum * v + g`` and steps ``w -= lr * v``; the two agree only
while the rate is constant.  ``clip_gradients`` (> 0) rescales all gradients together
when their L2 norm exceeds it, before the division by ``iter_size``, as Caffe does.
The parameter groups (``lr_mult``, ``decay_mult``) come from the compiled net's
``param_groups()``; the rate of each iteration from :mod:`.lr_policy`.
"""
from __future__ import annotations

import torch


class CaffeSGD(torch.optim.Optimizer):
    """Caffe's SGD update (see the module docstring).  Each group's ``lr`` and
    ``weight_decay`` are the local rate and decay (``base * mult``); set them through
    :meth:`set_rate`.  ``iter_size`` divides the gradients; ``clip_gradients`` > 0 clips
    their global L2 norm first."""

    def __init__(self, params, *, lr: float = 0.0, momentum: float = 0.0, weight_decay: float = 0.0,
                 regularization: str = "l2", iter_size: int = 1, clip_gradients: float = -1.0):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, lr_mult=1.0, decay_mult=1.0)
        super().__init__(params, defaults)
        self.regularization, self.iter_size, self.clip_gradients = regularization, iter_size, clip_gradients

    def set_rate(self, rate: float, weight_decay: float) -> None:
        for g in self.param_groups:
            g["lr"] = rate * g["lr_mult"]
            g["weight_decay"] = weight_decay * g["decay_mult"]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if self.clip_gradients > 0 and params:
            norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params))
            if norm > self.clip_gradients:
                scale = (self.clip_gradients / norm).to(params[0].grad.dtype)
                for p in params:
                    p.grad.mul_(scale)
        for g in self.param_groups:
            lr, m, decay = g["lr"], g["momentum"], g["weight_decay"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if self.iter_size > 1:
                    d = d * (1.0 / self.iter_size)
                if decay:
                    d = d + decay * (p.sign() if self.regularization == "l1" else p)
                state = self.state[p]
                v = state.get("history")
                if v is None:
                    v = state["history"] = torch.zeros_like(p)
                v.mul_(m).add_(d, alpha=lr)
                p.sub_(v)
        return loss
