"""The input normalisation a net is trained with, as one plain value that travels with it.

A :class:`Preprocess` is what the data layer's transform does to the pixels:
the channel order the image is read in (``bgr`` as Caffe's OpenCV, or ``rgb``), then
``(pixel - mean[c]) * scale[c]`` per channel, in that order.  It comes from

* the data spec (:func:`of_spec`): what training fed the net, a data layer overridden
  by the solver's ``data:`` section (``preprocess: tf``, ``mean_value``, ``scale``);
* the netdef's data layer (:func:`of_layer`): ImageSegData's ``mean_value`` and ``scale``
  on B G R pixels;
* the netdef's top-level ``preprocess:`` key (:func:`of_netdef`), for nets fed by
  ``inputs:`` (the zoo): a preset name or ``{order, mean, scale}``;
* a snapshot: ``deeplab-train`` records the training spec's value under ``preprocess``.

The presets are ``caffe`` (B G R minus DeepLab's mean, 0..255: v1/v2), ``tf``
(R G B scaled to [-1, 1], TF DeepLab) and ``imagenet`` (R G B, torchvision's mean and
std).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .errors import DataError

CAFFE_MEAN_BGR = (104.008, 116.669, 122.675)   # DeepLab's train/test prototxts (ImageNet VGG16)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)   # torchvision, 0..1 RGB


@dataclass(frozen=True)
class Preprocess:
    order: str                              # "bgr" or "rgb": the channel order fed to the net
    mean: tuple[float, float, float]        # per channel of that order, in 0..255 units
    scale: tuple[float, float, float]

    def to_dict(self) -> dict[str, Any]:
        return {"order": self.order, "mean": list(self.mean), "scale": list(self.scale)}

    def describe(self) -> str:
        name = next((k for k, v in PRESETS.items() if v.close_to(self)), None)
        body = (f"{self.order.upper()}, (x - [{', '.join(f'{m:g}' for m in self.mean)}]) * "
                + (f"{self.scale[0]:g}" if len(set(self.scale)) == 1 else
                   "[" + ", ".join(f"{s:g}" for s in self.scale) + "]"))
        return f"{name} ({body})" if name else body

    def close_to(self, other: "Preprocess") -> bool:
        return (self.order == other.order and np.allclose(self.mean, other.mean, rtol=0, atol=1e-4)
                and np.allclose(self.scale, other.scale, rtol=1e-6, atol=0))

    def apply(self, rgb: np.ndarray):
        """The ``1 x 3 x H x W`` float32 tensor of an ``H x W x 3`` uint8 RGB image, computed
        as the data layer's transform computes it (float64, then float32)."""
        import torch
        x = rgb[..., ::-1] if self.order == "bgr" else rgb
        x = (x.astype(np.float64) - np.asarray(self.mean)) * np.asarray(self.scale)
        return torch.from_numpy(np.ascontiguousarray(x.astype(np.float32).transpose(2, 0, 1)))[None]


PRESETS: dict[str, Preprocess] = {
    "caffe": Preprocess("bgr", CAFFE_MEAN_BGR, (1.0, 1.0, 1.0)),
    "tf": Preprocess("rgb", (127.5, 127.5, 127.5), (1 / 127.5,) * 3),
    "imagenet": Preprocess("rgb", tuple(255 * m for m in IMAGENET_MEAN), tuple(1 / (255 * s) for s in IMAGENET_STD)),
}


def _three(value: Any, key: str, where: str) -> tuple[float, float, float]:
    vals = value if isinstance(value, (list, tuple)) else [value]
    try:
        vals = [float(v) for v in vals]
    except (TypeError, ValueError):
        vals = []
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3:
        raise DataError(f"{where}: preprocess '{key}' must be one number or three, not {value!r}"[:200],
                        hint="e.g. {order: bgr, mean: [104.008, 116.669, 122.675], scale: 1}")
    return vals[0], vals[1], vals[2]


def from_value(value: Any, where: str = "preprocess") -> Preprocess:
    """A preset name, a :class:`Preprocess`, or a mapping ``{order, mean, scale}`` (what
    :meth:`Preprocess.to_dict` writes)."""
    if isinstance(value, Preprocess):
        return value
    if isinstance(value, str):
        if value not in PRESETS:
            raise DataError(f"{where}: unknown preprocess '{value}'", hint="use " + ", ".join(PRESETS)
                            + ", or {order: bgr|rgb, mean: [...], scale: ...}")
        return PRESETS[value]
    if isinstance(value, Mapping):
        unknown = sorted(set(map(str, value)) - {"order", "mean", "scale"})
        order = str(value.get("order", "bgr")).lower()
        if unknown or order not in ("bgr", "rgb"):
            raise DataError(f"{where}: preprocess takes order (bgr or rgb), mean and scale"
                            + (f"; unknown key '{unknown[0]}'" if unknown else f"; order '{order}'"),
                            hint="e.g. {order: rgb, mean: 127.5, scale: 0.0078125}")
        return Preprocess(order, _three(value.get("mean", 0.0), "mean", where),
                          _three(value.get("scale", 1.0), "scale", where))
    raise DataError(f"{where}: preprocess must be a name or a mapping, not {value!r}"[:200],
                    hint="use " + ", ".join(PRESETS))


def of_spec(spec) -> Preprocess:
    """What a :class:`~deeplab_compile.data.spec.DataSpec`'s transform does."""
    if spec.preprocess in ("tf", "imagenet"):
        return PRESETS[spec.preprocess]
    mean = tuple(spec.mean_value) if spec.mean_value else (0.0,)
    return Preprocess("bgr", _three(mean, "mean", spec.where or "data"), (float(spec.scale),) * 3)


def spec_overrides(pre: Preprocess) -> dict[str, Any]:
    """The data-section keys (``preprocess``, ``mean_value``, ``scale``) that make a data
    spec normalise as ``pre``; an error where the data pipeline cannot (RGB other than
    TF's or ImageNet's, or B G R with a scale per channel)."""
    for name in ("tf", "imagenet"):
        if pre.close_to(PRESETS[name]):
            return {"preprocess": name}
    if pre.order == "bgr" and len(set(pre.scale)) == 1:
        return {"preprocess": "caffe", "mean_value": list(pre.mean), "scale": pre.scale[0]}
    raise DataError(f"the data pipeline cannot normalise as {pre.describe()}",
                    hint="it takes B G R with one scale, tf or imagenet; pass --preprocess caffe|tf|imagenet")


def of_layer(params: Mapping, name: str = "data") -> Preprocess:
    """What an ImageSegData layer with ``params`` does to pixels: B G R, ``mean_value``,
    ``scale``."""
    mean = list(params.get("mean_value") or ()) or [0.0]
    return Preprocess("bgr", _three(mean, "mean", f"layer '{name}'"), (float(params.get("scale", 1.0)),) * 3)


def of_netdef(doc: Mapping) -> Preprocess | None:
    """The netdef's declared ``preprocess:`` (expanded document), or None."""
    value = doc.get("preprocess") if isinstance(doc, Mapping) else None
    if value is None:
        return None
    from ..netdef.nodes import loc_of
    loc = loc_of(doc, "preprocess")
    return from_value(value, str(loc) if loc else "the netdef's preprocess")
