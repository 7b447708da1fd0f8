"""Convolution units of fused layers: a Convolution, optionally followed by BatchNorm
(global statistics) and Scale, described by layer names.

A fused module reads a unit's tensors from the original layers' modules (which codegen
keeps under their own names), so the unit's effective weight and bias are computed from
the very parameters and buffers an unfused net has:

    w' = w * g / sqrt(var + eps)          b' = (b - mean) * g / sqrt(var + eps) + beta

(``g``/``beta`` from Scale, 1/0 without it).  The fold costs one pass over the weights,
not over the activations, and keeps state_dicts interchangeable with the unfused net.

The fold uses the running statistics.  A BatchNorm with ``use_global_stats`` unset uses
them only in eval mode (batch statistics in training mode), so a fused module holding
such a unit refuses to run in training mode (:func:`check_eval`) instead of silently
computing something the unfused net would not.
"""
from __future__ import annotations

from typing import Iterator, Mapping

import torch

from ..graph import Layer

Unit = Mapping[str, str | None]        # {"conv": name, "bn": name | None, "scale": name | None}


def unit_of(layer: Layer) -> tuple[dict, list[Layer]]:
    """The unit a Convolution or ConvolutionBN layer computes, and its leaf layers."""
    if layer.type == "ConvolutionBN":
        return dict(layer.params["unit"]), list(layer.absorbed)
    return {"conv": layer.name, "bn": None, "scale": None}, [layer]


def unit_refs(unit: Unit, leaves: Mapping[str, Layer]) -> list[tuple[str, str]]:
    """``(layer name, attribute)`` of every tensor the unit reads, in :func:`fold` order."""
    conv = leaves[unit["conv"]]
    refs = [(conv.name, "weight")] + ([(conv.name, "bias")] if conv.params["bias_term"] else [])
    if unit.get("bn"):
        refs += [(unit["bn"], "running_mean"), (unit["bn"], "running_var")]
    if unit.get("scale"):
        sc = leaves[unit["scale"]]
        refs.append((sc.name, "weight"))
        if sc.params["bias_term"]:
            refs.append((sc.name, "bias"))
    return refs


def unit_meta(unit: Unit, leaves: Mapping[str, Layer]) -> tuple[bool, float | None, bool, bool]:
    """Static facts :func:`fold` needs: (conv has bias, BN eps or None, has Scale, Scale has bias)."""
    conv = leaves[unit["conv"]]
    eps = leaves[unit["bn"]].params["eps"] if unit.get("bn") else None
    sc = leaves[unit["scale"]] if unit.get("scale") else None
    return bool(conv.params["bias_term"]), eps, sc is not None, bool(sc is not None and sc.params["bias_term"])


def mode_bns(unit: Unit, leaves: Mapping[str, Layer]) -> list[str]:
    """The unit's BatchNorm if it follows the module's mode (``use_global_stats`` unset)."""
    bn = unit.get("bn")
    return [bn] if bn and leaves[bn].params.get("use_global_stats") is None else []


class Folding(torch.nn.Module):
    """A module with BatchNorms folded into it.  ``mode_bn`` names those that follow the
    module's mode (``use_global_stats`` unset): such a module runs in eval mode only."""

    def __init__(self, mode_bn: list[str] | None = None):
        super().__init__()
        self.mode_bn = list(mode_bn or [])

    def check_eval(self) -> None:
        """Raise in training mode if a folded BatchNorm would then use batch statistics
        (see the module docstring)."""
        if self.training and self.mode_bn:
            raise RuntimeError(
                f"{type(self).__name__} folds the running statistics of BatchNorm '{self.mode_bn[0]}', which "
                "uses batch statistics in training mode; fused nets are for inference: call .eval(), or "
                "compile with fuse=False (or phase='train') to train")


def fold(meta: tuple, tensors: Iterator[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The unit's effective (weight, bias), consuming its tensors from ``tensors``."""
    has_bias, eps, has_scale, has_scale_bias = meta
    w = next(tensors)
    b = next(tensors) if has_bias else None
    if eps is not None:
        mean, var = next(tensors), next(tensors)
        inv = torch.rsqrt(var + eps)
        w = w * inv.view(-1, *([1] * (w.dim() - 1)))
        b = ((b - mean) if b is not None else -mean) * inv
    if has_scale:
        g = next(tensors)
        w = w * g.view(-1, *([1] * (w.dim() - 1)))
        b = b * g if b is not None else None
        if has_scale_bias:
            beta = next(tensors)
            b = beta if b is None else b + beta
    return w, b
