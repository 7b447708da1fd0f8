"""IR -> torch.fx GraphModule.

Each layer becomes one ``call_module`` node named after the layer, whose submodule is
also named after the layer, so parameters read ``fc6.weight`` and the generated code
reads like the netdef::

    def forward(self, data):
        conv1_1 = self.conv1_1(data);  data = None
        relu1_1 = self.relu1_1(conv1_1);  conv1_1 = None
        ...
        return {'fc8_interp': fc8_interp}

Caffe's in-place layers rebind a blob name; here the rebound value is simply the node
of the layer that wrote it, so a node name is always a layer name (or a top name for the
extra tops of a multi-top layer) and never collides with another layer.
"""
from __future__ import annotations

import copy
import keyword
import operator
import re
from collections import OrderedDict
from typing import Any

import torch
from torch import fx, nn

from .graph import Net
from .layers import registry
from .netdef.errors import ParameterError, WiringError
from .sizes import check_memory, holders, param_layers  # noqa: F401  (holders, param_layers: re-exported)

_RESERVED_ATTRS = set(dir(nn.Module)) | {"graph", "code", "net", "phase", "loss_weights", "input_names",
                                         "output_names", "param_groups", "param_info"}


def module_name(layer_name: str) -> str:
    """A valid, non-reserved attribute name for a layer (``conv1/bn`` -> ``conv1_bn``)."""
    s = re.sub(r"\W", "_", layer_name)
    if not s or s[0].isdigit():
        s = "_" + s
    if keyword.iskeyword(s) or s in _RESERVED_ATTRS:
        s = s + "_"
    return s


class CompiledNet(fx.GraphModule):
    """A compiled netdef.  Besides being a normal ``nn.Module`` it carries:

    ``net``            the IR it was generated from (layers, blobs, shapes);
    ``phase``          ``"train"`` or ``"test"``;
    ``input_names``    the forward arguments, in order;
    ``output_names``   the keys of the dict ``forward`` returns;
    ``loss_weights``   ``{top: weight}`` for the outputs that count as losses;
    ``param_info``     ``{parameter name: (lr_mult, decay_mult)}``.
    """

    _EXTRA = ("net", "phase", "input_names", "output_names", "loss_weights", "param_info")

    def __deepcopy__(self, memo):
        res = super().__deepcopy__(memo)
        for k in self._EXTRA:
            if k in self.__dict__:
                setattr(res, k, copy.deepcopy(self.__dict__[k], memo))
        return res

    def __reduce__(self):
        # GraphModule pickles its code and rebuilds a plain GraphModule; rebuild ours.
        fn, args = super().__reduce__()
        return _rebuild_compiled, (fn, args, {k: self.__dict__[k] for k in self._EXTRA if k in self.__dict__})

    def param_groups(self, base_lr: float | None = None, weight_decay: float = 0.0) -> list[dict[str, Any]]:
        """Optimizer parameter groups with Caffe's ``lr_mult``/``decay_mult`` semantics.

        One group per distinct ``(lr_mult, decay_mult)``; each group holds ``lr_mult`` and
        ``decay_mult`` and, when ``base_lr`` is given, ``lr = base_lr * lr_mult`` and
        ``weight_decay = weight_decay * decay_mult``.  Parameters with ``lr_mult == 0``
        are frozen (``requires_grad`` is False) and left out.  A parameter shared between
        layers through ``param: [{name: ...}]`` appears once.
        """
        groups: OrderedDict[tuple[float, float], list[nn.Parameter]] = OrderedDict()
        names: OrderedDict[tuple[float, float], list[str]] = OrderedDict()
        for pname, p in self.named_parameters():      # named_parameters() skips duplicates
            lr_mult, decay_mult = self.param_info.get(pname, (1.0, 1.0))
            if lr_mult == 0:
                continue
            groups.setdefault((lr_mult, decay_mult), []).append(p)
            names.setdefault((lr_mult, decay_mult), []).append(pname)
        out = []
        for (lr_mult, decay_mult), params in groups.items():
            g: dict[str, Any] = {"params": params, "lr_mult": lr_mult, "decay_mult": decay_mult,
                                 "param_names": names[(lr_mult, decay_mult)]}
            if base_lr is not None:
                g["lr"] = base_lr * lr_mult
                g["weight_decay"] = weight_decay * decay_mult
            out.append(g)
        return out

    def total_loss(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """``sum(loss_weight * output)`` over the loss outputs, as Caffe's Net::Forward."""
        terms = [w * outputs[k].sum() for k, w in self.loss_weights.items() if w]
        if not terms:
            raise ValueError("this net has no loss outputs (compile it with phase='train')")
        return torch.stack(terms).sum() if len(terms) > 1 else terms[0]


def _rebuild_compiled(fn, args, extras):
    gm = fn(*args)
    out = CompiledNet(gm, gm.graph, class_name=type(gm).__name__)
    for k, v in extras.items():
        setattr(out, k, v)
    out.train(gm.training)
    return out


def _share(root: nn.Module, net: Net) -> dict[str, tuple[float, float]]:
    """Apply ``param`` specs: weight sharing by name, lr_mult 0 freezing.  Returns the
    ``(lr_mult, decay_mult)`` of each parameter by its qualified name."""
    owners: dict[str, tuple[str, str, Any]] = {}    # share name -> (layer, qualified param name, spec)
    info: dict[str, tuple[float, float]] = {}
    for lay in param_layers(net):
        spec = registry.get(lay.type)
        if not spec.blobs or not hasattr(root, module_name(lay.name)):
            continue
        mod = getattr(root, module_name(lay.name))
        for i, blob_name in enumerate(spec.blobs):
            param = getattr(mod, blob_name, None)
            if not isinstance(param, nn.Parameter):
                continue
            ps = lay.param_specs[i] if i < len(lay.param_specs) else None
            lr_mult = ps.lr_mult if ps else 1.0
            decay_mult = ps.decay_mult if ps else 1.0
            qual = f"{module_name(lay.name)}.{blob_name}"
            if ps is not None and ps.name:
                if ps.name in owners:
                    owner_layer, owner_qual, owner_spec = owners[ps.name]
                    owner_param = root.get_parameter(owner_qual)
                    if owner_param.shape != param.shape:
                        raise lay.error(
                            f"shared param '{ps.name}' has shape {tuple(param.shape)} here but "
                            f"{tuple(owner_param.shape)} in layer '{owner_layer}'", key="param",
                            hint="shared parameters must have identical shapes", cls=WiringError)
                    if (lr_mult, decay_mult) != info[owner_qual]:
                        raise lay.error(
                            f"shared param '{ps.name}' has lr_mult/decay_mult {lr_mult:g}/{decay_mult:g} here "
                            f"but {info[owner_qual][0]:g}/{info[owner_qual][1]:g} in layer '{owner_layer}'",
                            key="param", hint="give every user of a shared parameter the same multipliers",
                            cls=ParameterError)
                    setattr(mod, blob_name, owner_param)
                    info[qual] = info[owner_qual]
                    continue
                owners[ps.name] = (lay.name, qual, ps)
            if lr_mult == 0:
                param.requires_grad_(False)
            info[qual] = (lr_mult, decay_mult)
    return info


def io_names(net: Net) -> tuple[list[str], list[str]]:
    """``(input_names, output_names)`` of the module :func:`generate` makes for ``net``:
    the inputs a layer reads or the net returns, and the keys of the dict ``forward``
    returns (a blob name, or its SSA id when an in-place name is returned twice)."""
    consumed = {b for lay in net.layers for b in lay.bottom_ids} | set(net.outputs)
    inputs = [name for name, bid in net.input_ids.items() if bid in consumed]
    outputs: list[str] = []
    taken: set[str] = set()
    for bid in net.outputs:
        key = net.blobs[bid].name
        outputs.append(bid if key in taken else key)
        taken.add(outputs[-1])
    return inputs, outputs


def generate(net: Net, *, max_param_gib: float | None = None) -> CompiledNet:
    """Build the GraphModule for a shaped :class:`Net`.

    First the tensors the modules would hold are sized from the shape rules
    (:func:`deeplab_compile.sizes.check_memory`): over ``max_param_gib`` GiB (default:
    ``$DEEPLAB_MAX_PARAM_GIB``, else 4) it raises a one-line ``SizeError`` before
    anything is allocated."""
    check_memory(net, max_param_gib)
    root = nn.Module()
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}

    taken: dict[str, str] = {}
    for lay in param_layers(net):
        m = module_name(lay.name)
        if m in taken:
            raise lay.error(f"layer names '{taken[m]}' and '{lay.name}' map to the same module name '{m}'",
                            hint="rename one of them", cls=WiringError)
        taken[m] = lay.name

    input_names = io_names(net)[0]
    for name in input_names:
        bid = net.input_ids[name]
        env[bid] = graph.placeholder(module_name(name))

    for lay in net.layers:
        spec = registry.get(lay.type)
        if spec.is_data:
            continue
        mod = spec.build(lay)
        mname = module_name(lay.name)
        root.add_module(mname, mod)
        args = tuple(env[b] for b in lay.bottom_ids)
        if lay.absorbed:
            for h in holders(lay):
                root.add_module(module_name(h.name), registry.get(h.type).build(h))
            args += tuple(graph.get_attr(f"{module_name(owner)}.{attr}") for owner, attr in spec.tensor_refs(lay))
        node = graph.create_node("call_module", mname, args, name=mname)
        if len(lay.top_ids) == 1:
            env[lay.top_ids[0]] = node
        else:
            for i, (top, tid) in enumerate(zip(lay.tops, lay.top_ids)):
                env[tid] = graph.create_node("call_function", operator.getitem, (node, i),
                                             name=module_name(top))

    outputs: dict[str, fx.Node] = {}
    loss_weights: dict[str, float] = {}
    top_weight = {tid: w for lay in net.layers for tid, w in zip(lay.top_ids, lay.loss_weight)}
    for bid, key in zip(net.outputs, io_names(net)[1]):
        outputs[key] = env[bid]
        if top_weight.get(bid):
            loss_weights[key] = top_weight[bid]
    graph.output(outputs)
    graph.lint()

    info = _share(root, net)
    gm = CompiledNet(root, graph, class_name=_class_name(net.name))
    for lay in net.layers:          # GraphModule copies only the attributes get_attr names;
        for h in holders(lay):      # keep whole holder modules so state_dicts stay complete
            setattr(gm, module_name(h.name), getattr(root, module_name(h.name)))
    gm.net = net
    gm.phase = net.phase
    gm.input_names = input_names
    gm.output_names = list(outputs)
    gm.loss_weights = loss_weights
    gm.param_info = info
    gm.train(net.phase == "train")
    return gm


def _class_name(name: str) -> str:
    parts = re.split(r"\W|_", name)
    s = "".join(p[:1].upper() + p[1:] for p in parts if p) or "Net"
    return s if s[0].isalpha() else "Net" + s


def parameter_count(module: nn.Module) -> int:
    """Learnable parameters, each shared tensor counted once (buffers excluded)."""
    return sum(p.numel() for p in module.parameters())

