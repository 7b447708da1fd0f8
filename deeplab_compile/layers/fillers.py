"""Caffe's weight fillers: the schema check and the fill itself.

A filler is a mapping ``{type: ..., <fields>}`` with Caffe's ``FillerParameter`` fields and
defaults: ``value`` 0, ``min`` 0, ``max`` 1, ``mean`` 0, ``std`` 1, ``sparse`` -1,
``variance_norm`` FAN_IN.  Fan sizes are computed as Caffe does on the blob: ``fan_in =
count / shape[0]`` and ``fan_out = count / shape[1]`` (1 when the blob has one axis), so a
Deconvolution weight ``[Cin, Cout/group, kh, kw]`` gets Caffe's numbers too.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ..graph import Layer
from ..netdef.errors import ParameterError, did_you_mean

FILLER_TYPES = ("constant", "uniform", "gaussian", "xavier", "msra", "bilinear", "positive_unitball")
VARIANCE_NORMS = ("fan_in", "fan_out", "average")

_FIELDS: dict[str, tuple[type, Any]] = {
    "type": (str, "constant"),
    "value": (float, 0.0),
    "min": (float, 0.0),
    "max": (float, 1.0),
    "mean": (float, 0.0),
    "std": (float, 1.0),
    "sparse": (int, -1),
    "variance_norm": (str, "fan_in"),
}


def check_filler(value: Any, key: str, layer: Layer) -> dict:
    """Validate a filler mapping from a netdef; return it with defaults filled in."""
    def bad(what: str, hint: str) -> ParameterError:
        return layer.error(f"parameter '{key}' {what}", key=key, hint=hint, cls=ParameterError)

    if isinstance(value, str):      # shorthand: weight_filler: xavier
        value = {"type": value}
    if not isinstance(value, dict):
        raise bad(f"must be a mapping like {{type: gaussian, std: 0.01}}, got {value!r}",
                  "write it as '{type: ..., ...}'")
    out: dict[str, Any] = {}
    for k, v in value.items():
        if k not in _FIELDS:
            hint = did_you_mean(k, _FIELDS) or f"a filler takes: {', '.join(_FIELDS)}"
            raise bad(f"has an unknown field '{k}'", hint)
        kind = _FIELDS[k][0]
        if kind is float:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise bad(f"field '{k}' must be a number, got {v!r}", f"write '{k}: 0.01'")
            try:
                v = float(v)
            except OverflowError:       # an integer past 1e308
                raise bad(f"field '{k}' is too large for a number ({len(str(abs(v)))} digits)",
                          f"write '{k}: 0.01'") from None
        elif kind is int:
            if isinstance(v, bool) or not isinstance(v, int):
                raise bad(f"field '{k}' must be an integer, got {v!r}", f"write '{k}: 1'")
        else:
            if not isinstance(v, str):
                raise bad(f"field '{k}' must be a string, got {v!r}", f"write '{k}: ...'")
            v = v.lower()
        out[k] = v
    for k, (_, default) in _FIELDS.items():
        out.setdefault(k, default)
    if out["type"] not in FILLER_TYPES:
        raise bad(f"has unknown filler type '{out['type']}'",
                  (did_you_mean(out["type"], FILLER_TYPES) or "") +
                  f" filler types: {', '.join(FILLER_TYPES)}".lstrip())
    if out["variance_norm"] not in VARIANCE_NORMS:
        raise bad(f"has unknown variance_norm '{out['variance_norm']}'",
                  f"use one of {', '.join(v.upper() for v in VARIANCE_NORMS)}")
    if out["type"] == "uniform" and out["min"] > out["max"]:
        raise bad(f"has min {out['min']:g} > max {out['max']:g}", "swap them")
    if out["type"] in ("gaussian", "msra") and out["std"] < 0:
        raise bad(f"has a negative std {out['std']:g}", "use std >= 0")
    return out


def filler(type: str = "constant", **fields: Any) -> dict:
    """A filler mapping with defaults filled in (for code that builds modules directly)."""
    out = {k: d for k, (_, d) in _FIELDS.items()}
    out.update(fields, type=type)
    return out


def _fans(shape: tuple[int, ...]) -> tuple[float, float]:
    n = math.prod(shape)
    num = shape[0] if len(shape) >= 1 else 1
    channels = shape[1] if len(shape) >= 2 else 1
    return n / num, n / channels


def _norm(spec: dict, shape: tuple[int, ...]) -> float:
    fan_in, fan_out = _fans(shape)
    vn = spec["variance_norm"]
    return {"fan_in": fan_in, "fan_out": fan_out, "average": (fan_in + fan_out) / 2}[vn]


def bilinear_kernel(k: int, dtype=torch.float32) -> torch.Tensor:
    """Caffe's BilinearFiller kernel for a k x k filter (upsampling by about k/2)."""
    f = math.ceil(k / 2)
    c = (k - 1) / (2.0 * f)
    r = 1 - (torch.arange(k, dtype=torch.float64) / f - c).abs()
    return (r[:, None] * r[None, :]).to(dtype)


@torch.no_grad()
def apply_filler(tensor: torch.Tensor, spec: dict, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill ``tensor`` in place following Caffe's semantics for ``spec``; returns it."""
    spec = filler(**spec) if len(spec) < len(_FIELDS) else spec
    t = spec["type"]
    shape = tuple(tensor.shape)
    g = generator
    if t == "constant":
        tensor.fill_(spec["value"])
    elif t == "uniform":
        tensor.uniform_(spec["min"], spec["max"], generator=g)
    elif t == "gaussian":
        tensor.normal_(spec["mean"], spec["std"], generator=g)
        if spec["sparse"] >= 0:
            # Caffe keeps each weight with probability sparse / num_outputs (shape[0]).
            if tensor.dim() != 2:
                raise ValueError("a sparse gaussian filler needs a 2-D blob (InnerProduct weight)")
            p = min(1.0, spec["sparse"] / shape[0])
            keep = torch.empty_like(tensor).bernoulli_(p, generator=g)
            tensor.mul_(keep)
    elif t == "xavier":
        scale = math.sqrt(3.0 / _norm(spec, shape))
        tensor.uniform_(-scale, scale, generator=g)
    elif t == "msra":
        tensor.normal_(0.0, math.sqrt(2.0 / _norm(spec, shape)), generator=g)
    elif t == "bilinear":
        if tensor.dim() != 4 or shape[2] != shape[3]:
            raise ValueError(f"the bilinear filler needs a square 4-D filter, got {list(shape)}")
        tensor.copy_(bilinear_kernel(shape[3], tensor.dtype).expand(shape))
    elif t == "positive_unitball":
        tensor.uniform_(0.0, 1.0, generator=g)
        flat = tensor.view(shape[0] if shape else 1, -1)
        flat.div_(flat.sum(dim=1, keepdim=True))
    else:
        raise ValueError(f"unknown filler type {t!r}; filler types: {', '.join(FILLER_TYPES)}")
    return tensor


def check_fill(layer: Layer, key: str, shape: tuple[int, ...]) -> None:
    """Raise a ParameterError if the filler in ``layer.params[key]`` cannot fill ``shape``."""
    spec = layer.params.get(key)
    if not spec:
        return
    if spec["type"] == "bilinear" and (len(shape) != 4 or shape[2] != shape[3]):
        raise layer.error(f"the bilinear filler in '{key}' needs a square kernel, the blob is "
                          f"{'x'.join(map(str, shape))}", key=key,
                          hint="use kernel_size: K (square), or another filler", cls=ParameterError)
    if spec["type"] == "gaussian" and spec["sparse"] >= 0 and len(shape) != 2:
        raise layer.error(f"a sparse gaussian filler in '{key}' needs a 2-D blob", key=key,
                          hint="drop 'sparse' (it is for InnerProduct weights)", cls=ParameterError)
