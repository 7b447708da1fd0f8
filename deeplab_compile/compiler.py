"""The compiler driver: netdef text -> expanded NetDef -> validated NetDef -> IR -> shapes -> torch.fx.

Every step is a plain function of the previous value (DESIGN.md section 2)::

    doc  = load_netdef(path, vars)           # load (suffix dispatch: YAML or prototxt) + expand
    doc  = filter_phase(doc, phase)          # drop layers of the other phase
    doc  = validate(doc)                     # layer types, parameter schemas, counts, loss weights
    net  = wire(doc, phase)                  # the IR: blobs wired in SSA form, outputs
    net  = infer_shapes(net, inputs)         # shape rules, FLOPs, stride and receptive field (a new Net)
    net  = run_passes(net)                   # fold_bn, fuse_aspp (test phase by default; fuse=False skips them)
    net2 = reshape(net, {"data": ...})       # a copy at other input sizes (before the passes)
    gm   = generate(net)                     # torch.fx GraphModule (codegen.py)

``build_ir`` is ``validate`` then ``wire``; ``build_net`` runs the steps up to the
passes, ``compile_net`` all of them.
"""
from __future__ import annotations

import copy
import os
from fractions import Fraction
from typing import Any, Callable, Mapping

from .graph import Blob, Layer, Net, ParamSpec, Shape
from .layers import registry
from .netdef import expand as _expand
from .netdef import parse as _parse
from .netdef.errors import Loc, NetDefError, ShapeError, WiringError, did_you_mean
from .netdef.nodes import Map, loc_of
from .netdef.search import find_netdef
from .validation import RESERVED_KEYS, as_list, validate

PHASES = ("train", "test")


# --------------------------------------------------------------------------- loading

def _loads_prototxt(text: str, filename: str) -> Map:
    try:
        from .caffe import prototxt  # the Caffe importer, when present
    except ImportError as err:
        if err.name is None or not err.name.startswith("deeplab_compile.caffe"):
            raise
        raise NetDefError("prototxt import is not available in this build",
                          loc=Loc(filename), hint="convert the network to a YAML netdef") from None
    return prototxt.loads(text, filename)


#: Text readers by file suffix; any other suffix is read as YAML.
LOADERS: dict[str, Callable[[str, str], Map]] = {
    ".yaml": _parse.loads,
    ".yml": _parse.loads,
    ".prototxt": _loads_prototxt,
}


def loads(text: str, filename: str = "<string>") -> Map:
    """Parse netdef ``text``; ``filename`` names it in error messages and picks the
    reader by suffix (:data:`LOADERS`: YAML unless it ends in ``.prototxt``)."""
    suffix = os.path.splitext(filename)[1].lower()
    return LOADERS.get(suffix, _parse.loads)(text, filename)


def load(path: str | os.PathLike) -> Map:
    """Read and parse the netdef file at ``path``: a YAML netdef, or a Caffe prototxt
    (new or V1 layer syntax) read into the same document.  A bare name that is no file
    is a zoo netdef (:func:`deeplab_compile.netdef.search.find_netdef`)."""
    name = find_netdef(path)
    return loads(_parse.read_text(name), name)


def load_netdef(source: str | os.PathLike | Mapping, vars: Mapping[str, Any] | None = None) -> Any:
    """Read and expand a netdef (YAML path, prototxt path or an already parsed document)."""
    if isinstance(source, Mapping):
        doc = source
        base = None
    else:
        path = find_netdef(source)
        doc = load(path)
        base = os.path.dirname(os.path.abspath(path))
    return _expand.expand(doc, overrides=dict(vars or {}), base_dir=base)


def check_phase(phase: str) -> str:
    p = str(phase).lower()
    if p not in PHASES:
        raise NetDefError(f"unknown phase '{phase}'", hint="use 'train' or 'test'")
    return p


# --------------------------------------------------------------------------- IR

def wire(doc: Mapping, phase: str, *, source: str | None = None) -> Net:
    """Turn a validated document (:func:`validate`) into a :class:`Net`: one Layer per
    entry, blobs wired in SSA form (an in-place top gets a new blob id), outputs
    picked.  A bottom nobody produced, or a top produced twice, is a WiringError."""
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
    for name, dims in inputs.items():
        net.inputs[name] = (1, *as_list(dims))
        net.input_ids[name] = new_blob(name, None)
        producer_loc[name] = ("inputs", loc_of(inputs, name))

    for node in as_list(doc.get("layers")):
        name = node["name"]
        spec = registry.get(node["type"])
        lay = Layer(name=name, type=node["type"], bottoms=list(node["bottom"]), tops=list(node["top"]),
                    params=copy.deepcopy({k: v for k, v in node.items() if k not in RESERVED_KEYS}),
                    param_specs=[ParamSpec(**{k: (float(v) if k != "name" else v) for k, v in e.items()})
                                 for e in as_list(node.get("param"))],
                    phase=phase, loc=loc_of(node), key_locs=dict(getattr(node, "key_locs", {}) or {}),
                    loss_weight=list(node["loss_weight"]))
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


def build_ir(doc: Mapping, phase: str, *, source: str | None = None) -> Net:
    """An expanded, phase-filtered document -> :class:`Net`: :func:`validate`, then
    :func:`wire`."""
    return wire(validate(doc), phase, source=source)


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
    chosen = set(outs)
    explicit = doc.get("outputs")
    if explicit is not None:
        for name in as_list(explicit):
            if name not in current:
                raise NetDefError(f"output '{name}' is not a blob of this net in the {net.phase} phase",
                                  loc=loc_of(doc, "outputs"), hint=did_you_mean(str(name), list(current)))
            if current[name] not in chosen:
                outs.append(current[name])
                chosen.add(current[name])
        return outs
    data_tops = {tid for lay in net.layers if registry.get(lay.type).is_data for tid in lay.top_ids}
    for bid, blob in net.blobs.items():
        if bid not in consumed and bid not in chosen and blob.producer is not None and bid not in data_tops:
            outs.append(bid)
            chosen.add(bid)
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
    """Run every layer's shape rule in order: a new Net with the blob shapes, the layers'
    in/out shapes, stride and receptive field filled in (``net`` itself is not changed).
    ``inputs`` overrides input sizes (:func:`parse_input_overrides`)."""
    overrides = parse_input_overrides(inputs)
    net = copy.deepcopy(net)
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


def reshape(net: Net, inputs: Mapping[str, Any]) -> Net:
    """A copy of a shaped IR with new input sizes (``{"data": (1, 3, 65, 81)}``, the
    forms of :func:`parse_input_overrides`) and every shape, stride and receptive field
    inferred again; ``net`` is left as it was.  This is how an entry point that has
    compiled a netdef once gets it at another size, without reading the text again.

    Reshape the IR before the passes and run them on the result: a fused layer keeps
    the shapes of the layers it replaced, so a net that went through the passes is
    refused (``ValueError``)."""
    fused = [lay.name for lay in net.layers if lay.fused_from]
    if fused:
        raise ValueError(f"reshape the net before the passes: layer '{fused[0]}' is fused")
    return infer_shapes(net, inputs)          # infer_shapes works on its own copy


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
    try:
        net = wire(validate(_expand.filter_phase(doc, phase)), phase, source=source)
        net = infer_shapes(net, inputs)
    except NetDefError as err:
        _expand.note_call_site(err, doc)       # a layer made by a template: name the call
        raise
    if (phase == "test") if fuse is None else fuse:
        from .passes import run_passes
        net = run_passes(net)
    return net


def compile_net(source: str | os.PathLike | Mapping, *, phase: str = "test", vars: Mapping[str, Any] | None = None,
                inputs: Mapping[str, Any] | None = None, fuse: bool | None = None,
                lower: bool | None = None, max_param_gib: float | None = None):
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
        lower: whether to lower the module (:mod:`deeplab_compile.lower`; the default,
            ``None``, lowers; ``False`` keeps one plain module per layer).  In both phases
            a BatchNorm and the Scale after it run as one ``batch_norm`` call.  In the test
            phase each convolution's weight, with any folded BatchNorm, is reordered once
            for oneDNN and activations stay channels-last; in a fused net a convolution
            also takes the ReLU after it, and the residual sum before that ReLU, as oneDNN
            post-ops.  The modules fall back to the plain ops wherever the fast path would
            differ (CUDA, autograd, autocast, tracing).  Parameter names, state_dicts and
            the names of the blobs that remain are unchanged.
        max_param_gib: the most GiB of tensors building the module may allocate, checked
            from the shape rules before anything is allocated (a one-line ``SizeError``
            over it).  Default: ``$DEEPLAB_MAX_PARAM_GIB``, else 4 (:mod:`deeplab_compile.sizes`).
    """
    from .codegen import generate
    gm = generate(build_net(source, phase=phase, vars=vars, inputs=inputs, fuse=fuse), max_param_gib=max_param_gib)
    return lowered(gm, fuse=fuse, lower=lower)


def lowered(gm, *, fuse: bool | None = None, lower: bool | None = None):
    """``gm`` lowered (in place) unless ``lower`` is false: BatchNorm + Scale as one call
    in both phases, and in the test phase the oneDNN convolutions, with post-op fusion
    when the passes ran (``fuse`` as in :func:`compile_net`).  See :mod:`deeplab_compile.lower`."""
    if lower is False:
        return gm
    from .lower import lower_for_cpu, merge_bn_scale
    merge_bn_scale(gm)
    if gm.phase == "test":
        lower_for_cpu(gm, fuse=(gm.phase == "test") if fuse is None else fuse)
    return gm
