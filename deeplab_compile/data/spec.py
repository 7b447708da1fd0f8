"""How a compiled net's data layer becomes a data pipeline: the resolved :class:`DataSpec`.

A net gets its data in one of two ways, and both end in the same ``DataSpec``:

* an ``ImageSegData`` layer in the netdef (Caffe style).  The compiler leaves it out of
  the graph and makes its tops (``data``, ``label``, ``data_dim``) graph inputs; its
  parameters (``source``, ``root_folder``, ``crop_size``, ``mean_value``, ...) are the spec.
* ``inputs: {data: [...], label: [...]}`` in the netdef, and a ``data:`` section in the
  solver (or the options of ``deeplab-test``) with the same keys as ImageSegData.  The
  crop defaults to the ``data`` input's H x W.

Keys of a solver ``data:`` section override those of the layer.  A relative ``source``
or ``root_folder`` written in a solver file is relative to that file's folder (both of
them, wherever the command runs).  Besides ImageSegData's
own parameters the runtime takes:

``preprocess``  ``caffe`` (B G R, ``(x - mean_value) * scale``, the default), ``tf``
                (R G B scaled to [-1, 1]: mean 127.5, scale 1/127.5, as TF DeepLab v3+) or
                ``imagenet`` (R G B, torchvision's mean and std per channel: the
                torchvision/timm ImageNet backbones).
``label_map``   ``none``/``voc``, ``cityscapes`` (labelIds -> 19 trainIds), ``ade20k``
                (150 classes, 0 -> 255); see :mod:`deeplab_compile.data.labels`.
``num_classes`` labels must lie in ``[0, num_classes)`` or equal ``ignore_label``; taken
                from the net's loss layer when not given.
``num_workers`` DataLoader worker processes (default 2; 0 loads in the main process).

ImageSegData's ``resize_to_range: {min, max, factor}`` (TF DeepLab's ``--min_resize_value``,
``--max_resize_value``, ``--resize_factor``) resizes every image before the transform, in
both phases; ``deeplab-test`` brings the scores back to the image's own size
(:func:`deeplab_compile.data.transforms.range_size`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from ..errors import Loc
from ..graph import Layer, Net
from ..layers import registry
from ..layers.data import resize_range
from ..netdef.nodes import loc_of
from ..schema import P, did_you_mean
from .errors import DataError
from .labels import LABEL_MAPS
from .transforms import TransformParams

from .preprocess import CAFFE_MEAN_BGR, PRESETS  # noqa: E402,F401  (defined once, with the other presets)

ROLES = ("data", "label", "data_dim")         # ImageSegData's tops, in order

EXTRA_KEYS = ("preprocess", "label_map", "num_classes", "num_workers")


@dataclass
class DataSpec:
    source: str
    root_folder: str = ""
    batch_size: int = 1
    shuffle: bool = False
    rand_skip: int = 0
    new_height: int = 0
    new_width: int = 0
    is_color: bool = True
    label_type: str = "pixel"
    ignore_label: int = 255
    crop_height: int = 0
    crop_width: int = 0
    mirror: bool = False
    mean_value: list[float] = field(default_factory=list)
    scale: float = 1.0
    scale_factors: list[float] = field(default_factory=list)
    resize_to_range: dict = field(default_factory=dict)   # {min, max, factor}, or {} for none
    preprocess: str = "caffe"
    label_map: str = "none"
    num_classes: int | None = None
    num_workers: int = 2
    tops: list[str] = field(default_factory=lambda: ["data", "label"])   # names of the produced blobs
    roles: list[str] = field(default_factory=lambda: ["data", "label"])  # what each top holds: data, label, data_dim
    where: str = ""                   # where the spec came from, for messages

    @property
    def rgb(self) -> bool:
        return self.preprocess in ("tf", "imagenet")

    def transform_params(self, train: bool) -> TransformParams:
        if self.preprocess == "tf":
            mean, scale = (127.5, 127.5, 127.5), 1.0 / 127.5
        elif self.preprocess == "imagenet":          # a scale per channel: 1 / (255 std[c])
            mean, scale = PRESETS["imagenet"].mean, PRESETS["imagenet"].scale
        else:
            mean, scale = tuple(self.mean_value), self.scale
        return TransformParams(crop_height=self.crop_height, crop_width=self.crop_width, mean=mean,
                               scale=scale, mirror=self.mirror, scale_factors=tuple(self.scale_factors),
                               ignore_label=self.ignore_label, train=train)


class _Section:
    """Routes the schema's ``layer.error(...)`` calls to a DataError at the key's file:line."""

    def __init__(self, section: Any, name: str):
        self.section, self.name = section, name

    def error(self, message: str, *, key: str | None = None, hint: str | None = None, cls=None):
        loc = loc_of(self.section, key) if key is not None else loc_of(self.section)
        message = message.replace("parameter '", "key '", 1)
        return DataError(f"{self.name}: {message}", loc=loc, hint=hint)


def check_section(section: Mapping, name: str = "data") -> dict[str, Any]:
    """Validate a ``data:`` section against ImageSegData's schema plus the runtime keys.
    Returns only the keys given (coerced)."""
    schema = registry.get("ImageSegData").params
    extra = {"preprocess": P("enum", "caffe", choices=("caffe", "tf", "imagenet")),
             "label_map": P("enum", "none", choices=LABEL_MAPS),
             "num_classes": P("int", None, min=1),
             "num_workers": P("int", 2, min=0)}
    lay = _Section(section, name)
    out: dict[str, Any] = {}
    for key, value in section.items():
        p = schema.get(key) or extra.get(key)
        if p is None:
            hint = did_you_mean(str(key), list(schema) + list(extra))
            raise lay.error(f"unknown key '{key}'", key=key,
                            hint=hint or "keys: " + ", ".join(sorted(list(schema) + list(extra))))
        out[key] = p.coerce(key, value, lay)
        if key == "resize_to_range":
            out[key] = resize_range(out[key], lay)
    return out


def find_data_layer(net: Net) -> Layer | None:
    for lay in net.layers:
        if lay.type == "ImageSegData":
            return lay
    return None


def net_num_classes(net: Net) -> int | None:
    """The class count: channels of the scores fed to the first loss or accuracy layer."""
    for lay in net.layers:
        if lay.type in ("SoftmaxWithLoss", "SegAccuracy") and lay.in_shapes:
            return int(lay.in_shapes[0][1])
    return None


def resolve_spec(net: Net, phase: str, overrides: Mapping | None = None, *, where: str = "") -> DataSpec:
    """The data spec of ``net`` in ``phase``: its ImageSegData layer's parameters, overridden
    by ``overrides`` (a solver ``data:`` section or command-line options)."""
    given = check_section(overrides or {}, "data") if overrides else {}
    lay = find_data_layer(net)
    params: dict[str, Any] = {}
    if lay is not None:
        params.update({k: v for k, v in lay.params.items() if k in DataSpec.__dataclass_fields__})
        params["crop_height"] = lay.params["crop_height"] or lay.params["crop_size"]
        params["crop_width"] = lay.params["crop_width"] or lay.params["crop_size"]
        tops = list(lay.tops)
        roles = list(ROLES[:len(tops)])          # by position, as DeepLab's three tops
        if not lay.params.get("has_label", True):
            params["label_type"] = "none"
        where = where or (str(lay.loc) if lay.loc else f"layer '{lay.name}'")
    else:
        if "data" not in net.inputs:
            raise DataError(f"net '{net.name}' has neither an ImageSegData layer nor a 'data' input",
                            hint="add an ImageSegData layer, or 'inputs: {data: [3, H, W], label: [1, H, W]}'")
        _, _, h, w = net.inputs["data"]
        params["crop_height"], params["crop_width"] = h, w
        tops = ["data"] + [t for t in ("label", "data_dim") if t in net.inputs]
        roles = list(tops)
    if "crop_size" in given:
        params["crop_height"] = params["crop_width"] = given.pop("crop_size")
    for k in ("crop_height", "crop_width"):
        if given.get(k):
            params[k] = given.pop(k)
        given.pop(k, None)
    for k in ("force_color", "force_gray", "mean_file"):
        v = given.pop(k, None)
        if v and k == "mean_file":
            raise DataError("mean_file (binaryproto) is not supported", hint="give mean_value: [B, G, R]")
    params.update(given)
    if given.get("has_label") is False:        # DeepLab v1's image-only list
        params["label_type"] = "none"
    if "source" not in params or not params["source"]:
        raise DataError("no list file: the data layer or the solver's data section needs 'source'",
                        loc=loc_of(overrides) if overrides else None,
                        hint="add 'source: list/train.txt' (lines of 'image label')")
    spec = DataSpec(**{k: v for k, v in params.items() if k in DataSpec.__dataclass_fields__})
    spec.tops, spec.roles = tops, roles
    spec.resize_to_range = resize_range(spec.resize_to_range, None)     # checked above: fills in the keys
    if spec.resize_to_range and (spec.new_height or spec.new_width):
        key = "resize_to_range" if "resize_to_range" in given else "new_height"
        raise DataError("both 'resize_to_range' and 'new_height'/'new_width' given",
                        loc=loc_of(overrides, key) if overrides and key in given else None,
                        hint="keep one way of resizing the images")
    spec.where = where
    if not spec.crop_height or not spec.crop_width:
        raise DataError("no crop size", hint="give crop_size (or crop_height and crop_width)")
    if spec.preprocess != "caffe" and ("mean_value" in given or "scale" in given):
        raise DataError(f"'preprocess: {spec.preprocess}' fixes mean and scale ("
                        + ("RGB in [-1, 1])" if spec.preprocess == "tf" else "RGB, torchvision's mean and std)"),
                        hint="drop mean_value and scale, or use 'preprocess: caffe'")
    if spec.num_classes is None:
        spec.num_classes = net_num_classes(net)
    # a solver file's relative source and root_folder both name places beside the solver
    for key in ("source", "root_folder"):
        value = getattr(spec, key)
        base = _file_dir(overrides, key) if key in given else None
        if value and base and not os.path.isabs(value):
            setattr(spec, key, os.path.join(base, value))
    return replace(spec)


def _file_dir(section: Mapping | None, key: str) -> str | None:
    """The folder of the file that wrote ``section[key]``, or None (options, ``-D``)."""
    loc = loc_of(section, key) if section is not None else None
    f = loc.file if isinstance(loc, Loc) else None
    if not f or f.startswith(("<", "-D")) or not os.path.isfile(f):
        return None
    return os.path.dirname(os.path.abspath(f))
