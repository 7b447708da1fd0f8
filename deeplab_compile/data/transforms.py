"""DeepLab's ``TransformImgAndSeg``, pixel for pixel (Caffe ``data_transformer.cpp`` of
DeepLab v2, with the ``image_seg_data_layer.cpp`` that calls it).  TF DeepLab's
``resize_to_range`` (:func:`range_size`, :func:`resize_aligned`) runs before it, when the
data layer asks for it.

For one image ``img`` (H x W x C, uint8, channels in the order the net wants: B G R for
Caffe nets) and its label map ``seg`` (H x W):

1. ``scale_factors`` (when given): one factor ``f`` is drawn uniformly from the list; the
   image is resized with OpenCV's ``INTER_LINEAR`` and the label with ``INTER_NEAREST``,
   both to ``int(H f) x int(W f)`` (DeepLab multiplies the int size by the float factor,
   which truncates: 321 x 0.75 -> 240), with the source coordinate ``(x + 0.5) s - 0.5``
   (linear) or ``floor(x s)`` (nearest), ``s`` = source size / new size per axis, as
   ``cv::resize`` to an explicit size computes it.  The image stays 8-bit, as in OpenCV.
2. ``mirror``: flip left-right with probability 1/2 (Caffe draws this in both phases).
3. Pad at the bottom and right up to the crop size: the image with the mean value (so it
   reads 0 after the mean is subtracted), the label with ``ignore_label``.
4. Crop ``crop_height x crop_width``: at a random offset in train
   (``h_off ~ U{0 .. H - crop_h}``), at the top-left corner in test, so the prediction is
   aligned with the image's top-left corner as DeepLab's MATLAB scripts expect.
5. ``(pixel - mean[c]) * scale`` per channel (``scale[c]`` where it is given per channel,
   as ImageNet's ``1 / std``), in double precision, stored as float32.

``data_dim`` (the ``data_dim`` top) is ``[min(crop_h, H), min(crop_w, W)]`` of the image
as read, before any rescaling, as ImageSegData fills it in.

OpenCV computes ``INTER_LINEAR`` on 8-bit images with 11-bit fixed-point weights; here the
weights are float32 (as OpenCV derives them) and the result is rounded half up, so a value
can differ from OpenCV's by one grey level.  Everything else is exact.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def resize_size(h: int, w: int, f: float) -> tuple[int, int]:
    """The size DeepLab resizes to: ``img_height *= scale`` on an int with a float factor,
    a float32 product truncated to int."""
    f32 = np.float32(f)
    return max(int(np.float32(h) * f32), 1), max(int(np.float32(w) * f32), 1)


def _linear_coords(n_in: int, n_out: int, f: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source index pairs and float32 fractions of OpenCV's INTER_LINEAR along one axis."""
    scale = np.float64(1.0 / f)
    x = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
    x = x.astype(np.float32)
    s0 = np.floor(x).astype(np.int64)
    frac = (x - s0.astype(np.float32)).astype(np.float32)
    low = s0 < 0
    s0[low], frac[low] = 0, 0
    high = s0 >= n_in - 1
    s0[high], frac[high] = n_in - 1, 0
    s1 = np.minimum(s0 + 1, n_in - 1)
    return s0, s1, frac


def resize_linear(img: np.ndarray, f: float) -> np.ndarray:
    """Bilinear resize of an 8-bit H x W (x C) image by factor ``f`` (OpenCV INTER_LINEAR)."""
    oh, ow = resize_size(img.shape[0], img.shape[1], f)
    return resize_to(img, oh, ow, nearest=False)


def resize_nearest(seg: np.ndarray, f: float) -> np.ndarray:
    """Nearest-neighbour resize by factor ``f`` (OpenCV INTER_NEAREST: ``floor(x / f)``)."""
    oh, ow = resize_size(seg.shape[0], seg.shape[1], f)
    return resize_to(seg, oh, ow, nearest=True)


def resize_to(img: np.ndarray, height: int, width: int, *, nearest: bool) -> np.ndarray:
    """Resize to an explicit size (``new_height``/``new_width``), OpenCV's mapping with
    per-axis factors ``height / H`` and ``width / W``."""
    h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img
    fy, fx = height / h, width / w
    if nearest:
        ys = np.minimum(np.floor(np.arange(height) * (h / height)).astype(np.int64), h - 1)
        xs = np.minimum(np.floor(np.arange(width) * (w / width)).astype(np.int64), w - 1)
        return img[ys][:, xs]
    y0, y1, wy = _linear_coords(h, height, fy)
    x0, x1, wx = _linear_coords(w, width, fx)
    src = img.astype(np.float32)
    if src.ndim == 2:
        src = src[:, :, None]
    wx, wy = wx[None, :, None], wy[:, None, None]
    out = (src[y0][:, x0] * (1 - wx) + src[y0][:, x1] * wx) * (1 - wy) + \
          (src[y1][:, x0] * (1 - wx) + src[y1][:, x1] * wx) * wy
    out = np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)
    return out if img.ndim == 3 else out[:, :, 0]


def range_size(h: int, w: int, min_size: int, max_size: int | None = None,
               factor: int | None = None) -> tuple[int, int]:
    """The size TF DeepLab's ``resize_to_range`` gives an ``h x w`` image.

    The shorter side becomes ``min_size``, unless the longer side would then pass
    ``max_size``: then the longer side becomes ``max_size``.  With ``factor`` each side is
    then rounded up so that ``side - 1`` is a multiple of ``factor``, and ``max_size`` is
    first lowered to such a value (so no side ends above the given ``max_size``).  The
    scales are float32 and the sides their products rounded up, as TF computes them.
    """
    f32 = np.float32
    lo = f32(min_size)
    hi = None if max_size is None else f32(max_size)
    if hi is not None and factor:
        hi = f32(hi + (factor - (hi - 1) % factor) % factor - factor)
    fh, fw = f32(h), f32(w)

    def sides(scale):
        return [int(np.ceil(f32(fh * scale))), int(np.ceil(f32(fw * scale)))]

    size = sides(f32(lo / min(fh, fw)))
    if hi is not None and max(size) > hi:
        size = sides(f32(hi / max(fh, fw)))
    if factor:
        size = [n + (factor - (n - 1) % factor) % factor for n in size]
    return size[0], size[1]


def resize_aligned(img: np.ndarray, height: int, width: int, *, nearest: bool) -> np.ndarray:
    """TF's resize with ``align_corners=True``, as ``resize_to_range`` calls it: output
    pixel ``y`` reads source ``y (H - 1) / (height - 1)`` (float32).  Bilinear returns
    float32 (TF DeepLab resizes the image after casting it to float, and keeps it so);
    nearest takes the source pixel at the rounded coordinate and keeps the dtype, so
    label ids survive."""
    h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img if nearest else img.astype(np.float32)

    def coords(n_in: int, n_out: int) -> np.ndarray:
        s = np.float32((n_in - 1) / (n_out - 1)) if n_out > 1 else np.float32(n_in / n_out)
        return np.arange(n_out, dtype=np.float32) * s

    y, x = coords(h, height), coords(w, width)
    if nearest:
        ys = np.minimum(np.floor(y + np.float32(0.5)).astype(np.int64), h - 1)
        xs = np.minimum(np.floor(x + np.float32(0.5)).astype(np.int64), w - 1)
        return img[ys][:, xs]
    y0 = np.floor(y).astype(np.int64)
    x0 = np.floor(x).astype(np.int64)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy = (y - y0.astype(np.float32))[:, None]
    wx = (x - x0.astype(np.float32))[None, :]
    src = img.astype(np.float32)
    if src.ndim == 3:
        wy, wx = wy[..., None], wx[..., None]
    top = src[y0][:, x0] + (src[y0][:, x1] - src[y0][:, x0]) * wx
    bottom = src[y1][:, x0] + (src[y1][:, x1] - src[y1][:, x0]) * wx
    return (top + (bottom - top) * wy).astype(np.float32)


@dataclass(frozen=True)
class TransformParams:
    """The transform part of an ImageSegData layer, resolved."""

    crop_height: int
    crop_width: int
    mean: tuple[float, ...] = ()          # per channel, in the image's channel order
    scale: float | tuple[float, ...] = 1.0   # one factor, or one per channel (ImageNet's 1 / std)
    mirror: bool = False
    scale_factors: tuple[float, ...] = ()
    ignore_label: int = 255
    train: bool = True


@dataclass
class Draws:
    """The random choices for one image (kept so tests can replay them)."""

    scale_index: int | None = None
    mirror: bool = False
    h_off: int = 0
    w_off: int = 0
    extra: dict = field(default_factory=dict)


def draw(p: TransformParams, h: int, w: int, rng: np.random.Generator) -> Draws:
    """Draw scale, mirror and crop offset for an ``h x w`` image, in that order."""
    d = Draws()
    if p.scale_factors:
        d.scale_index = int(rng.integers(len(p.scale_factors)))
        h, w = resize_size(h, w, p.scale_factors[d.scale_index])
    d.mirror = bool(p.mirror and rng.integers(2))
    hp, wp = max(h, p.crop_height), max(w, p.crop_width)
    if p.train:
        d.h_off = int(rng.integers(hp - p.crop_height + 1))
        d.w_off = int(rng.integers(wp - p.crop_width + 1))
    return d


def apply(p: TransformParams, img: np.ndarray, seg: np.ndarray, d: Draws) -> tuple[np.ndarray, np.ndarray]:
    """Apply the drawn transform: returns ``data`` (C x crop_h x crop_w float32) and
    ``label`` (1 x crop_h x crop_w float32)."""
    if img.ndim == 2:
        img = img[:, :, None]
    if d.scale_index is not None:
        f = p.scale_factors[d.scale_index]
        img = resize_linear(img, f)
        if img.ndim == 2:
            img = img[:, :, None]
        seg = resize_nearest(seg, f)
    h, w, c = img.shape
    mean = np.zeros(c, np.float64)
    if p.mean:
        mean[:] = p.mean if len(p.mean) == c else p.mean[0]
    ch, cw = p.crop_height, p.crop_width
    ph, pw = max(ch - h, 0), max(cw - w, 0)
    x = img.astype(np.float64)
    lab = seg.astype(np.float64)
    if ph or pw:
        x = np.concatenate([x, np.broadcast_to(mean, (h, pw, c))], axis=1) if pw else x
        x = np.concatenate([x, np.broadcast_to(mean, (ph, w + pw, c))], axis=0) if ph else x
        lab = np.pad(lab, ((0, ph), (0, pw)), constant_values=p.ignore_label)
    x = x[d.h_off:d.h_off + ch, d.w_off:d.w_off + cw]
    lab = lab[d.h_off:d.h_off + ch, d.w_off:d.w_off + cw]
    if d.mirror:
        x, lab = x[:, ::-1], lab[:, ::-1]
    data = ((x - mean) * np.asarray(p.scale, np.float64)).astype(np.float32).transpose(2, 0, 1)
    return np.ascontiguousarray(data), np.ascontiguousarray(lab.astype(np.float32)[None])


def data_dim(p: TransformParams, h: int, w: int) -> np.ndarray:
    return np.array([[[min(p.crop_height, h), min(p.crop_width, w)]]], np.float32)


def transform(p: TransformParams, img: np.ndarray, seg: np.ndarray, rng: np.random.Generator):
    """Draw and apply: ``(data, label, draws)``."""
    d = draw(p, img.shape[0], img.shape[1], rng)
    data, label = apply(p, img, seg, d)
    return data, label, d
