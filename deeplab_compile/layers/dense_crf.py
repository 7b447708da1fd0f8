"""DeepLab's DenseCRF layer: fully connected CRF mean-field at the end of a TEST net.

Bottoms, as in DeepLab's ``densecrf_layer``:
  ``scores``    (N, C, H, W) logits (fc8 upsampled to the input size; the layer takes
                the softmax and uses -log p as the unary, as DeepLab did)
  ``data_dim``  (N, 1, 1, 2) each image's (height, width) before padding, from
                ImageSegData; the CRF runs on the top-left min(H, height) x min(W, width)
  ``data``      (N, 3, H, W) the image blob (optional; without it only the positional
                kernel runs)
Top: (N, C, H, W) marginals, zero outside each image's effective area (with DeepLab v2's
``output_probability: false``, their log, the smallest float's log outside).

The ``data`` bottom is the transformed net input: BGR, mean-subtracted, scale 1.
DeepLab's layer used that blob unchanged as the colour feature (divided by
bi_rgb_std), noting that the mean shift does not change a Gaussian and assuming
scale 1; this layer does the same.  Colour order and a constant shift only move the
lattice's sampling grid, so results match the raw-RGB path up to the lattice
approximation.  A ``scale`` other than 1 in the data transform changes the colour
distances; divide bi_rgb_std by the same factor to compensate.

What DeepLab's Caffe layer computed (``densecrf_layer.cpp`` with its
``PottsPotential``), and what this layer does by default:
  * unary: -fc8 (the softmax of mean-field is shift-invariant per pixel, so -log p
    as used here gives the same marginals);
  * each kernel's message is normalised per pixel after filtering, w * (K q)_i / (K 1)_i:
    ``normalization: after``, the default.  DeepLab's layer had no other setting;
    ``normalization: symmetric`` gives pydensecrf's default instead;
  * ``max_iter`` mean-field steps (default 10) on the effective image area.
DeepLab's top held log(max(q, FLT_MIN)) unless ``output_probability`` was set; this
layer's top is q itself (the arg-max, which is what DeepLab's MATLAB scripts took, is the
same).  The layer is not differentiable (its output is detached).
"""
from __future__ import annotations

import torch
from torch import nn

from ..crf.params import DEEPLAB_NORMALIZATION, NORMALIZATIONS
from ..crf.presets import PRESETS
from ..graph import Layer, Shape
from ..netdef.errors import ParameterError, ShapeError
from ..ops.dense_crf import dense_crf as _dense_crf_op
from .base import LayerType, P

_LARGEFOV = PRESETS["deeplab_largefov"]


class DenseCRFModule(nn.Module):
    """``forward(scores, data_dim=None, data=None) -> marginals``; see the module doc."""

    def __init__(self, *, max_iter: int = 10, pos_w: float = _LARGEFOV.pos_w,
                 pos_xy_std: float = _LARGEFOV.pos_xy_std, bi_w: float = _LARGEFOV.bi_w,
                 bi_xy_std: float = _LARGEFOV.bi_xy_std, bi_rgb_std: float = _LARGEFOV.bi_rgb_std,
                 normalization: str = DEEPLAB_NORMALIZATION, output_probability: bool = True):
        super().__init__()
        if max_iter < 0:
            raise ValueError(f"DenseCRF: max_iter must be >= 0, got {max_iter}")
        for name, v in (("pos_xy_std", pos_xy_std), ("bi_xy_std", bi_xy_std), ("bi_rgb_std", bi_rgb_std)):
            if not v > 0:
                raise ValueError(f"DenseCRF: {name} must be positive, got {v}")
        for name, v in (("pos_w", pos_w), ("bi_w", bi_w)):
            if not v >= 0:
                raise ValueError(f"DenseCRF: {name} must be non-negative, got {v}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"DenseCRF: normalization must be one of {', '.join(NORMALIZATIONS)}, "
                             f"got {normalization!r}")
        self.max_iter = int(max_iter)
        self.pos_w, self.pos_xy_std = float(pos_w), float(pos_xy_std)
        self.bi_w, self.bi_xy_std, self.bi_rgb_std = float(bi_w), float(bi_xy_std), float(bi_rgb_std)
        self.normalization = normalization
        self.output_probability = bool(output_probability)

    def extra_repr(self) -> str:
        return (f"max_iter={self.max_iter}, pos_w={self.pos_w:g}, pos_xy_std={self.pos_xy_std:g}, "
                f"bi_w={self.bi_w:g}, bi_xy_std={self.bi_xy_std:g}, bi_rgb_std={self.bi_rgb_std:g}, "
                f"normalization={self.normalization}")

    @torch.no_grad()
    def forward(self, scores: torch.Tensor, data_dim: torch.Tensor | None = None,
                data: torch.Tensor | None = None) -> torch.Tensor:
        N, C, H, W = scores.shape
        if data is not None and (data.shape[0] != N or data.shape[1] != 3 or tuple(data.shape[2:]) != (H, W)):
            raise ValueError(f"DenseCRF: 'data' must be ({N}, 3, {H}, {W}), got {tuple(data.shape)}")
        unary = -torch.log_softmax(scores.float(), dim=1)
        out = torch.zeros_like(unary)
        sizes = []
        for n in range(N):
            if data_dim is None:
                sizes.append((H, W))
            else:
                h, w = (int(v) for v in data_dim[n].reshape(-1)[:2].tolist())
                sizes.append((min(H, h) if h > 0 else H, min(W, w) if w > 0 else W))
        bi_w = self.bi_w if data is not None else 0.0
        for (h, w) in sorted(set(sizes)):
            idx = [n for n, s in enumerate(sizes) if s == (h, w)]
            u = unary[idx, :, :h, :w].contiguous()
            img = (data[idx, :, :h, :w].float().contiguous() if data is not None
                   else u.new_zeros(len(idx), 3, h, w))
            q = _dense_crf_op(img, u, self.pos_w, self.pos_xy_std, bi_w, self.bi_xy_std, self.bi_rgb_std,
                              self.max_iter, self.normalization)
            out[idx, :, :h, :w] = q
        if not self.output_probability:     # DeepLab v2's score output: log(prob)
            out = out.clamp_min(torch.finfo(out.dtype).tiny).log()
        return out


class DenseCRF(LayerType):
    type_name = "DenseCRF"
    doc = __doc__
    params = {
        "max_iter": P("int", 10, min=0, doc="mean-field iterations"),
        # Defaults: the deeplab_largefov preset (DeepLab's run_pascal.sh defaults).
        "pos_w": P("float", _LARGEFOV.pos_w, min=0, doc="weight of the positional (Gaussian) kernel"),
        "pos_xy_std": P("float", _LARGEFOV.pos_xy_std, doc="its spatial std in pixels (> 0)"),
        "bi_w": P("float", _LARGEFOV.bi_w, min=0, doc="weight of the bilateral kernel"),
        "bi_xy_std": P("float", _LARGEFOV.bi_xy_std, doc="its spatial std in pixels (> 0)"),
        "bi_rgb_std": P("float", _LARGEFOV.bi_rgb_std, doc="its colour std in intensity levels (> 0)"),
        "normalization": P("enum", DEEPLAB_NORMALIZATION, choices=NORMALIZATIONS,
                           doc="after (DeepLab's densecrf, the default) or symmetric (pydensecrf's default)"),
        "output_probability": P("bool", True, doc="false: log(marginals), DeepLab v2's score output"),
    }
    bottoms = (2, 3)
    tops = (1, 1)

    def check(self, layer: Layer) -> None:
        for key in ("pos_xy_std", "bi_xy_std", "bi_rgb_std"):
            v = layer.params[key]
            if not v > 0:
                raise layer.error(f"parameter '{key}' must be a positive standard deviation, got {v!r}",
                                  key=key, cls=ParameterError)

    def shapes(self, layer: Layer, in_shapes: list[Shape]) -> list[Shape]:
        scores = in_shapes[0]
        if len(scores) != 4:
            raise layer.error(f"bottom 'scores' must be N x C x H x W, got {'x'.join(map(str, scores))}",
                              cls=ShapeError)
        n, _, h, w = scores
        dim = in_shapes[1]
        if len(dim) != 4 or dim[0] != n or dim[1] * dim[2] * dim[3] != 2:
            raise layer.error(f"bottom 'data_dim' must be {n}x1x1x2 (height, width per image), "
                              f"got {'x'.join(map(str, dim))}", cls=ShapeError)
        if len(in_shapes) == 3:
            data = in_shapes[2]
            if tuple(data) != (n, 3, h, w):
                raise layer.error(f"bottom 'data' must be {n}x3x{h}x{w} to match the scores, "
                                  f"got {'x'.join(map(str, data))}",
                                  hint="upsample the scores to the input size first (Interp)", cls=ShapeError)
        return [tuple(scores)]

    def build(self, layer: Layer) -> nn.Module:
        p = layer.params
        return DenseCRFModule(max_iter=p["max_iter"], pos_w=p["pos_w"], pos_xy_std=p["pos_xy_std"],
                              bi_w=p["bi_w"], bi_xy_std=p["bi_xy_std"], bi_rgb_std=p["bi_rgb_std"],
                              normalization=p["normalization"], output_probability=p["output_probability"])
