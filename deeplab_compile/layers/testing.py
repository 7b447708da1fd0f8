"""Build one layer exactly as the compiler does: validate, then shapes, then build.

Shared by the compiler driver and the tests::

    layer, mod = make_layer("Pooling", {"pool": "max", "kernel_size": 3, "stride": 2, "pad": 1},
                            [(1, 64, 321, 321)])
    layer.out_shapes  # [(1, 64, 161, 161)]

The module is put in ``train()`` mode for ``phase="train"`` and ``eval()`` otherwise; that
mode is what selects Caffe's phase behaviour (Dropout, BatchNorm without
``use_global_stats``).  Data layers return ``None`` as module.
"""
from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from ..errors import Loc
from ..graph import Layer, Shape
from ..netdef.errors import UnknownLayerError, WiringError, did_you_mean
from . import registry
from .base import LayerType


def _range(lo: int, hi: int | None) -> str:
    if hi is None:
        return f"at least {lo}"
    return f"exactly {lo}" if lo == hi else f"{lo} to {hi}"


def check_counts(spec: LayerType, layer: Layer) -> None:
    """Raise a WiringError if the layer has a number of bottoms or tops its type refuses."""
    for what, got, (lo, hi) in (("bottom", layer.bottoms, spec.bottoms), ("top", layer.tops, spec.tops)):
        if len(got) < lo or (hi is not None and len(got) > hi):
            raise layer.error(f"{len(got)} {what}s given; {spec.type_name} takes {_range(lo, hi)}",
                              hint=f"fix the layer's '{what}' list", cls=WiringError)


def get_spec(type_name: str, layer: Layer | None = None) -> LayerType:
    spec = registry.get(type_name)
    if spec is None:
        hint = did_you_mean(type_name, registry.known_types()) or \
            f"known types: {', '.join(registry.known_types())}"
        if layer is not None:
            raise layer.error(f"unknown layer type '{type_name}'", key="type", hint=hint, cls=UnknownLayerError)
        raise UnknownLayerError(f"unknown layer type '{type_name}'", hint=hint)
    return spec


def make_layer(type_name: str, params: dict[str, Any], in_shapes: Sequence[Shape], *, name: str = "x",
               bottoms: Sequence[str] | None = None, tops: Sequence[str] | None = None,
               phase: str = "test", loc: Loc | None = None,
               key_locs: dict[str, Loc] | None = None) -> tuple[Layer, nn.Module | None]:
    """validate -> shapes -> build for one layer; returns ``(layer, module)``.

    ``bottoms`` default to ``<name>_in<i>``; ``tops`` to ``[name]`` (none for types with no
    tops).  ``loc`` / ``key_locs`` place error messages in a source file."""
    in_shapes = [tuple(s) for s in in_shapes]
    if bottoms is None:
        bottoms = [f"{name}_in{i}" for i in range(len(in_shapes))]
    layer = Layer(name=name, type=type_name, bottoms=list(bottoms), tops=[], params={}, loc=loc,
                  key_locs=dict(key_locs or {}))
    spec = get_spec(type_name, layer)
    if tops is None:
        tops = [] if spec.tops[1] == 0 else [name]
    layer.tops = list(tops)
    check_counts(spec, layer)
    spec.validate(layer, dict(params))
    layer.in_shapes = in_shapes
    layer.out_shapes = [tuple(s) for s in spec.shapes(layer, in_shapes)]
    mod = spec.build(layer)
    if mod is not None:
        mod.train(phase == "train")
    return layer, mod
