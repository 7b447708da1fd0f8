"""The compiler driver: netdef text -> expanded NetDef -> IR -> shapes -> torch.fx.

Every step is a plain function of the previous value (DESIGN.md section 2)::

    doc  = load_netdef(path, vars)           # parse + expand (include, templates, repeat, ${})
    doc  = filter_phase(doc, phase)          # drop layers of the other phase
    net  = build_ir(doc, phase)              # registry lookup, parameter schemas, blob wiring
    net  = infer_shapes(net, inputs)         # shape rules, FLOPs, stride and receptive field
    net  = run_passes(net)                   # fold_bn, fuse_aspp (test phase by default; fuse=False skips them)
    gm   = generate(net)                     # torch.fx GraphModule (codegen.py)
"""
from __future__ import annotations

import os
from fractions import Fraction
from typing import Any, Mapping

from .graph import Blob, Layer, Net, ParamSpec, Shape
from .layers import registry
from .netdef import expand as _expand
from .netdef import parse as _parse
from .netdef.errors import (Loc, NetDefError, ParameterError, ShapeError, UnknownLayerError, WiringError,
                            did_you_mean)

# Keys of a layer entry that belong to the layer, not to its type's parameter schema.
RESERVED_KEYS = ("name", "type", "bottom", "top", "phase", "param", "loss_weight",
                 "caffe")     # caffe: a prototxt layer's fields with no effect here, kept as written
PARAM_SPEC_KEYS = ("lr_mult", "decay_mult", "name")
PHASES = ("train", "test")


def _loc(node: Any, key: str | None = None) -> Loc | None:
    if key is not None:
        kl = getattr(node, "key_locs", None)
        if kl and key in kl:
            return kl[key]
    return getattr(node, "loc", None)


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


# --------------------------------------------------------------------------- loading

def load_netdef(source: str | os.PathLike | Mapping, vars: Mapping[str, Any] | None = None) -> Any:
    """Read and expand a netdef (YAML path, prototxt path or an already parsed document)."""
    if isinstance(source, Mapping):
        doc = source
        base = None
    else:
        doc = _parse.load(os.fspath(source))
        base = os.path.dirname(os.path.abspath(os.fspath(source)))
    return _expand.expand(doc, overrides=dict(vars or {}), base_dir=base)


def check_phase(phase: str) -> str:
    p = str(phase).lower()
    if p not in PHASES:
        raise NetDefError(f"unknown phase '{phase}'", hint="use 'train' or 'test'")
    return p


# --------------------------------------------------------------------------- IR

def _param_specs(node: Any, layer: Layer) -> list[ParamSpec]:
    specs = []
    for i, entry in enumerate(_as_list(node.get("param"))):
        loc = _loc(node, "param")
        if not isinstance(entry, Mapping):
            raise NetDefError(f"param entry {i} must be a mapping like {{lr_mult: 1, decay_mult: 1}}, got {entry!r}",
                              loc=loc, layer=layer.name, type=layer.type)
        for k in entry:
            if k not in PARAM_SPEC_KEYS:
                raise ParameterError(f"unknown key '{k}' in param entry {i}", loc=_loc(entry, k) or loc,
                                     layer=layer.name, type=layer.type,
                                     hint=did_you_mean(str(k), PARAM_SPEC_KEYS) or "use lr_mult, decay_mult, name")
        spec = ParamSpec()
        for k in ("lr_mult", "decay_mult"):
            if k in entry:
                v = entry[k]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                    raise ParameterError(f"param entry {i}: '{k}' must be a number >= 0, got {v!r}",
                                         loc=_loc(entry, k) or loc, layer=layer.name, type=layer.type)
                setattr(spec, k, float(v))
        if "name" in entry:
            if not isinstance(entry["name"], str) or not entry["name"]:
                raise ParameterError(f"param entry {i}: 'name' must be a non-empty string",
                                     loc=_loc(entry, "name") or loc, layer=layer.name, type=layer.type)
            spec.name = entry["name"]
        specs.append(spec)
    return specs


def build_ir(doc: Mapping, phase: str, *, source: str | None = None) -> Net:
    """Turn an expanded, phase-filtered document into a :class:`Net`: look up each
    layer type, check its parameters against the schema, and wire blobs in SSA form."""
    phase = check_phase(phase)
    net = Net(name=str(doc.get("name") or "net"), phase=phase, inputs={}, layers=[],
              vars=dict(doc.get("vars") or {}), source=source)
    current: dict[str, str] = {}        # blob name -> current SSA id
    producer_loc: dict[str, tuple[str, Loc | None]] = {}
    consumed: set[str] = set()

    def new_blob(name: str, producer: str | None) -> str:
        bid = name if name not in net.blobs else f"{name}@{producer}"
        n = 1
        while bid in net.blobs:
            n += 1
            bid = f"{name}@{producer}#{n}"
        net.blobs[bid] = Blob(id=bid, name=name, producer=producer)
        current[name] = bid
        return bid

    inputs = doc.get("inputs") or {}
    if not isinstance(inputs, Mapping):
        raise NetDefError("'inputs' must map blob names to [C, H, W]", loc=_loc(doc, "inputs"))
    for name, dims in inputs.items():
        dims = _as_list(dims)
        if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
            raise NetDefError(f"input '{name}' must be a list of positive integers [C, H, W], got {dims!r}",
                              loc=_loc(inputs, name), hint="write e.g. data: [3, 321, 321]")
        net.inputs[name] = (1, *dims)
        net.input_ids[name] = new_blob(name, None)
        producer_loc[name] = ("inputs", _loc(inputs, name))

    seen_names: dict[str, Loc | None] = {}
    for node in _as_list(doc.get("layers")):
        name, type_name = node.get("name"), node.get("type")
        lay = Layer(name=name, type=type_name, bottoms=[str(b) for b in _as_list(node.get("bottom"))],
                    tops=[str(t) for t in _as_list(node.get("top", [name]))], params={},
                    phase=phase, loc=_loc(node), key_locs=dict(getattr(node, "key_locs", {}) or {}))
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
        lay.param_specs = _param_specs(node, lay)
        if len(lay.param_specs) > len(spec.blobs):
            raise lay.error(f"{len(lay.param_specs)} param entries given but {type_name} has "
                            f"{len(spec.blobs)} learnable blob(s) ({', '.join(spec.blobs) or 'none'})",
                            key="param", hint="remove the extra param entries", cls=ParameterError)
        raw = {k: v for k, v in node.items() if k not in RESERVED_KEYS}
        spec.validate(lay, raw)
        _check_count(lay, "bottom", len(lay.bottoms), spec.bottoms)
        _check_count(lay, "top", len(lay.tops), spec.tops)

        default_lw = 1.0 if spec.is_loss else 0.0
        lw = node.get("loss_weight")
        if lw is None:
            lay.loss_weight = [default_lw] * len(lay.tops)
        else:
            lws = _as_list(lw)
            if len(lws) != len(lay.tops) or not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in lws):
                raise lay.error(f"loss_weight must be one number per top ({len(lay.tops)}), got {lw!r}",
                                key="loss_weight", cls=ParameterError)
            lay.loss_weight = [float(w) for w in lws]

        for i, b in enumerate(lay.bottoms):
            if b not in current:
                hint = did_you_mean(b, list(current))
                raise lay.error(f"bottom '{b}' (bottom index {i}) is not produced by any earlier layer",
                                key="bottom", hint=hint or "check the spelling or the layer order; "
                                "in this phase the known blobs are: " + (", ".join(sorted(current)) or "none"),
                                cls=WiringError)
            lay.bottom_ids.append(current[b])
            consumed.add(current[b])
        if spec.is_data:
            lay.bottom_ids = []
        for t in lay.tops:
            if t in current and t not in lay.bottoms:
                who, where = producer_loc[t]
                raise lay.error(f"top '{t}' is already produced by {'the net inputs' if who == 'inputs' else repr(who)}"
                                + (f" ({where})" if where else ""),
                                key="top", hint="rename the top, or make it in-place by listing it as a bottom too",
                                cls=WiringError)
            if lay.tops.count(t) > 1:
                raise lay.error(f"top '{t}' is listed twice", key="top", hint="give each top a unique name",
                                cls=WiringError)
            lay.top_ids.append(new_blob(t, name))
            producer_loc[t] = (name, lay.loc)
        if spec.is_data:
            for t, tid in zip(lay.tops, lay.top_ids):
                net.input_ids[t] = tid
        net.layers.append(lay)

    net.outputs = _outputs(net, doc, consumed, current)
    return net


def _check_count(lay: Layer, what: str, n: int, bounds: tuple[int, int | None]) -> None:
    lo, hi = bounds
    if n < lo or (hi is not None and n > hi):
        want = f"exactly {lo}" if lo == hi else (f"at least {lo}" if hi is None else f"{lo} to {hi}")
        raise lay.error(f"takes {want} {what}(s), got {n}", key=what,
                        hint=f"fix the '{what}' list", cls=WiringError)


def _outputs(net: Net, doc: Mapping, consumed: set[str], current: dict[str, str]) -> list[str]:
    """Blob ids returned by the graph.

    Loss and metric tops are always outputs.  Other outputs are the ``outputs:`` list if
    the netdef has one, otherwise (as in Caffe) every blob no layer consumes.
    """
    outs: list[str] = []
    for lay in net.layers:
        spec = registry.get(lay.type)
        if spec.is_loss or spec.is_metric or any(lay.loss_weight):
            outs += lay.top_ids
    explicit = doc.get("outputs")
    if explicit is not None:
        for name in _as_list(explicit):
            if name not in current:
                raise NetDefError(f"output '{name}' is not a blob of this net in the {net.phase} phase",
                                  loc=_loc(doc, "outputs"), hint=did_you_mean(str(name), list(current)))
            if current[name] not in outs:
                outs.append(current[name])
        return outs
    data_tops = {tid for lay in net.layers if registry.get(lay.type).is_data for tid in lay.top_ids}
    for bid, blob in net.blobs.items():
        if bid not in consumed and bid not in outs and blob.producer is not None and bid not in data_tops:
            outs.append(bid)
    return outs


# --------------------------------------------------------------------------- shapes

def parse_input_overrides(items: Mapping[str, Any] | None) -> dict[str, Shape]:
    """``{"data": "1x3x513x513"}`` or ``{"data": (1, 3, 513, 513)}`` -> shapes."""
    out: dict[str, Shape] = {}
    for name, value in (items or {}).items():
        if isinstance(value, str):
            try:
                dims = tuple(int(v) for v in value.lower().split("x"))
            except ValueError:
                dims = ()
        else:
            dims = tuple(value)
        if len(dims) < 1 or any((not isinstance(d, int)) or d < 1 for d in dims):
            raise NetDefError(f"bad input size for '{name}': {value!r}",
                              hint="write NxCxHxW with positive integers, e.g. data=1x3x513x513")
        out[name] = dims
    return out


def infer_shapes(net: Net, inputs: Mapping[str, Any] | None = None) -> Net:
    """Run every layer's shape rule in order; fill blob shapes, stride and receptive field."""
    overrides = parse_input_overrides(inputs)
    data_tops = {}
    for lay in net.layers:
        spec = registry.get(lay.type)
        if spec.is_data:
            lay.in_shapes = []
            for t, s in zip(lay.tops, spec.shapes(lay, [])):
                data_tops[t] = s
    known = {**{n: s for n, s in net.inputs.items()}, **data_tops}
    unknown = [n for n in overrides if n not in known]
    if unknown:
        raise NetDefError(f"--input names unknown blob '{unknown[0]}'",
                          hint=did_you_mean(unknown[0], list(known)) or
                          "inputs of this net: " + (", ".join(known) or "none"))
    for name, dims in overrides.items():
        old = known[name]
        if len(dims) == len(old) - 1:
            dims = (old[0], *dims)
        if len(dims) != len(old):
            raise NetDefError(f"input '{name}' has {len(old)} axes ({'x'.join(map(str, old))}), "
                              f"got {'x'.join(map(str, dims))}", hint="give N x C x H x W")
        known[name] = tuple(dims)
    for name in net.inputs:
        net.inputs[name] = known[name]
    for name, bid in net.input_ids.items():
        net.blobs[bid].shape = known[name]

    for lay in net.layers:
        spec = registry.get(lay.type)
        if spec.is_data:
            lay.out_shapes = [net.blobs[t].shape for t in lay.top_ids]
            continue
        lay.in_shapes = [net.blobs[b].shape for b in lay.bottom_ids]
        outs = [tuple(int(d) for d in s) for s in spec.shapes(lay, list(lay.in_shapes))]
        if len(outs) != len(lay.top_ids):
            raise RuntimeError(f"shape rule of {lay.type} returned {len(outs)} shapes for {len(lay.top_ids)} tops")
        lay.out_shapes = outs
        for tid, s in zip(lay.top_ids, outs):
            if any(d < 1 for d in s):
                raise lay.error(f"output '{net.blobs[tid].name}' would have shape {'x'.join(map(str, s))}",
                                hint="use a larger input or a smaller kernel, stride or shrink factor",
                                cls=ShapeError)
            net.blobs[tid].shape = s
        _geometry(net, lay, spec)
    return net


def _geometry(net: Net, lay: Layer, spec) -> None:
    ins = [net.blobs[b] for b in lay.bottom_ids]
    if ins:
        stride = max(b.stride for b in ins)
        rf = max(b.rf for b in ins)
    else:
        stride, rf = Fraction(1), 1
    k, s = spec.geometry(lay)
    if k is None:           # global: the window is the whole input
        k = max(lay.in_shapes[0][2:]) if lay.in_shapes and len(lay.in_shapes[0]) > 2 else 1
    rf = rf + (k - 1) * stride
    stride = stride * Fraction(s)
    for t in lay.top_ids:
        net.blobs[t].stride = stride
        net.blobs[t].rf = int(rf)


# --------------------------------------------------------------------------- the whole pipeline

def build_net(source: str | os.PathLike | Mapping, *, phase: str = "test", vars: Mapping[str, Any] | None = None,
              inputs: Mapping[str, Any] | None = None, fuse: bool | None = False) -> Net:
    """Parse, expand, wire and shape a netdef: the IR exactly as the netdef writes it
    (what the zoo tests and the weight importers inspect).  ``fuse=True`` then runs the
    passes (:mod:`deeplab_compile.passes`), and ``fuse=None`` runs them for the test
    phase only, as :func:`compile_net` does by default."""
    src = None if isinstance(source, Mapping) else os.fspath(source)
    return net_from_doc(load_netdef(source, vars), phase=phase, inputs=inputs, fuse=fuse, source=src)


def net_from_doc(doc: Mapping, *, phase: str = "test", inputs: Mapping[str, Any] | None = None,
                 fuse: bool | None = False, source: str | None = None) -> Net:
    """The steps of :func:`build_net` after loading: phase filter, IR, shapes, passes.
    The passes run when ``fuse`` is true, and for ``fuse=None`` in the test phase only
    (inference): a train-phase net is never fused unless asked for."""
    phase = check_phase(phase)
    net = build_ir(_expand.filter_phase(doc, phase), phase, source=source)
    net = infer_shapes(net, inputs)
    if (phase == "test") if fuse is None else fuse:
        from .passes import run_passes
        net = run_passes(net)
    return net


def compile_net(source: str | os.PathLike | Mapping, *, phase: str = "test", vars: Mapping[str, Any] | None = None,
                inputs: Mapping[str, Any] | None = None, fuse: bool | None = None):
    """Compile a netdef into a :class:`deeplab_compile.codegen.CompiledNet` (a torch.fx
    GraphModule).

    Args:
        source: path of a ``.yaml`` netdef (or ``.prototxt``), or an expanded document.
        phase: ``"train"`` (returns losses and metrics, module in train mode) or ``"test"``
            (returns the output blobs, module in eval mode).
        vars: overrides of the netdef's ``vars`` (``{"num_classes": 59}``).
        inputs: input sizes, ``{"data": "1x3x513x513"}`` or ``{"data": (1, 3, 513, 513)}``.
        fuse: whether to run the inference passes (:mod:`deeplab_compile.passes`).  The
            default, ``None``, fuses the test phase and leaves the train phase as the
            netdef wrote it, like ``deeplab-compile`` (``--no-fuse`` there is
            ``fuse=False`` here).  In the test phase ``fold_bn`` folds each BatchNorm that
            uses its running statistics (``use_global_stats`` true or unset; never one
            set to false) and the Scale after it into the convolution, and ``fuse_aspp``
            fuses the v2 ASPP sums and the v3 ASPP head.  The train phase is never
            folded: ``fold_bn`` and the v3 head fusion are inference only and do nothing
            there; only ``fuse=True`` fuses a train-phase net's v2 ASPP sums (whose
            fused ops have a backward).  A fused module whose folded BatchNorm follows
            the module's mode (``use_global_stats`` unset) refuses to run in training
            mode (``net.train()``): compile with ``fuse=False`` or ``phase="train"`` to
            train.  Parameter names and state_dicts are the same either way, so
            checkpoints and caffemodels load into both; ``fuse=False`` gives
            ``gm.net.layers`` exactly as the netdef wrote them, which the exporters
            (``deeplab-compile --emit``) and code that walks the layers need.
    """
    from .codegen import generate
    return generate(build_net(source, phase=phase, vars=vars, inputs=inputs, fuse=fuse))
