"""Learning-rate policies: Caffe's ``SGDSolver::GetLearningRate`` and TF DeepLab's warm-up.

Rate at iteration ``it`` (0-based) from the solver's fields:

=========  ===========================================================
fixed      ``base_lr``
step       ``base_lr * gamma ^ floor(it / stepsize)``
multistep  ``base_lr * gamma ^ (number of stepvalue <= it)``
exp        ``base_lr * gamma ^ it``
inv        ``base_lr * (1 + gamma * it) ^ (-power)``
poly       ``base_lr * (1 - it / max_iter) ^ power``
sigmoid    ``base_lr / (1 + exp(-gamma * (it - stepsize)))``
=========  ===========================================================

``warmup_iter`` / ``warmup_lr`` / ``warmup_method``: for ``it < warmup_iter`` the rate is
``warmup_lr`` (``constant``, TF's ``slow_start_step`` / ``slow_start_learning_rate``) or
goes linearly from ``warmup_lr`` to the policy's rate (``linear``).  The policy itself
keeps counting from 0.

The functions read the fields of a :class:`~deeplab_compile.training.solver.Solver`
(any object with them will do); the solver's schema takes its ``lr_policy`` choices
from :data:`POLICIES`.
"""
from __future__ import annotations

import math
from typing import Any

POLICIES = ("fixed", "step", "multistep", "exp", "inv", "poly", "sigmoid")


def policy_rate(s: Any, it: int) -> float:
    """Caffe's rate for iteration ``it`` (no warm-up)."""
    b, p = s.base_lr, s.lr_policy
    if p == "fixed":
        return b
    if p == "step":
        return b * math.pow(s.gamma, it // s.stepsize)
    if p == "multistep":
        return b * math.pow(s.gamma, sum(1 for v in s.stepvalue if it >= v))
    if p == "exp":
        return b * math.pow(s.gamma, it)
    if p == "inv":
        return b * math.pow(1.0 + s.gamma * it, -s.power)
    if p == "poly":
        return b * math.pow(max(1.0 - it / s.max_iter, 0.0), s.power)
    if p == "sigmoid":
        return b * (1.0 / (1.0 + math.exp(-s.gamma * (it - s.stepsize))))
    raise ValueError(p)


def learning_rate(s: Any, it: int) -> float:
    """The rate for iteration ``it``, warm-up included."""
    rate = policy_rate(s, it)
    if it < s.warmup_iter:
        if s.warmup_method == "constant":
            return s.warmup_lr
        return s.warmup_lr + (rate - s.warmup_lr) * it / s.warmup_iter
    return rate
