"""The validate pass: an expanded, phase-filtered netdef checked against the layer schemas.

``validate(doc) -> doc`` (pure: NetDef -> NetDef) sits between phase filtering and
wiring in the compiler's flow (:mod:`deeplab_compile.compiler`).  It checks what each
layer entry says on its own (a unique name, a known type, ``param`` entries, the type's
parameter schema, bottom and top counts, ``loss_weight``) and the net's ``inputs``, and
writes every layer out in full, so that validating twice changes nothing.  Whether
blobs connect is the wiring's to check (:func:`deeplab_compile.compiler.wire`).
"""
from __future__ import annotations

from typing import Any, Mapping

from .graph import Layer
from .layers import registry
from .netdef.errors import Loc, NetDefError, ParameterError, UnknownLayerError, WiringError, did_you_mean
from .netdef.nodes import Map, Seq, loc_of

__all__ = ["validate", "RESERVED_KEYS", "PARAM_SPEC_KEYS", "as_list"]

# Keys of a layer entry that belong to the layer, not to its type's parameter schema.
RESERVED_KEYS = ("name", "type", "bottom", "top", "phase", "param", "loss_weight",
                 "caffe")     # caffe: a prototxt layer's fields with no effect here, kept as written
PARAM_SPEC_KEYS = ("lr_mult", "decay_mult", "name")


def _fits_float(v: int | float) -> bool:
    """Whether ``v`` converts to a float (an integer past 1e308 does not)."""
    try:
        float(v)
    except OverflowError:
        return False
    return True


def as_list(value: Any) -> list:
    """``None`` -> ``[]``, a list or tuple -> a list, anything else -> ``[value]``."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _check_param_entries(node: Any, layer: Layer) -> list:
    """The layer's ``param:`` entries, checked (``lr_mult``/``decay_mult`` numbers >= 0,
    ``name`` a non-empty string)."""
    entries = as_list(node.get("param"))
    for i, entry in enumerate(entries):
        loc = loc_of(node, "param")
        if not isinstance(entry, Mapping):
            raise NetDefError(f"param entry {i} must be a mapping like {{lr_mult: 1, decay_mult: 1}}, got {entry!r}",
                              loc=loc, layer=layer.name, type=layer.type)
        for k in entry:
            if k not in PARAM_SPEC_KEYS:
                raise ParameterError(f"unknown key '{k}' in param entry {i}", loc=loc_of(entry, k) or loc,
                                     layer=layer.name, type=layer.type,
                                     hint=did_you_mean(str(k), PARAM_SPEC_KEYS) or "use lr_mult, decay_mult, name")
        for k in ("lr_mult", "decay_mult"):
            if k in entry:
                v = entry[k]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or not _fits_float(v):
                    raise ParameterError(f"param entry {i}: '{k}' must be a number >= 0, got {v!r}",
                                         loc=loc_of(entry, k) or loc, layer=layer.name, type=layer.type)
        if "name" in entry:
            if not isinstance(entry["name"], str) or not entry["name"]:
                raise ParameterError(f"param entry {i}: 'name' must be a non-empty string",
                                     loc=loc_of(entry, "name") or loc, layer=layer.name, type=layer.type)
    return entries


def _check_inputs(doc: Mapping) -> None:
    inputs = doc.get("inputs") or {}
    if not isinstance(inputs, Mapping):
        raise NetDefError("'inputs' must map blob names to [C, H, W]", loc=loc_of(doc, "inputs"))
    for name, dims in inputs.items():
        dims = as_list(dims)
        if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
            raise NetDefError(f"input '{name}' must be a list of positive integers [C, H, W], got {dims!r}",
                              loc=loc_of(inputs, name), hint="write e.g. data: [3, 321, 321]")


def _validate_layer(node: Any, seen_names: dict[str, Loc | None]) -> Map:
    """One layer entry checked against its type: a known type, ``param`` entries, the
    parameter schema, bottom and top counts, ``loss_weight``.  Returns the entry with
    ``bottom``, ``top``, ``param`` and ``loss_weight`` as lists and its parameters canonical
    (aliases resolved, defaults filled in)."""
    name, type_name = node.get("name"), node.get("type")
    lay = Layer(name=name, type=type_name, bottoms=[str(b) for b in as_list(node.get("bottom"))],
                tops=[str(t) for t in as_list(node.get("top", [name]))], params={},
                loc=loc_of(node), key_locs=dict(getattr(node, "key_locs", {}) or {}))
    if name in seen_names:
        first = seen_names[name]
        raise lay.error(f"duplicate layer name (first defined at {first})" if first else "duplicate layer name",
                        hint="give every layer a unique name", cls=WiringError)
    seen_names[name] = lay.loc
    spec = registry.get(type_name)
    if spec is None:
        hint = did_you_mean(str(type_name), registry.known_types())
        raise lay.error(f"unknown layer type '{type_name}'", key="type",
                        hint=(hint + " " if hint else "") + "known types: " + ", ".join(registry.known_types()),
                        cls=UnknownLayerError)
    if spec.tops == (0, 0) and lay.tops == [name]:
        lay.tops = []       # the default top (the layer's name) of a type that has none
    entries = _check_param_entries(node, lay)
    if len(entries) > len(spec.blobs):
        raise lay.error(f"{len(entries)} param entries given but {type_name} has "
                        f"{len(spec.blobs)} learnable blob(s) ({', '.join(spec.blobs) or 'none'})",
                        key="param", hint="remove the extra param entries", cls=ParameterError)
    raw = {k: v for k, v in node.items() if k not in RESERVED_KEYS}
    if getattr(node, "validated", False):
        # written out in full by an earlier validate: a default it filled in is read as unset
        raw = {k: v for k, v in raw.items() if not (k in spec.params and v == spec.params[k].default)}
    params = spec.validate(lay, raw)
    _check_count(lay, "bottom", len(lay.bottoms), spec.bottoms)
    _check_count(lay, "top", len(lay.tops), spec.tops)

    lw = node.get("loss_weight")
    if lw is None:
        loss_weight = [1.0 if spec.is_loss else 0.0] * len(lay.tops)
    else:
        lws = as_list(lw)
        if len(lws) != len(lay.tops) or not all(isinstance(w, (int, float)) and not isinstance(w, bool)
                                                and _fits_float(w) for w in lws):
            raise lay.error(f"loss_weight must be one number per top ({len(lay.tops)}), got {lw!r}",
                            key="loss_weight", cls=ParameterError)
        loss_weight = [float(w) for w in lws]

    out = Map({k: v for k, v in node.items() if k in RESERVED_KEYS}, loc=lay.loc, key_locs=lay.key_locs,
              value_locs=dict(getattr(node, "value_locs", {}) or {}))
    out.update(bottom=lay.bottoms, top=lay.tops, param=entries, loss_weight=loss_weight, **params)
    out.expanded = getattr(node, "expanded", True)
    out.validated = True
    return out


def validate(doc: Mapping) -> Map:
    """Check an expanded, phase-filtered document against the layer schemas (pure:
    NetDef -> NetDef).

    Each layer must have a unique name and a known type; its ``param`` entries, its
    parameters (each type's schema, :mod:`deeplab_compile.layers`), its bottom and top
    counts and its ``loss_weight`` are checked, and ``inputs`` must give positive sizes.
    The result is the same document with every layer written out in full: ``bottom``,
    ``top`` (the default ``[name]`` filled in), ``param`` and ``loss_weight`` as lists, parameter
    aliases resolved (``hole`` -> ``dilation``), enums lower-cased and defaults filled
    in.  Validating it again changes nothing.  Blob wiring is
    :func:`deeplab_compile.compiler.wire`'s."""
    _check_inputs(doc)
    seen_names: dict[str, Loc | None] = {}
    layers = doc.get("layers")
    checked = Seq((_validate_layer(node, seen_names) for node in as_list(layers)),
                  loc=getattr(layers, "loc", None), item_locs=getattr(layers, "item_locs", None))
    out = Map(doc, loc=getattr(doc, "loc", None), key_locs=getattr(doc, "key_locs", None),
              value_locs=getattr(doc, "value_locs", None))
    out.expanded = getattr(doc, "expanded", True)
    if layers is not None:
        out["layers"] = checked
    return out


def _check_count(lay: Layer, what: str, n: int, bounds: tuple[int, int | None]) -> None:
    lo, hi = bounds
    if n < lo or (hi is not None and n > hi):
        want = f"exactly {lo}" if lo == hi else (f"at least {lo}" if hi is None else f"{lo} to {hi}")
        raise lay.error(f"takes {want} {what}(s), got {n}", key=what,
                        hint=f"fix the '{what}' list", cls=WiringError)
