"""Caffe prototxt -> netdef document (the same :class:`Map` a YAML netdef parses to).

``loads(text, filename)`` reads a NetParameter in Caffe's text format (both the
``layer { type: "Convolution" }`` syntax and V1's ``layers { type: CONVOLUTION }``) and
returns an unexpanded netdef whose every node carries its prototxt line:col:

* ``name`` -> ``name``; ``input`` + ``input_shape`` / ``input_dim`` -> ``inputs`` (C, H, W:
  the batch dimension is dropped, as a netdef's batch is implied);
* each layer -> a flat layer entry: its ``*_param`` blocks are flattened into the
  layer's own keys with our schema's names (``convolution_param { num_output: 64 }`` ->
  ``num_output: 64``; V1's ``hole`` -> ``dilation``; a ``BlobShape`` -> a list of dims;
  a repeated field given once -> one value); ``include``/``exclude { phase: ... }`` ->
  ``phase``; ``param { name lr_mult decay_mult }`` and V1's ``param``/``blobs_lr``/
  ``weight_decay`` -> ``param: [...]``;
* DeepLab's ``${VAR}`` placeholders stay in the values and are declared as required
  variables (``vars: {DATA_ROOT: ~}``), so ``-D DATA_ROOT=...`` fills them and a missing
  one is an error naming it.  As with DeepLab's ``sed``, a ``-D`` for a variable the file
  does not use is ignored with a note (a near miss of one it uses is an error); a
  placeholder inside a ``#`` comment is not a use;
* fields with no effect here (``strict_dim``, ``blob_share_mode``, ParamSpec
  ``share_mode``) are kept under the layer's ``caffe:`` key, which the compiler ignores;
* an ``Interp`` that resizes the label of a loss or an accuracy gets ``interpolation:
  nearest`` (DeepLab's bilinear label shrink mixes ids where samples fall between pixels,
  as at the MSC nets' 0.75 and 0.5 scales; where they fall on pixels both agree).

A layer type this project does not implement is an :class:`UnknownLayerError` naming
the layer and its type; a parameter block that does not belong to the layer's type is a
:class:`ParameterError`.
"""
from __future__ import annotations

from typing import Any

from ..netdef.errors import (Loc, NetDefSyntaxError, ParameterError, UnknownLayerError,
                             did_you_mean)
from ..netdef.nodes import Map, Seq
from . import proto
from .textformat import Field, Message, is_repeated, parse

__all__ = ["loads", "V1_TYPES", "BLOCKS", "SUPPORTED_TYPES"]

#: V1 layer type enum -> the type name of the current syntax.
V1_TYPES = {
    "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "BIAS_CHANNEL": "BiasChannel", "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution", "DATA": "Data", "DENSE_CRF": "DenseCRF",
    "DOMINANT_CHANNEL": "DominantChannel", "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col", "IMAGE_DATA": "ImageData", "IMAGE_SEG_DATA": "ImageSegData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "INTERP": "Interp",
    "LRN": "LRN", "MAT_READ": "MatRead", "MAT_WRITE": "MatWrite", "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss", "MVN": "MVN", "PADDING": "Padding",
    "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SEG_ACCURACY": "SegAccuracy",
    "SIGMOID": "Sigmoid", "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence", "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split", "SLICE": "Slice", "TANH": "TanH", "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
    # DeepLab v1's later types, and DeepLab v2's V1 DECONVOLUTION
    "UNIQUE_LABEL": "UniqueLabel", "CENSOR_LABEL": "CensorLabel",
    "ADAPTIVE_BIAS_CHANNEL": "AdaptiveBiasChannel", "CHANNEL_AGGREGATOR": "ChannelAggregator",
    "IGNORE_OVERLAY": "IgnoreOverlay", "HISTOGRAM": "Histogram", "RELATIVE_ERROR": "RelativeError",
    "GAIN_CHANNEL": "GainChannel", "ONEHOT": "OneHot", "DECONVOLUTION": "Deconvolution",
}

#: Layer fields of Caffe's schemas that change nothing here; they are kept, as written,
#: under the layer's ``caffe:`` key (which the compiler ignores), so ``--emit yaml`` shows them.
NO_OP_FIELDS = ("strict_dim", "blob_share_mode")

#: The parameter blocks each supported type reads, in the order they are flattened.
BLOCKS: dict[str, tuple[str, ...]] = {
    "Input": ("input_param",),
    "ImageSegData": ("image_data_param", "transform_param"),
    "MatRead": ("mat_read_param",),
    "Convolution": ("convolution_param",),
    "Deconvolution": ("convolution_param",),
    "Pooling": ("pooling_param",),
    "Interp": ("interp_param",),
    "InnerProduct": ("inner_product_param",),
    "BatchNorm": ("batch_norm_param",),
    "Scale": ("scale_param",),
    "Bias": ("bias_param",),
    "ReLU": ("relu_param",),
    "PReLU": ("prelu_param",),
    "Sigmoid": ("sigmoid_param",),
    "TanH": ("tanh_param",),
    "Dropout": ("dropout_param",),
    "Softmax": ("softmax_param",),
    "Eltwise": ("eltwise_param",),
    "Concat": ("concat_param",),
    "Slice": ("slice_param",),
    "Split": (),
    "Crop": ("crop_param",),
    "Flatten": ("flatten_param",),
    "Reshape": ("reshape_param",),
    "Silence": (),
    "SoftmaxWithLoss": ("loss_param", "softmax_param", "softmaxloss_param"),
    "SegAccuracy": ("seg_accuracy_param",),
    "MatWrite": ("mat_write_param",),
    "DenseCRF": ("dense_crf_param",),   # its layer type is registered separately
}
SUPPORTED_TYPES = frozenset(BLOCKS)

# Keys of a layer that are not parameter blocks.
_LAYER_KEYS = {"name", "type", "bottom", "top", "phase", "loss_weight", "param", "blobs",
               "propagate_down", "include", "exclude", "blob_share_mode", "blobs_lr",
               "weight_decay", "strict_dim", "layer"}


def _is_list(fd) -> bool:
    return is_repeated(fd)


class _Builder:
    def __init__(self, filename: str):
        self.filename = filename

    # -- values
    def value(self, f: Field, fd) -> Any:
        """A field's value in netdef form."""
        if f.is_message:
            return self.message_value(f.value)
        return f.value

    def message_value(self, msg: Message) -> Any:
        if msg.descriptor.name == "BlobShape":
            return Seq(msg.values("dim"), loc=msg.loc)
        out = Map(loc=msg.loc)
        for name, items in msg.fields.items():
            fd = msg.descriptor.fields_by_name[name]
            self.put(out, name, items, fd)
        return out

    def put(self, out: Map, key: str, items: list[Field], fd) -> None:
        values = [self.value(f, fd) for f in items]
        if _is_list(fd) and len(values) != 1:
            value: Any = Seq(values, loc=items[0].loc, item_locs=[f.value_loc for f in items],
                             value_locs=[(f.value_loc, f.content_loc) for f in items])
        else:
            value = values[0]
        out[key] = value
        out.key_locs[key] = items[0].loc
        out.value_locs[key] = (items[0].value_loc, items[0].content_loc)

    # -- layers
    def layer(self, msg: Message, v1: bool, index: int) -> Map:
        out = Map(loc=msg.loc)
        name_f, type_f = msg.first("name"), msg.first("type")
        if name_f is None:
            raise NetDefSyntaxError(f"layer #{index + 1} has no name", loc=msg.loc,
                                    hint='add name: "..." to the layer')
        name = name_f.value
        if type_f is None:
            raise ParameterError("the layer has no type", loc=msg.loc, layer=name,
                                 hint='add type: "Convolution" (or the type you mean)')
        caffe_type = type_f.value
        ltype = V1_TYPES.get(caffe_type, caffe_type) if v1 else caffe_type
        if ltype not in SUPPORTED_TYPES:
            from ..layers import registry
            if registry.get(ltype) is None:
                hint = did_you_mean(ltype, sorted(SUPPORTED_TYPES))
                raise UnknownLayerError(
                    f"layer type '{caffe_type}' is not implemented by deeplab-compile",
                    loc=type_f.value_loc, layer=name, type=caffe_type,
                    hint=hint or "remove the layer or replace it with supported layers; supported "
                                 "Caffe types: " + ", ".join(sorted(SUPPORTED_TYPES)))
        err_ctx = {"layer": name, "type": ltype}

        def put_plain(key: str, caffe_key: str | None = None, as_list: bool = False) -> None:
            items = msg.fields.get(caffe_key or key)
            if not items:
                return
            values = [f.value for f in items]
            out[key] = Seq(values, loc=items[0].loc, item_locs=[f.value_loc for f in items],
                           value_locs=[(f.value_loc, f.content_loc) for f in items]) \
                if (as_list or len(values) != 1) else values[0]
            out.key_locs[key] = items[0].loc
            out.value_locs[key] = (items[0].value_loc, items[0].content_loc)

        out["name"] = name
        out.key_locs["name"] = name_f.loc
        out.value_locs["name"] = (name_f.value_loc, name_f.content_loc)
        out["type"] = ltype
        out.key_locs["type"] = type_f.loc
        put_plain("bottom", as_list=True)
        put_plain("top", as_list=True)
        if "top" not in out:
            # Caffe gives a loss layer an automatic top (here: the layer's name, the
            # netdef default); any other layer without a top has none.
            from ..layers import registry
            spec = registry.get(ltype)
            if spec is not None and spec.tops[0] == 0:
                out["top"] = Seq([], loc=msg.loc)
        phase = self.phase(msg, name, ltype)
        if phase is not None:
            out["phase"] = phase
            out.key_locs["phase"] = (msg.first("include") or msg.first("exclude")).loc
        params = self.params(msg, v1, name, ltype)
        if params is not None:
            out["param"] = params
            out.key_locs["param"] = params.loc
        put_plain("loss_weight")
        noop = self.no_ops(msg)
        if noop is not None:
            out["caffe"] = noop
            out.key_locs["caffe"] = noop.loc
        if v1 and msg.first("layer") is not None:
            raise ParameterError("a V0 layer ('layer' inside 'layers') is not read", loc=msg.first("layer").loc,
                                 hint="upgrade the file with Caffe's upgrade_net_proto_text", **err_ctx)

        for key in ("blobs", "propagate_down", "phase"):
            f = msg.first(key)
            if f is not None:
                what = {"blobs": ("weights inside a prototxt are not read",
                                  "keep weights in a .caffemodel and load them with deeplab-convert"),
                        "propagate_down": ("'propagate_down' is not supported",
                                           "remove it; gradients flow to every bottom"),
                        "phase": ("a layer's own 'phase' field is set by Caffe at run time",
                                  "use include { phase: TRAIN } to keep a layer in one phase")}[key]
                raise ParameterError(what[0], loc=f.loc, hint=what[1], **err_ctx)

        allowed = BLOCKS.get(ltype)
        flat_from: dict[str, Field] = {}
        for block, items in msg.fields.items():
            if block in _LAYER_KEYS:
                continue
            f = items[0]
            if allowed is not None and block not in allowed:
                reads = ", ".join(allowed) if allowed else "no parameter block"
                raise ParameterError(f"'{block}' does not apply to {ltype} layers", loc=f.loc,
                                     hint=f"remove it; {ltype} reads {reads}", **err_ctx)
            self.flatten(out, block, f.value, flat_from, err_ctx, ltype)
        return out

    def no_ops(self, msg: Message) -> Map | None:
        """``strict_dim``, ``blob_share_mode`` and ParamSpec ``share_mode``, as written."""
        out = Map(loc=msg.loc)
        for key in NO_OP_FIELDS:
            items = msg.fields.get(key)
            if items:
                fd = msg.descriptor.fields_by_name[key]
                self.put(out, key, items, fd)
        modes = [f.value.first("share_mode") for f in msg.fields.get("param", []) if f.is_message]
        if any(m is not None for m in modes):
            out["share_mode"] = Seq([m.value if m is not None else None for m in modes], loc=msg.loc)
            out.key_locs["share_mode"] = next(m for m in modes if m is not None).loc
        if not out:
            return None
        out.loc = next(iter(out.key_locs.values()))
        return out

    def phase(self, msg: Message, name: str, ltype: str) -> str | None:
        inc, exc = msg.fields.get("include", []), msg.fields.get("exclude", [])
        if inc and exc:
            raise ParameterError("both 'include' and 'exclude' rules", loc=exc[0].loc, layer=name,
                                 type=ltype, hint="specify either include or exclude rules, not both")
        phases: set[str] = set()
        for f in inc + exc:
            rule: Message = f.value
            extra = [k for k in rule.fields if k != "phase"]
            if extra:
                raise ParameterError(f"'{extra[0]}' in an {f.name} rule is not supported",
                                     loc=rule.first(extra[0]).loc, layer=name, type=ltype,
                                     hint="only phase rules are supported: include { phase: TRAIN }")
            if "phase" not in rule.fields:
                if exc:
                    raise ParameterError("an exclude rule without a phase drops the layer always",
                                         loc=f.loc, layer=name, type=ltype,
                                         hint="remove the layer, or give the rule a phase")
                return None          # an include rule matching every phase
            phases.add(rule.get("phase"))
        if not phases:
            return None
        if exc:
            phases = {"TRAIN", "TEST"} - phases
            if not phases:
                raise ParameterError("the exclude rules drop the layer in both phases",
                                     loc=exc[0].loc, layer=name, type=ltype, hint="remove the layer")
        return phases.pop().lower() if len(phases) == 1 else None

    def params(self, msg: Message, v1: bool, name: str, ltype: str) -> Seq | None:
        if not v1:
            items = msg.fields.get("param")
            if not items:
                return None
            out = Seq(loc=items[0].loc)
            for f in items:
                spec = Map(loc=f.value_loc)
                for key in ("name", "lr_mult", "decay_mult"):     # share_mode: no effect here
                    sub = f.value.first(key)
                    if sub is not None:
                        spec[key] = sub.value
                        spec.key_locs[key] = sub.loc
                        spec.value_locs[key] = (sub.value_loc, sub.content_loc)
                out.append(spec)
                out.item_locs.append(f.loc)
            return out
        names = msg.fields.get("param", [])
        lrs = msg.fields.get("blobs_lr", [])
        decays = msg.fields.get("weight_decay", [])
        n = max(len(names), len(lrs), len(decays))
        if n == 0:
            return None
        first = (names or lrs or decays)[0]
        out = Seq(loc=first.loc)
        for i in range(n):
            spec = Map(loc=first.loc)
            for key, src in (("name", names), ("lr_mult", lrs), ("decay_mult", decays)):
                if i < len(src):
                    spec[key] = src[i].value
                    spec.key_locs[key] = src[i].loc
                    spec.value_locs[key] = (src[i].value_loc, src[i].content_loc)
            out.append(spec)
            out.item_locs.append(first.loc)
        return out

    def flatten(self, out: Map, block: str, msg: Message, flat_from: dict, err_ctx: dict,
                ltype: str) -> None:
        fields = dict(msg.fields)
        desc = msg.descriptor
        if desc.name in ("V1ConvolutionParameter", "ConvolutionParameter"):
            self.holes(fields, out, flat_from, err_ctx)
        if block == "softmaxloss_param":
            if "weight_source" in fields:
                raise ParameterError("'weight_source' (class weights) is not supported",
                                     loc=fields["weight_source"][0].loc,
                                     hint="remove it", **err_ctx)
            labels = fields.get("ignore_label", [])
            if len(labels) > 1:
                raise ParameterError("SoftmaxWithLoss ignores one label; more are given",
                                     loc=labels[1].loc, hint="keep one ignore_label", **err_ctx)
        if block == "input_param" and "shape" in fields:
            items = fields.pop("shape")
            shapes = [self.message_value(f.value) for f in items]
            self.claim(out, "shape", items[0], Seq(shapes, loc=items[0].loc) if len(shapes) > 1
                       else shapes[0], flat_from, err_ctx)
        for key, items in fields.items():
            fd = desc.fields_by_name[key]
            values = [self.value(f, fd) for f in items]
            value = values[0] if (not _is_list(fd) or len(values) == 1) else Seq(
                values, loc=items[0].loc, item_locs=[f.value_loc for f in items],
                value_locs=[(f.value_loc, f.content_loc) for f in items])
            self.claim(out, key, items[0], value, flat_from, err_ctx)

    def holes(self, fields: dict, out: Map, flat_from: dict, err_ctx: dict) -> None:
        """V1's ``hole`` / ``hole_h`` / ``hole_w`` -> ``dilation``."""
        hole, hh, hw = (fields.pop(k, None) for k in ("hole", "hole_h", "hole_w"))
        if hole is None and hh is None and hw is None:
            return
        if hole is not None and (hh or hw):
            bad = (hh or hw)[0]
            raise ParameterError("'hole' and 'hole_h'/'hole_w' both given", loc=bad.loc,
                                 hint="use either hole or hole_h and hole_w", **err_ctx)
        if hole is not None:
            self.claim(out, "dilation", hole[0], hole[0].value, flat_from, err_ctx)
            return
        h = hh[0].value if hh else 1
        w = hw[0].value if hw else 1
        first = (hh or hw)[0]
        self.claim(out, "dilation", first, Seq([h, w], loc=first.loc), flat_from, err_ctx)

    def claim(self, out: Map, key: str, f: Field, value: Any, flat_from: dict, err_ctx: dict) -> None:
        if key in flat_from:
            prev = flat_from[key]
            raise ParameterError(f"'{key}' is given twice (also at line {prev.loc.line})", loc=f.loc,
                                 hint="keep one of them", **err_ctx)
        if key in out:
            raise ParameterError(f"parameter '{key}' clashes with the layer's own '{key}'",
                                 loc=f.loc, hint="remove it from the parameter block", **err_ctx)
        flat_from[key] = f
        out[key] = value
        out.key_locs[key] = f.loc
        out.value_locs[key] = (f.value_loc, f.content_loc)

    # -- the net
    def inputs(self, net: Message) -> Map | None:
        names = net.fields.get("input", [])
        shapes = net.fields.get("input_shape", [])
        dims = net.fields.get("input_dim", [])
        if not names:
            if shapes or dims:
                f = (shapes or dims)[0]
                raise NetDefSyntaxError(f"'{f.name}' without 'input'", loc=f.loc,
                                        hint='name the inputs: input: "data"')
            return None
        out = Map(loc=names[0].loc)
        if shapes and dims:
            raise NetDefSyntaxError("both 'input_shape' and 'input_dim' given", loc=dims[0].loc,
                                    hint="use one of them")
        if shapes:
            if len(shapes) != len(names):
                raise NetDefSyntaxError(f"{len(names)} inputs but {len(shapes)} input_shape blocks",
                                        loc=shapes[0].loc, hint="give one input_shape per input")
            per = [(f.value.values("dim"), f) for f in shapes]
        elif dims:
            if len(dims) != 4 * len(names):
                raise NetDefSyntaxError(f"{len(names)} inputs need {4 * len(names)} input_dim values, "
                                        f"got {len(dims)}", loc=dims[0].loc,
                                        hint="give N, C, H, W for each input")
            per = [([f.value for f in dims[4 * i:4 * i + 4]], dims[4 * i]) for i in range(len(names))]
        else:
            raise NetDefSyntaxError("inputs without a shape", loc=names[0].loc,
                                    hint="add input_shape { dim: 1 dim: 3 dim: 321 dim: 321 }")
        for f, (shape, where) in zip(names, per):
            if len(shape) < 2:
                raise NetDefSyntaxError(f"input '{f.value}' has {len(shape)} dims", loc=where.loc,
                                        hint="give N, C, H, W")
            out[f.value] = Seq(shape[1:], loc=where.loc)     # the batch is implied
            out.key_locs[f.value] = f.loc
            out.value_locs[f.value] = (where.value_loc, None)
        return out


def loads(text: str, filename: str = "<string>.prototxt") -> Map:
    """Read a Caffe NetParameter prototxt into an unexpanded netdef document."""
    net, placeholders = parse(text, filename, proto.descriptor("NetParameter"))
    b = _Builder(filename)
    doc = Map(loc=Loc(filename, 1, 1))
    doc.sed_vars = True     # -D as DeepLab's sed: names the file does not use are ignored
    name = net.first("name")
    if name is not None:
        doc["name"] = name.value
        doc.key_locs["name"] = name.loc
        doc.value_locs["name"] = (name.value_loc, name.content_loc)
    if placeholders:
        variables = Map(loc=next(iter(placeholders.values())))
        for var, where in placeholders.items():
            variables[var] = None           # required: -D VAR=value
            variables.key_locs[var] = where
        doc["vars"] = variables
        doc.key_locs["vars"] = variables.loc
    inputs = b.inputs(net)
    if inputs is not None:
        doc["inputs"] = inputs
        doc.key_locs["inputs"] = inputs.loc
    new, old = net.fields.get("layer", []), net.fields.get("layers", [])
    if new and old:
        raise NetDefSyntaxError("the net mixes 'layer' and V1 'layers' entries", loc=old[0].loc,
                                hint="use one syntax (Caffe's upgrade_net_proto_text converts V1)")
    items = new or old
    layers = Seq(loc=items[0].loc if items else doc.loc)
    for i, f in enumerate(items):
        layers.append(b.layer(f.value, bool(old), i))
        layers.item_locs.append(f.loc)
    _shrink_labels_by_nearest(layers)
    doc["layers"] = layers
    doc.key_locs["layers"] = layers.loc
    return doc


# Layers whose second bottom is a label map.
LABEL_CONSUMERS = ("SoftmaxWithLoss", "SegAccuracy", "Accuracy")


def _names(value: Any) -> list:
    return list(value) if isinstance(value, list) else [value] if value is not None else []


def _shrink_labels_by_nearest(layers: Seq) -> None:
    """An Interp whose top is the label of a loss or an accuracy takes ``interpolation:
    nearest``.  DeepLab's prototxts shrink labels with its bilinear Interp: at stride 8 on
    8k+1 crops every sample falls on a pixel and both agree, but the 0.75 and 0.5 scales
    of the MSC nets sample between pixels, where bilinear mixes 255 (ignore) and class
    ids into ids that are neither (Caffe only DCHECKs them).  ``--emit yaml`` shows it."""
    labels = {b for layer in layers if isinstance(layer, Map) and layer.get("type") in LABEL_CONSUMERS
              for b in _names(layer.get("bottom"))[1:2]}
    for layer in layers:
        if (isinstance(layer, Map) and layer.get("type") == "Interp" and "interpolation" not in layer
                and set(_names(layer.get("top"))) & labels):
            layer["interpolation"] = "nearest"
            layer.key_locs["interpolation"] = layer.key_locs.get("type", layer.loc)
