"""What a layer type is: a parameter schema, a shape rule and a module builder.

Each layer family lives in its own module under ``deeplab_compile/layers`` and defines
one :class:`LayerType` subclass per Caffe type.  ``registry.py`` lists them all
explicitly; nothing registers itself on import.

Contract for a subclass
-----------------------
``type_name``      the Caffe type string, e.g. ``"Convolution"``.
``params``         ``{key: P(...)}``: every parameter the type accepts (flat, no ``*_param``).
``bottoms``/``tops``  ``(min, max)`` counts; ``max=None`` means unbounded.
``blobs``          names of the learnable tensors in Caffe blob order (``("weight", "bias")``);
                   ``param:`` entry *i* of the netdef applies to ``blobs[i]``.
``check(layer)``   cross-parameter validation (raise ``layer.error(...)``).
``shapes(layer, in_shapes) -> out_shapes``  raise ``layer.error(..., cls=ShapeError)``.
``build(layer) -> nn.Module``  called after shapes are known (``layer.in_shapes`` and
                   ``layer.out_shapes`` are set).  ``module(*bottom_tensors)`` returns one
                   tensor, or a tuple with one tensor per top.  Learnable tensors are
                   attributes named as in ``blobs`` (so parameters read ``fc6.weight``);
                   the module is created with the layer's fillers already applied.
``param_shapes(layer) -> {blob: shape}``  the learnable tensors ``build`` would make,
                   from the parameters and ``layer.in_shapes`` alone (nothing is
                   allocated); every type with ``blobs`` overrides it.
``buffer_bytes(layer) -> int``  bytes of the other tensors ``build`` allocates (running
                   statistics, a confusion matrix); default 0.
``flops(layer) -> int``  multiply-adds for the whole batch (convs and inner products only,
                   as counted in the literature); default 0.
``geometry(layer) -> (kernel_extent, stride)``  for receptive-field / output-stride
                   bookkeeping along H (and W); default ``(1, 1)``.  Interp returns a
                   Fraction stride below 1 when it zooms.
Conventions the compiler relies on:
* a module returns a tensor for a layer with one top and a tuple for any other count
  (``()`` for Silence / MatWrite);
* ``build`` returns None for data layers (Input, ImageSegData, MatRead);
* the net's phase is the module's mode: ``train()`` is Caffe's TRAIN (Dropout active,
  BatchNorm without ``use_global_stats`` uses batch statistics), ``eval()`` is TEST;
* global pooling's ``geometry`` gives the bottom's height as the kernel extent, so the
  ordinary receptive-field rule covers the whole input;
* :func:`.testing.make_layer` runs validate -> shapes -> build as the compiler does.
Flags: ``is_data`` (tops become graph inputs, the layer is not in the graph), ``is_loss``
(tops are losses, ``loss_weight`` defaults to 1), ``is_metric`` (tops are train outputs
with weight 0, e.g. SegAccuracy).
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any, ClassVar

from torch import nn

from ..graph import Layer, Shape
from ..netdef.errors import ParameterError, ShapeError
from ..schema import KINDS, REQUIRED, did_you_mean  # noqa: F401  (REQUIRED: re-exported for the layer modules)
from ..schema import P as _SchemaP
from .fillers import check_filler


class P(_SchemaP):
    """Schema of one layer parameter: :class:`deeplab_compile.schema.P` and the kind
    ``filler`` (a ``{type: ..., ...}`` mapping checked by :mod:`.fillers`)."""

    KINDS = KINDS + ("filler",)

    def coerce(self, key: str, value: Any, layer: Layer):
        if self.kind == "filler":
            return check_filler(value, key, layer)
        return super().coerce(key, value, layer)


class LayerType:
    type_name: ClassVar[str] = ""
    params: ClassVar[dict[str, P]] = {}
    bottoms: ClassVar[tuple[int, int | None]] = (1, 1)
    tops: ClassVar[tuple[int, int | None]] = (1, 1)
    blobs: ClassVar[tuple[str, ...]] = ()
    is_data: ClassVar[bool] = False
    is_loss: ClassVar[bool] = False
    is_metric: ClassVar[bool] = False
    doc: ClassVar[str] = ""

    # -- validation -------------------------------------------------------
    def validate(self, layer: Layer, raw: dict[str, Any]) -> dict[str, Any]:
        """Check ``raw`` (the flat parameters from the netdef) against the schema and
        return the parameters with defaults filled in and aliases resolved."""
        alias_of = {a: key for key, p in self.params.items() for a in p.aliases}
        out: dict[str, Any] = {}
        for key, value in raw.items():
            canon = alias_of.get(key, key)
            if canon not in self.params:
                hint = did_you_mean(key, list(self.params) + list(alias_of))
                known = ", ".join(sorted(self.params)) or "none"
                raise layer.error(f"unknown parameter '{key}'", key=key,
                                  hint=hint or f"this type takes: {known}", cls=ParameterError)
            if canon in out:
                raise layer.error(f"parameter '{canon}' given twice (as '{key}' and an alias)",
                                  key=key, hint="keep one of them", cls=ParameterError)
            if canon != key and key in layer.key_locs:
                layer.key_locs.setdefault(canon, layer.key_locs[key])
            out[canon] = self.params[canon].coerce(key, value, layer)
        for key, p in self.params.items():
            if key not in out:
                if p.required:
                    raise layer.error(f"missing required parameter '{key}'",
                                      hint=f"add '{key}: ...' to the layer", cls=ParameterError)
                out[key] = list(p.default) if isinstance(p.default, list) else p.default
        layer.params = out
        self.check(layer)
        return out

    def check(self, layer: Layer) -> None:
        """Cross-parameter checks; override."""

    # -- shapes and building ----------------------------------------------
    def shapes(self, layer: Layer, in_shapes: list[Shape]) -> list[Shape]:
        raise NotImplementedError

    def build(self, layer: Layer) -> nn.Module:
        raise NotImplementedError

    def flops(self, layer: Layer) -> int:
        return 0

    def geometry(self, layer: Layer) -> tuple[int, Fraction | int]:
        return 1, 1

    def param_shapes(self, layer: Layer) -> dict[str, Shape]:
        """Shapes of the learnable tensors ``build`` makes, keyed by ``blobs`` names, from
        the shape rules alone (``layer.in_shapes`` set; nothing is allocated).  Counting
        and the memory check rely on it, so a type with ``blobs`` must override it."""
        if self.blobs:
            raise NotImplementedError(f"{type(self).__name__} has blobs but no param_shapes")
        return {}

    def buffer_bytes(self, layer: Layer) -> int:
        """Bytes of the non-learnable tensors ``build`` allocates; default none."""
        return 0


def positive_size(layer: Layer, shape: Shape, what: str = "output") -> Shape:
    """Raise a ShapeError naming the layer if any dimension of ``shape`` is < 1."""
    if any(d < 1 for d in shape):
        raise layer.error(
            f"{what} shape {'x'.join(map(str, shape))} has a zero or negative size "
            f"(input {' , '.join('x'.join(map(str, s)) for s in layer.in_shapes) or '?'})",
            hint="use a larger input, or a smaller kernel/stride/shrink factor", cls=ShapeError)
    return tuple(shape)
