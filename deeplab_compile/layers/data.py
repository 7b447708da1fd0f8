"""Data layers: ``Input`` and DeepLab's ``ImageSegData``.

Their tops become graph inputs; the layers are not in the graph.  ``build`` returns None
for them (the data pipeline is built by the runtime, not here); only the schema and the
shape rule matter to the compiler.
"""
from __future__ import annotations

from typing import Any

from ..graph import Layer, Shape
from ..netdef.errors import ParameterError
from .base import LayerType, P, positive_size


def _one_shape(layer: Layer, v: Any) -> Shape:
    if isinstance(v, dict) and set(v) == {"dim"}:      # prototxt: shape { dim: 1 dim: 3 ... }
        v = v["dim"]
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v]
    if (not isinstance(v, list) or not v
            or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in v)):
        raise layer.error(f"parameter 'shape' must be a list of positive integers, got {v!r}",
                          key="shape", hint="write 'shape: [1, 3, 321, 321]' (N, C, H, W)",
                          cls=ParameterError)
    return tuple(v)


class Input(LayerType):
    """Caffe's Input layer: each top is a graph input of the given full shape.

    ``shape`` is one shape (``[N, C, H, W]``) or a list of shapes, one per top; a single
    shape given for several tops applies to all of them.
    """

    type_name = "Input"
    params = {"shape": P("any", doc="[N, C, H, W], or a list of them, one per top")}
    bottoms = (0, 0)
    tops = (1, None)
    is_data = True

    def _shapes(self, layer: Layer) -> list[Shape]:
        s = layer.params["shape"]
        if isinstance(s, list) and s and all(isinstance(x, (list, dict)) for x in s):
            return [_one_shape(layer, x) for x in s]
        return [_one_shape(layer, s)]

    def check(self, layer: Layer) -> None:
        shapes = self._shapes(layer)
        n = len(layer.tops)
        if len(shapes) not in (1, n):
            raise layer.error(f"{len(shapes)} shapes given for {n} tops", key="shape",
                              hint="give one shape per top, or one shape for all", cls=ParameterError)

    def shapes(self, layer: Layer, in_shapes: list[Shape]) -> list[Shape]:
        shapes = self._shapes(layer)
        return shapes * len(layer.tops) if len(shapes) == 1 else shapes

    def build(self, layer: Layer) -> None:
        return None


class ImageSegData(LayerType):
    """DeepLab's ImageSegData: images and label maps read from a list file.

    Its tops are, by position as in DeepLab (three tops; fewer may be named, the rest are
    made and dropped): ``data`` (N,C,h,w), ``label`` (N,1,h,w) and ``data_dim`` (N,1,1,2),
    the image's height and width clipped to the crop.  The label top exists for every
    ``label_type``: the label map (``pixel``), the list's class id in every pixel
    (``image``), or ``ignore_label`` everywhere (``none``, and DeepLab v1's ``has_label:
    false``), each padded with ``ignore_label``.  ``h, w`` are ``crop_height`` /
    ``crop_width``, else ``crop_size``; a crop size is required because the graph needs a
    fixed input size.  The parameters are the flat union of DeepLab's ``image_data_param``
    and ``transform_param``.
    """

    type_name = "ImageSegData"
    params = {
        # image_data_param
        "source": P("str", doc="list file: 'image label' per line"),
        "root_folder": P("str", "", doc="prefix for every path in the list"),
        "batch_size": P("int", 1, min=1),
        "shuffle": P("bool", False),
        "rand_skip": P("int", 0, min=0),
        "new_height": P("int", 0, min=0),
        "new_width": P("int", 0, min=0),
        "is_color": P("bool", True),
        "label_type": P("enum", "pixel", choices=("pixel", "image", "none")),
        "ignore_label": P("int", 255, doc="label value the crop padding gets"),
        "has_label": P("bool", True, doc="DeepLab v1: false reads a list of images only (as label_type: none)"),
        "max_labels": P("int", 1, doc="DeepLab v1's image-label count: accepted, no effect on segmentation"),
        # transform_param
        "crop_size": P("int", 0, min=0),
        "crop_height": P("int", 0, min=0),
        "crop_width": P("int", 0, min=0),
        "mirror": P("bool", False),
        "mean_value": P("floats", [], doc="per-channel mean, B G R as in Caffe"),
        "mean_file": P("str", ""),
        "scale": P("float", 1.0),
        "scale_factors": P("floats", [], min=0, doc="random rescaling factors (DeepLab v2)"),
        "force_color": P("bool", False),
        "force_gray": P("bool", False),
        "resize_to_range": P("dict", {}, doc="{min: M, max: X, factor: F}: TF DeepLab's "
                             "min/max_resize_value and resize_factor, applied to every image"),
    }
    bottoms = (0, 0)
    tops = (1, 3)
    is_data = True

    def crop(self, layer: Layer) -> tuple[int, int]:
        p = layer.params
        return (p["crop_height"] or p["crop_size"], p["crop_width"] or p["crop_size"])

    def check(self, layer: Layer) -> None:
        p = layer.params
        h, w = self.crop(layer)
        if not h or not w:
            raise layer.error("no crop size: the compiled graph needs a fixed input size",
                              key="crop_size", hint="add 'crop_size: 321' (or crop_height and crop_width)",
                              cls=ParameterError)
        if p["mean_value"] and p["mean_file"]:
            raise layer.error("both 'mean_value' and 'mean_file' given", key="mean_file",
                              hint="keep one of them", cls=ParameterError)
        if len(p["mean_value"]) not in (0, 1, 3):
            raise layer.error(f"'mean_value' has {len(p['mean_value'])} values", key="mean_value",
                              hint="give 1 value or 3 (one per channel, B G R)", cls=ParameterError)
        if any(f <= 0 for f in p["scale_factors"]):
            raise layer.error("'scale_factors' must all be > 0", key="scale_factors",
                              hint="e.g. scale_factors: [0.5, 0.75, 1, 1.25, 1.5]", cls=ParameterError)
        if p["crop_size"] and (p["crop_height"] or p["crop_width"]):
            raise layer.error("both 'crop_size' and 'crop_height'/'crop_width' given", key="crop_size",
                              hint="give crop_size, or both crop_height and crop_width", cls=ParameterError)
        if bool(p["crop_height"]) != bool(p["crop_width"]):
            raise layer.error("only one of 'crop_height' and 'crop_width' given",
                              key="crop_height" if p["crop_height"] else "crop_width",
                              hint="give both, as DeepLab requires", cls=ParameterError)

        resize_range(p["resize_to_range"], layer)
        if p["resize_to_range"] and (p["new_height"] or p["new_width"]):
            raise layer.error("both 'resize_to_range' and 'new_height'/'new_width' given",
                              key="resize_to_range", hint="keep one way of resizing the images",
                              cls=ParameterError)

    def shapes(self, layer: Layer, in_shapes: list[Shape]) -> list[Shape]:
        p = layer.params
        b = p["batch_size"]
        h, w = self.crop(layer)
        out: list[Shape] = [(b, 1 if p["force_gray"] or not p["is_color"] else 3, h, w),
                            (b, 1, h, w), (b, 1, 1, 2)]
        return [positive_size(layer, s) for s in out[:len(layer.tops)]]

    def build(self, layer: Layer) -> None:
        return None


RANGE_KEYS = ("min", "max", "factor")


def resize_range(value: Any, owner: Any, key: str = "resize_to_range") -> dict[str, int | None]:
    """Check ImageSegData's ``resize_to_range`` (a mapping ``{min, max, factor}``, as TF
    DeepLab's ``--min_resize_value``, ``--max_resize_value`` and ``--resize_factor``) and
    return it with every key present (``max`` and ``factor`` None when not given); ``{}``
    stays ``{}`` (no resize).  Errors go through ``owner.error`` (a layer or a data section)."""
    if not value:
        return {}
    example = f"write '{key}: {{min: 513, max: 513, factor: 16}}' (TF DeepLab's ADE20K recipe)"
    if not isinstance(value, dict):
        raise owner.error(f"parameter '{key}' must be a mapping, got {value!r}", key=key, hint=example,
                          cls=ParameterError)
    unknown = [k for k in value if k not in RANGE_KEYS]
    if unknown:
        raise owner.error(f"parameter '{key}' has unknown key '{unknown[0]}'", key=key,
                          hint="its keys are min, max and factor; " + example, cls=ParameterError)
    if "min" not in value:
        raise owner.error(f"parameter '{key}' needs 'min' (the shorter side's target)", key=key,
                          hint=example, cls=ParameterError)
    out: dict[str, int | None] = {}
    for k in RANGE_KEYS:
        v = value.get(k)
        if v is None and k != "min":
            out[k] = None
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise owner.error(f"parameter '{key}': '{k}' must be a positive integer, got {v!r}", key=key,
                              hint=example, cls=ParameterError)
        out[k] = v
    if out["max"] is not None and out["max"] < out["min"]:
        raise owner.error(f"parameter '{key}': max {out['max']} is smaller than min {out['min']}", key=key,
                          hint="max bounds the longer side: give max >= min", cls=ParameterError)
    m, f = out["max"], out["factor"]
    if m is not None and f and m + (f - (m - 1) % f) % f - f < 1:     # TF's max, rounded down to 1 mod f
        raise owner.error(f"parameter '{key}': max {out['max']} leaves no size once rounded to a multiple of "
                          f"factor {out['factor']} plus one", key=key,
                          hint="give a larger max, e.g. max: 513 with factor: 16", cls=ParameterError)
    return out
