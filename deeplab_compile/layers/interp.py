"""DeepLab's Interp: bilinear resizing, with corners aligned by default.

Output size (DeepLab v2 ``interp_layer.cpp``), with ``H_eff = H + pad_beg + pad_end``
(pads are <= 0: they crop), tried in this order:

* ``shrink_factor`` s alone:  ``(H_eff - 1) // s + 1``            (321 -> 41 for s = 8)
* ``zoom_factor`` z alone:    ``H_eff + (H_eff - 1)(z - 1)``      (41 -> 321 for z = 8)
* ``height`` and ``width``:   as given
* both s and z: shrink, then zoom                                  (321 -> 81 -> 241 for s=4, z=3:
                                                                     DeepLab's 0.75 MSC scale)
* a second bottom: its H x W

The values are bilinear with corners aligned over the cropped input
``x[..., -pad_beg : H + pad_end, -pad_beg : W + pad_end]``: output pixel i samples input
``-pad_beg + i (H_eff - 1)/(H_out - 1)``.

``align_corners: false`` resizes as torchvision's segmentation models and today's
``F.interpolate`` default do (half-pixel centres: output pixel i samples input
``(i + 0.5) H_eff / H_out - 0.5``, clamped at the border); the output size is the same.
It is how torchvision's ``deeplabv3_resnet101`` brings its logits to the input size
(``torchvision/models/segmentation/_utils.py``, ``F.interpolate(..., align_corners=False)``).

``interpolation: nearest`` takes each output pixel from the one input pixel nearest to
where bilinear would sample (corners aligned: input ``round(-pad_beg + i (H_eff - 1)/(H_out
- 1))``, halves up; ``align_corners: false``: ``floor((i + 0.5) H_eff / H_out)``), so a
label map keeps its ids: bilinear would mix 255 (ignore) with a class id at a border into
an id that is neither.  DeepLab v2's multi-scale nets shrink their labels to the 0.75 and
0.5 score sizes, where the samples fall between pixels; at DeepLab's stride 8 on 8k+1
crops both modes sample whole pixels and agree.

``geometry``: zoom z gives stride ``Fraction(1, z)``, shrink s stride ``s``, both
``Fraction(s, z)``; an explicit or borrowed size gives ``Fraction(H_eff - 1, H_out - 1)``.
"""
from __future__ import annotations

from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from ..graph import Layer, Shape
from ..netdef.errors import ParameterError, ShapeError
from ._args import fmt
from .base import LayerType, P, positive_size


def interp_size(h: int, w: int, *, zoom_factor: int | None = None, shrink_factor: int | None = None,
                height: int | None = None, width: int | None = None, pad_beg: int = 0, pad_end: int = 0,
                ref: tuple[int, int] | None = None) -> tuple[int, int]:
    """DeepLab's Interp output size for an H x W input (see the module docstring)."""
    he, we = h + pad_beg + pad_end, w + pad_beg + pad_end
    s, z = shrink_factor, zoom_factor
    if s is not None and z is None:
        return (he - 1) // s + 1, (we - 1) // s + 1
    if z is not None and s is None:
        return he + (he - 1) * (z - 1), we + (we - 1) * (z - 1)
    if height is not None and width is not None:
        return height, width
    if s is not None and z is not None:
        ho, wo = (he - 1) // s + 1, (we - 1) // s + 1
        return ho + (ho - 1) * (z - 1), wo + (wo - 1) * (z - 1)
    if ref is not None:
        return ref
    raise ValueError("no output size: give zoom_factor, shrink_factor, height and width, or a second bottom")


class CaffeInterp(nn.Module):
    def __init__(self, *, zoom_factor: int | None = None, shrink_factor: int | None = None,
                 height: int | None = None, width: int | None = None, pad_beg: int = 0, pad_end: int = 0,
                 align_corners: bool = True, interpolation: str = "bilinear"):
        super().__init__()
        if pad_beg > 0 or pad_end > 0:
            raise ValueError("pad_beg and pad_end must be <= 0 (they crop)")
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(f"interpolation must be bilinear or nearest, got {interpolation!r}")
        self.interpolation = interpolation
        self.zoom_factor, self.shrink_factor = zoom_factor, shrink_factor
        self.height, self.width, self.pad_beg, self.pad_end = height, width, pad_beg, pad_end
        self.align_corners = bool(align_corners)

    def extra_repr(self) -> str:
        keys = ("zoom_factor", "shrink_factor", "height", "width", "pad_beg", "pad_end")
        s = ", ".join(f"{k}={getattr(self, k)}" for k in keys if getattr(self, k))
        if self.interpolation != "bilinear":
            s += (", " if s else "") + f"interpolation={self.interpolation!r}"
        return s if self.align_corners else (s + ", " if s else "") + "align_corners=False"

    def forward(self, x: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        size = interp_size(h, w, zoom_factor=self.zoom_factor, shrink_factor=self.shrink_factor,
                           height=self.height, width=self.width, pad_beg=self.pad_beg, pad_end=self.pad_end,
                           ref=None if ref is None else (int(ref.shape[-2]), int(ref.shape[-1])))
        b, e = -self.pad_beg, self.pad_end
        if b or e:
            x = x[..., b:h + e, b:w + e]
        if self.interpolation == "nearest":
            return _nearest(x, size, self.align_corners)
        if not x.is_floating_point():
            return F.interpolate(x.float(), size=size, mode="bilinear",
                                 align_corners=self.align_corners).round().to(x.dtype)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)


def _nearest_index(n_in: int, n_out: int, align_corners: bool, device) -> torch.Tensor:
    """Source index of each output pixel along one axis, in integer arithmetic."""
    i = torch.arange(n_out, device=device)
    if align_corners:
        if n_out == 1:
            return torch.zeros(1, dtype=torch.long, device=device)
        return (2 * i * (n_in - 1) + (n_out - 1)) // (2 * (n_out - 1))     # round half up
    return torch.clamp((2 * i + 1) * n_in // (2 * n_out), max=n_in - 1)


def _nearest(x: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    ys = _nearest_index(int(x.shape[-2]), size[0], align_corners, x.device)
    xs = _nearest_index(int(x.shape[-1]), size[1], align_corners, x.device)
    return x.index_select(-2, ys).index_select(-1, xs)


class Interp(LayerType):
    type_name = "Interp"
    params = {
        "zoom_factor": P("int", None, min=1),
        "shrink_factor": P("int", None, min=1),
        "height": P("int", None, min=1),
        "width": P("int", None, min=1),
        "pad_beg": P("int", 0, max=0, doc="<= 0: crops the start of H and W"),
        "pad_end": P("int", 0, max=0, doc="<= 0: crops the end of H and W"),
        "align_corners": P("bool", True, doc="false: half-pixel centres, as torchvision's resize"),
        "interpolation": P("enum", "bilinear", choices=("bilinear", "nearest"),
                           doc="nearest: each value copied from one input pixel (label maps keep their ids)"),
    }
    bottoms = (1, 2)

    def check(self, layer: Layer) -> None:
        p = layer.params
        if (p["height"] is None) != (p["width"] is None):
            given = "height" if p["height"] is not None else "width"
            raise layer.error(f"'{given}' given without '{'width' if given == 'height' else 'height'}'",
                              key=given, hint="give both height and width", cls=ParameterError)
        has_spec = any(p[k] is not None for k in ("zoom_factor", "shrink_factor", "height"))
        if not has_spec and len(layer.bottoms) < 2:
            raise layer.error("no output size", hint="give zoom_factor, shrink_factor, height and width, "
                              "or a second bottom whose size to take", cls=ParameterError)

    def _kwargs(self, layer: Layer) -> dict:
        return {k: layer.params[k] for k in self.params}

    def shapes(self, layer: Layer, in_shapes: list[Shape]) -> list[Shape]:
        x = in_shapes[0]
        if len(x) != 4:
            raise layer.error(f"input is {fmt(x)}, Interp needs N x C x H x W",
                              hint="feed it a 4-D blob", cls=ShapeError)
        p = layer.params
        he, we = x[2] + p["pad_beg"] + p["pad_end"], x[3] + p["pad_beg"] + p["pad_end"]
        if he < 1 or we < 1:
            raise layer.error(f"pad_beg {p['pad_beg']} and pad_end {p['pad_end']} crop the {fmt(x)} input "
                              f"to nothing", key="pad_beg", hint="crop less", cls=ShapeError)
        ref = None
        if len(in_shapes) == 2:
            if len(in_shapes[1]) < 2:
                raise layer.error(f"bottom '{layer.bottoms[1]}' is {fmt(in_shapes[1])}, it has no H x W",
                                  hint="use a 4-D blob as the size reference", cls=ShapeError)
            ref = tuple(in_shapes[1][-2:])
        size = {k: v for k, v in self._kwargs(layer).items() if k not in ("align_corners", "interpolation")}
        ho, wo = interp_size(x[2], x[3], ref=ref, **size)
        return [positive_size(layer, (x[0], x[1], ho, wo))]

    def build(self, layer: Layer) -> nn.Module:
        return CaffeInterp(**self._kwargs(layer))

    def geometry(self, layer: Layer):
        p = layer.params
        s, z = p["shrink_factor"], p["zoom_factor"]
        if s is not None or z is not None:
            return 1, Fraction(s or 1, z or 1)
        he = layer.in_shapes[0][2] + p["pad_beg"] + p["pad_end"]
        ho = layer.out_shapes[0][2]
        if not p["align_corners"]:
            return 1, Fraction(he, ho)
        return 1, Fraction(he - 1, ho - 1) if ho > 1 else Fraction(he)
