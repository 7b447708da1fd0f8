"""CPU inference lowering of a generated module: oneDNN fused convolutions.

A rewrite of the torch.fx graph :func:`deeplab_compile.codegen.generate` made (not of
the IR: ``gm.net`` and the layer table stay as the passes left them).  Each convolution
unit (``Convolution``, or ``ConvolutionBN`` from ``fold_bn``) becomes a
:class:`PackedConv` that computes, in one oneDNN call, what the nodes it replaces did:

    conv [+ BN + Scale folded] -> ReLU                      "relu" post-op
    conv [+ BN + Scale folded] -> Eltwise SUM (+ x) -> ReLU  "add" + "relu" post-ops
    ConvSum (fuse_aspp's 1x1 conv sum) -> ReLU               two calls, the second adds the first
    ASPPHead (fuse_aspp's v3 head)                           a call per branch (+ReLU), then a 1x1
                                                             call per branch's projection slice, each
                                                             adding the sum so far, the last +ReLU

(in a net compiled with ``fuse=False`` only the weights and layout, one node per layer);
the graph asks for the post-ops (``other=``, ``relu=True``), so a module called on its
own is still the layer it is named after.  Each convolution's folded weight is reordered
once into oneDNN's blocked layout and kept until one of
the tensors it was made from changes (``load_state_dict``, ``load_weights``, an
optimizer step: every in-place write bumps a tensor's version), and activations kept
channels-last (NHWC, oneDNN's native layout), so no call reorders its input or output.
This is what ``torch.compile``'s CPU backend does with frozen weights (the same
``mkldnn._convolution_pointwise`` ops), without its compile time.

The fast path runs only where it computes what the plain modules would (up to float
rounding, as any other convolution algorithm): a
float32 CPU input, no autograd graph to record (``torch.no_grad()``/inference mode, or
parameters without ``requires_grad``), no autocast, outside ``torch.compile`` tracing,
and oneDNN enabled.  Anywhere else (CUDA, training, bf16 autocast) the module runs the
plain ops it replaced: fold, ``F.conv2d``, add, ReLU.

Node names are kept: the fused node takes the name of the last node it replaced (the
ReLU's), so an intermediate blob is found under the same name as before.  Parameter
names and state_dicts are unchanged (the new module holds the same ``weight``/``bias``
tensors under the same module name).  The outputs are returned contiguous (NCHW).

:func:`merge_bn_scale` is the one rewrite for both phases: a BatchNorm and the Scale
after it become one ``batch_norm`` call with the Scale's weight and bias (train phase,
and test nets compiled with ``fuse=False``).
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import fx, nn

from .layers._units import Folding, fold
from .layers.aspp import ASPPHeadModule, ConvSumModule
from .layers.batch_norm import CaffeBatchNorm
from .layers.conv_bn import FoldedConv2d
from .layers.eltwise import CaffeEltwise
from .layers.interp import CaffeInterp
from .layers.scale import CaffeScale

_CL = torch.channels_last
_1X1 = ([0, 0], [1, 1], [1, 1], 1)      # padding, stride, dilation, groups of a 1x1 convolution


def fast_path_ok(x: torch.Tensor, tensors) -> bool:
    """Whether the oneDNN path computes what the plain ops would (module docstring)."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 4:
        return False
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False
    if (torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting()
            or torch.onnx.is_in_onnx_export() or torch.is_autocast_enabled("cpu")):
        return False
    return not (torch.is_grad_enabled() and (x.requires_grad or any(t.requires_grad for t in tensors)))


def _version_key(tensors) -> tuple:
    return tuple((t.data_ptr(), t._version, tuple(t.shape)) for t in tensors)


class _Packed:
    """One unit's folded, reordered weight and its bias, with the key they were made for."""

    __slots__ = ("key", "weight", "bias")

    def __init__(self):
        self.key, self.weight, self.bias = None, None, None

    def __reduce__(self):          # copies and pickles start empty: the cache is remade on use
        return _Packed, ()

    def get(self, meta, tensors, geom, x):
        key = _version_key(tensors)
        if key != self.key:
            pad, stride, dil, groups = geom
            with torch.inference_mode(False), torch.no_grad():
                w, b = fold(meta, iter(tensors))
                w = w.contiguous()
                self.weight = torch.ops.mkldnn._reorder_convolution_weight(w, pad, stride, dil, groups,
                                                                          list(x.shape))
                self.bias = None if b is None else b.contiguous()
            self.key = key
        return self.weight, self.bias


def _conv_call(x, other, w, b, geom, relu: bool):
    pad, stride, dil, groups = geom
    x = x.contiguous(memory_format=_CL)
    if other is None:
        return torch.ops.mkldnn._convolution_pointwise(x, w, b, pad, stride, dil, groups,
                                                       "relu" if relu else "none", [], "")
    return torch.ops.mkldnn._convolution_pointwise.binary(
        x, other.contiguous(memory_format=_CL), w, b, pad, stride, dil, groups, "add", None,
        "relu" if relu else None, [], "")


def _plain(x, other, w, b, geom, relu: bool):
    pad, stride, dil, groups = geom
    y = F.conv2d(x, w, b, stride, pad, dil, groups)
    if other is not None:
        y = y + other
    return F.relu(y) if relu else y


class PackedConv(Folding):
    """A convolution unit (see the module docstring).  ``forward(x, *unit tensors,
    other=None, relu=False)``: ``other`` is added, then the ReLU applied, as oneDNN
    post-ops; the graph passes them where it fused those layers, so called on its own the
    module is the layer it replaced."""

    def __init__(self, conv: nn.Module):
        super().__init__(getattr(conv, "mode_bn", None))
        self.weight = conv.weight
        self.bias = conv.bias
        if isinstance(conv, FoldedConv2d):
            self.meta = conv.meta
        else:
            self.meta = (conv.bias is not None, None, False, False)
        self.stride, self.padding = _pair(conv.stride), _pair(conv.padding)
        self.dilation, self.groups = _pair(conv.dilation), conv.groups
        self.geom = (list(self.padding), list(self.stride), list(self.dilation), self.groups)
        self._packed = _Packed()
        self.train(conv.training)

    def extra_repr(self) -> str:
        w = self.weight
        return (f"{w.shape[1] * self.geom[3]}, {w.shape[0]}, kernel_size={tuple(w.shape[2:])}, padding={self.geom[0]}, "
                f"stride={self.geom[1]}, dilation={self.geom[2]}, groups={self.geom[3]}, folded={self.meta}")

    def forward(self, x: torch.Tensor, *tensors: torch.Tensor, other: torch.Tensor | None = None,
                relu: bool = False) -> torch.Tensor:
        self.check_eval()
        own = [self.weight] + ([self.bias] if self.bias is not None else [])
        ts = own + list(tensors)
        # a wrong channel count takes the plain path, for torch's error message rather than oneDNN's
        if fast_path_ok(x, ts) and x.shape[1] == self.weight.shape[1] * self.groups:
            w, b = self._packed.get(self.meta, ts, self.geom, x)
            return _conv_call(x, other, w, b, self.geom, relu)
        w, b = fold(self.meta, iter(ts))
        return _plain(x, other, w, b, self.geom, relu)


def _unit_starts(metas) -> list[int]:
    """Where each unit's tensors start among a fused module's tensor arguments (and the end)."""
    counts = [1 + m[0] + 2 * (m[1] is not None) + m[2] + m[3] for m in metas]
    return [sum(counts[:k]) for k in range(len(counts) + 1)]


class PackedASPPHead(ASPPHeadModule):
    """``fuse_aspp``'s DeepLab v3 head (:class:`~.layers.aspp.ASPPHeadModule`, the same
    arguments and result) as oneDNN calls on reordered weights: each branch's convolution
    with its BatchNorm folded and its ReLU as a post-op; then the projection as one 1x1
    call per branch on that branch's slice of the (folded) projection weight, each adding
    the sum so far as a post-op, the last one applying the output ReLU.  The image-pooling
    branch and the projection's bias are a per-image constant, computed first and added by
    the first projection call; the concat is never built.  Off the fast path it is the
    module it replaced."""

    def __init__(self, mod: ASPPHeadModule):
        super().__init__(kinds=mod.kinds, rates=mod.rates, channels=mod.channels, metas=mod.metas,
                         relu_out=mod.relu_out, mode_bn=mod.mode_bn)
        self._cache = _Packed()          # key, then _pack's (branches, pool, proj_bias) in ``weight``
        self.train(mod.training)

    def _pack(self, tensors, x):
        """(branches, pool, proj_bias): each convolution branch as (weight, bias, geometry,
        projection slice), both weights reordered; pool as ``head_args`` gives it (weight,
        bias, projection slice; None without one)."""
        branches = []
        with torch.inference_mode(False), torch.no_grad():
            ws, bs, rates, projs, pw, pb, pp, proj_bias = self.head_args(tensors)
            for w, b, rate, s in zip(ws, bs, rates, projs):
                r = int(rate) if w.shape[-1] > 1 else 1
                geom = ([r * (w.shape[-1] - 1) // 2] * 2, [1, 1], [r, r], 1)
                wr = torch.ops.mkldnn._reorder_convolution_weight(w.contiguous(), *geom, list(x.shape))
                h = [x.shape[0], w.shape[0], x.shape[2], x.shape[3]]
                pr = torch.ops.mkldnn._reorder_convolution_weight(s.contiguous()[:, :, None, None], *_1X1, h)
                branches.append((wr, b.contiguous(), geom, pr))
        return branches, (None if pw is None else (pw, pb, pp)), proj_bias.contiguous()

    def forward(self, x: torch.Tensor, *tensors: torch.Tensor) -> torch.Tensor:
        self.check_eval()
        if not (fast_path_ok(x, tensors) and "conv" in self.kinds):
            return super().forward(x, *tensors)
        key = _version_key(tensors)
        if key != self._cache.key:
            self._cache.weight, self._cache.key = self._pack(tensors, x), key
        branches, pool, pb = self._cache.weight
        x = x.contiguous(memory_format=_CL)
        y, bias = None, pb
        if pool is not None:
            pw, pbias, ps = pool
            feat = F.relu(F.linear(x.mean((2, 3)), pw, pbias))
            const = F.linear(feat, ps, pb)                      # (N, Co): pooling branch + projection bias
            y = const[:, :, None, None].expand(x.shape[0], const.shape[1], x.shape[2], x.shape[3])
            y, bias = y.contiguous(memory_format=_CL), None
        for k, (w, b, geom, pr) in enumerate(branches):
            hk = _conv_call(x, None, w, b, geom, True)
            last = k == len(branches) - 1
            y = _conv_call(hk, y, pr, bias, _1X1, self.relu_out and last)
            bias = None
        return y


class PackedConvSum(Folding):
    """``fuse_aspp``'s ConvSum (a sum of 1x1 convolutions, one per input), ``relu=True``
    with the ReLU after it: each 1x1 convolution one oneDNN call, each later one adding
    the sum so far as a post-op, the last one applying the ReLU."""

    def __init__(self, mod: ConvSumModule):
        super().__init__(mod.mode_bn)
        self.metas = list(mod.metas)
        self._packed = [_Packed() for _ in self.metas]
        self._starts = _unit_starts(self.metas)      # after the inputs
        self.train(mod.training)

    def extra_repr(self) -> str:
        return f"inputs={len(self.metas)}"

    def forward(self, *args: torch.Tensor, relu: bool = False) -> torch.Tensor:
        self.check_eval()
        xs, rest = args[:len(self.metas)], list(args[len(self.metas):])
        units = [rest[a:b] for a, b in zip(self._starts, self._starts[1:])]
        fast = all(fast_path_ok(x, rest) for x in xs)
        y = None
        for k, (x, m, ts) in enumerate(zip(xs, self.metas, units)):
            last = k == len(xs) - 1
            if fast:
                w, b = self._packed[k].get(m, ts, _1X1, x)
                y = _conv_call(x, y, w, b, _1X1, relu and last)
            else:
                w, b = fold(m, iter(ts))
                y = _plain(x, y, w, b, _1X1, relu and last)
        return y


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _module(gm: fx.GraphModule, node: fx.Node):
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def _sole_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _is_relu(gm, node) -> bool:
    return node is not None and type(_module(gm, node)) is nn.ReLU


def _is_sum2(gm, node) -> bool:
    m = _module(gm, node) if node is not None else None
    return (isinstance(m, CaffeEltwise) and m.operation == "sum" and len(node.args) == 2 and not node.kwargs
            and (m.coeff is None or all(c == 1.0 for c in m.coeff)))


def _is_conv(gm, node) -> bool:
    m = _module(gm, node)
    if isinstance(m, FoldedConv2d):
        return True
    return (type(m) is nn.Conv2d and m.padding_mode == "zeros" and isinstance(m.padding, tuple)
            and not node.kwargs and len(node.args) == 1)


def _replace(gm: fx.GraphModule, first: fx.Node, last: fx.Node, gone: list[fx.Node], args, kwargs) -> fx.Node:
    """Put one call of ``first``'s module in place of the nodes ``gone`` (``first`` .. ``last``),
    where ``last`` was: every argument (the other summand too) is computed before it.
    The new node is to take ``last``'s name (:func:`_renamed_copy`)."""
    graph = gm.graph
    with graph.inserting_after(last):
        new = graph.call_module(first.target, args, kwargs)
    last.replace_all_uses_with(new)
    for n in reversed(gone):
        graph.erase_node(n)
    return new


def _renamed_copy(graph: fx.Graph, names: dict[fx.Node, str]) -> fx.Graph:
    """A copy of ``graph`` with the nodes of ``names`` renamed (an erased node's name stays
    taken in the graph it was erased from, not in a fresh one)."""
    for node, name in names.items():
        node.name = name
    new = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:
        env[node] = new.node_copy(node, lambda n: env[n])
    return new


def lower_for_cpu(gm: fx.GraphModule, *, fuse: bool = True) -> fx.GraphModule:
    """Rewrite ``gm`` in place (see the module docstring); returns it.  ``fuse=False``
    packs the weights and keeps activations channels-last but fuses nothing: one node per
    layer as before (for a net compiled with ``fuse=False``).  Running it twice changes
    nothing (a PackedConv is not matched again)."""
    graph = gm.graph
    names: dict[fx.Node, str] = {}
    for node in list(graph.nodes):
        if getattr(node, "_erased", False) or node.op != "call_module":
            continue
        mod = _module(gm, node)
        if type(mod) is ASPPHeadModule:
            gm.add_submodule(node.target, PackedASPPHead(mod))
            continue
        if isinstance(mod, ConvSumModule) and fuse:
            user = _sole_user(node)
            relu = _is_relu(gm, user)
            gm.add_submodule(node.target, PackedConvSum(mod))
            if relu:
                names[_replace(gm, node, user, [node, user], node.args, {"relu": True})] = user.name
            continue
        if not _is_conv(gm, node):
            continue
        gm.add_submodule(node.target, PackedConv(mod))
        user = _sole_user(node)
        if not fuse:
            continue
        if _is_relu(gm, user):
            names[_replace(gm, node, user, [node, user], node.args, {"relu": True})] = user.name
        elif _is_sum2(gm, user) and _is_relu(gm, _sole_user(user)) and user.args[0] is not user.args[1]:
            relu_node = _sole_user(user)
            other = user.args[1] if user.args[0] is node else user.args[0]
            names[_replace(gm, node, relu_node, [node, user, relu_node], node.args,
                           {"other": other, "relu": True})] = relu_node.name
    _contiguous_outputs(gm)
    graph = _renamed_copy(graph, names)
    graph.lint()
    gm.graph = graph
    gm.recompile()
    return gm


def merge_bn_scale(gm: fx.GraphModule) -> fx.GraphModule:
    """Every BatchNorm whose only reader is a Scale with a learned per-channel scale (one
    bottom, axis 1) becomes one BatchNorm call with the Scale's weight and bias as its
    affine terms: one pass over the activations instead of two, forward and backward,
    in both phases.  The node takes the Scale's name; parameters stay where they were
    (the BatchNorm node reads the Scale's tensors).  In place; returns ``gm``."""
    graph = gm.graph
    names: dict[fx.Node, str] = {}
    for node in list(graph.nodes):
        if getattr(node, "_erased", False) or node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        if type(_module(gm, node)) is not CaffeBatchNorm:
            continue
        user = _sole_user(node)
        sc = _module(gm, user) if user is not None else None
        if (type(sc) is not CaffeScale or sc.is_bias_layer or sc.weight is None or sc.axis != 1
                or sc.weight.dim() != 1 or user.args != (node,) or user.kwargs):
            continue
        with graph.inserting_before(user):
            w = graph.get_attr(f"{user.target}.weight")
            b = graph.get_attr(f"{user.target}.bias") if sc.bias is not None else None
        args = (node.args[0], w, b)
        names[_replace(gm, node, user, [node, user], args, {})] = user.name
    if names:
        gm.graph = _renamed_copy(graph, names)
        gm.graph.lint()
        gm.recompile()
    return gm


def _contiguous_outputs(gm: fx.GraphModule) -> None:
    """Every output contiguous (NCHW).  An output that is an Interp of a channels-last
    blob resizes it NCHW instead: the small blob is reordered, not the large result."""
    graph = gm.graph
    out = next(n for n in graph.nodes if n.op == "output")
    value = out.args[0]
    if not isinstance(value, dict):
        return
    new = {}
    for k, v in value.items():
        if (isinstance(v, fx.Node) and isinstance(_module(gm, v), CaffeInterp) and v.args
                and isinstance(v.args[0], fx.Node)
                and not (v.args[0].op == "call_method" and v.args[0].target == "contiguous")):
            with graph.inserting_before(v):
                x = graph.create_node("call_method", "contiguous", (v.args[0],), name=f"{v.args[0].name}_nchw")
            v.args = (x,) + tuple(v.args[1:])
        if isinstance(v, fx.Node) and not (v.op == "call_method" and v.target == "contiguous"):
            with graph.inserting_before(out):
                v = graph.create_node("call_method", "contiguous", (v,), name=f"{v.name}_nchw")
        new[k] = v
    out.args = (new,)
