"""Helpers shared by the layer families: Caffe's per-axis parameters and axis indices."""
from __future__ import annotations

from math import prod

from ..graph import Layer, Shape
from ..netdef.errors import ParameterError, ShapeError
from .base import P


def spatial_params(base: str, default: int | None, *, min: int, alias: tuple[str, ...] = (),
                   doc: str = "") -> dict[str, P]:
    """Schema entries for a Caffe per-axis parameter: ``base`` (one value, or [h, w]) and
    ``base_h`` / ``base_w``."""
    short = _short(base)
    return {
        base: P("ints", None, min=min, aliases=alias, doc=doc or f"{base} (one value or [h, w])"),
        f"{short}_h": P("int", None, min=min, doc=f"{base} along H (with {short}_w)"),
        f"{short}_w": P("int", None, min=min, doc=f"{base} along W (with {short}_h)"),
    }


def _short(base: str) -> str:
    """Caffe names the per-axis forms ``kernel_h`` (not ``kernel_size_h``)."""
    return base[:-len("_size")] if base.endswith("_size") else base


def spatial_pair(layer: Layer, base: str, default: int | None, *,
                 both_required: bool = True) -> tuple[int, int]:
    """Resolve ``base`` / ``base_h`` / ``base_w`` to ``(h, w)`` following Caffe's rules:
    the list form and the ``_h``/``_w`` form exclude each other; a list has 1 or 2 values."""
    p = layer.params
    hk, wk = f"{_short(base)}_h", f"{_short(base)}_w"
    values, h, w = p.get(base), p.get(hk), p.get(wk)
    if h is not None or w is not None:
        if values is not None:
            raise layer.error(f"'{base}' and '{hk}'/'{wk}' both given",
                              key=hk if h is not None else wk,
                              hint=f"use either '{base}' or '{hk}' and '{wk}'",
                              cls=ParameterError)
        if h is None or w is None:
            if both_required:
                missing = wk if w is None else hk
                raise layer.error(f"'{hk}' and '{wk}' must be given together",
                                  key=hk if h is not None else wk,
                                  hint=f"add '{missing}', or use '{base}' for both axes",
                                  cls=ParameterError)
            h = default if h is None else h
            w = default if w is None else w
        return h, w
    if values is None:
        if default is None:
            raise layer.error(f"missing required parameter '{base}'",
                              hint=f"add '{base}: N' (or '{hk}' and '{wk}')",
                              cls=ParameterError)
        return default, default
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise layer.error(f"parameter '{base}' has {len(values)} values; a 2-D layer takes 1 or 2",
                      key=base, hint=f"write '{base}: N' or '{base}: [H, W]'", cls=ParameterError)


def canonical_axis(layer: Layer, axis: int, ndim: int, key: str = "axis") -> int:
    """Caffe's ``CanonicalAxisIndex``: negative axes count from the end."""
    if not -ndim <= axis < ndim:
        raise layer.error(f"axis {axis} is out of range for a {ndim}-D input",
                          key=key, hint=f"use an axis in [{-ndim}, {ndim - 1}]", cls=ShapeError)
    return axis % ndim


def fmt(shape: Shape) -> str:
    return "x".join(map(str, shape)) if shape else "scalar"


def count(shape: Shape, start: int = 0, end: int | None = None) -> int:
    return prod(shape[start:end])
