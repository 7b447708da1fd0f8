"""``deeplab::dense_crf``: mean-field inference in a fully connected CRF
(Kraehenbuehl and Koltun 2011) with Potts compatibility, a Gaussian (positional)
kernel and a bilateral kernel, both filtered through permutohedral lattices.

Shapes::

    image    (B, 3, H, W)  float32   colour features (any channel order, any offset)
    unary    (B, C, H, W)  float32   energies, -log p
    returns  (B, C, H, W)  float32   marginals Q after ``iterations`` mean-field steps

Kernel features: positional (x, y) / pos_xy_std; bilateral (x, y) / bi_xy_std and the
three image channels / bi_rgb_std.  Each step computes
``Q = softmax(-unary + sum_k w_k n_k K_k(n'_k Q))`` where the normaliser is
``n = n' = D^-1/2`` for ``normalization="symmetric"`` (pydensecrf's default) or
``n = D^-1, n' = 1`` for ``"after"`` (the per-pixel normalisation of the densecrf code
that DeepLab shipped), ``D`` being the kernel's row sums.  A zero weight drops its
kernel.  Not differentiable.

The CPU kernel's iterations keep lattice values in half floats between float32 steps on
x86-64 with AVX2/F16C (marginals move by less than 1e-2); ``DEEPLAB_CRF_STORAGE=float32``
keeps them in float32.  The reference and the CUDA kernel are float32 throughout.
Under ``torch.autocast`` (bf16/fp16) the inputs are cast to float32 and the result is
float32 (:mod:`._autocast`, policy "float32").
"""
from __future__ import annotations

import torch

from . import _autocast, _ext
from . import _lattice_reference as ref

_ext.available()

NORMALIZATIONS = ("symmetric", "after")


def dense_crf(image: torch.Tensor, unary: torch.Tensor, pos_w: float, pos_xy_std: float, bi_w: float,
              bi_xy_std: float, bi_rgb_std: float, iterations: int = 10,
              normalization: str = "symmetric") -> torch.Tensor:
    """Run the compiled kernel when there is one for ``unary``'s device, else the reference."""
    dev = unary.device.type
    if torch.is_autocast_enabled(dev):      # float32 kernels: reduced-precision inputs back to float32
        image, unary = _autocast.to_float32(dev, image, unary)
        with torch.autocast(dev, enabled=False):
            return dense_crf(image, unary, pos_w, pos_xy_std, bi_w, bi_xy_std, bi_rgb_std, iterations,
                             normalization)
    if _ext.use_compiled("dense_crf", unary):
        return torch.ops.deeplab.dense_crf(image, unary, float(pos_w), float(pos_xy_std), float(bi_w),
                                           float(bi_xy_std), float(bi_rgb_std), int(iterations), normalization)
    return dense_crf_reference(image, unary, pos_w, pos_xy_std, bi_w, bi_xy_std, bi_rgb_std, iterations,
                               normalization)


def _kernel_features(image: torch.Tensor, xy_std: float, rgb_std: float | None) -> torch.Tensor:
    _, H, W = image.shape
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32, device=image.device),
                            torch.arange(W, dtype=torch.float32, device=image.device), indexing="ij")
    feats = [xs / xy_std, ys / xy_std]
    if rgb_std is not None:
        feats += [image[c] / rgb_std for c in range(3)]
    return torch.stack(feats, -1).reshape(H * W, -1)


def dense_crf_reference(image: torch.Tensor, unary: torch.Tensor, pos_w: float, pos_xy_std: float,
                        bi_w: float, bi_xy_std: float, bi_rgb_std: float, iterations: int = 10,
                        normalization: str = "symmetric") -> torch.Tensor:
    """The same inference with the plain-PyTorch lattice (one image at a time)."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"dense_crf: 'normalization' must be one of {NORMALIZATIONS}, got {normalization!r}")
    B, C, H, W = unary.shape
    out = []
    for b in range(B):
        kernels = []
        for w, xy, rgb in ((pos_w, pos_xy_std, None), (bi_w, bi_xy_std, bi_rgb_std)):
            if w == 0:
                continue
            lat = ref.build(_kernel_features(image[b].float(), xy, rgb))
            deg = ref.filter(lat, unary.new_ones(H * W, 1))[:, 0]
            if normalization == "symmetric":
                n_in = n_out = 1.0 / torch.sqrt(deg + 1e-20)
            else:
                n_in, n_out = torch.ones_like(deg), 1.0 / (deg + 1e-20)
            kernels.append((lat, float(w), n_in[:, None], n_out[:, None]))
        neg_u = -unary[b].reshape(C, -1).t()            # (HW, C)
        q = torch.softmax(neg_u, 1)
        for _ in range(int(iterations)):
            msg = neg_u.clone()
            for lat, w, n_in, n_out in kernels:
                msg = msg + w * n_out * ref.filter(lat, n_in * q)
            q = torch.softmax(msg, 1)
        out.append(q.t().reshape(C, H, W))
    return torch.stack(out) if out else unary.new_zeros(unary.shape)


if _ext.available():
    @torch.library.register_fake("deeplab::dense_crf")
    def _dense_crf_fake(image, unary, pos_w, pos_xy_std, bi_w, bi_xy_std, bi_rgb_std, iterations,
                        normalization="symmetric"):
        torch._check(image.dim() == 4 and unary.dim() == 4)
        torch._check(image.shape[0] == unary.shape[0])
        return unary.new_empty(unary.shape)

    _autocast.register("deeplab::dense_crf", "float32")
