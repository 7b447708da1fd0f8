"""``fuse_aspp``: rewrite ASPP patterns to the fused layer types of ``layers/aspp.py``.

v2, same bottom (DeepLab v2 ResNet's fc1_c0..c3 -> fc1):
    an Eltwise SUM (no coefficients) whose bottoms are all written by 3x3 Convolutions
    (stride 1, group 1, pad = dilation, equal num_output) of one blob, each read only by
    the Eltwise -> ``ASPPSum`` (``deeplab::aspp_sum``).  Train and test.

v2, one 1x1 per bottom (VGG16 ASPP-L's fc8_1..fc8_4 -> fc8):
    an Eltwise SUM whose bottoms are all written by 1x1 Convolutions (stride 1, pad 0,
    group 1, equal num_output), each read only by the Eltwise -> ``ConvSum``.  In ASPP-L
    the atrous convolutions are the fc6_i, and each feeds its own non-linear fc7_i branch:
    nothing is summed there, so the rates cannot be folded into one sum.  The sum is at
    fc8, whose four 1x1 products accumulate into one output.  Train and test.

v3 (DeepLabv3 ASPP):
    Concat (axis 1) read only by a 1x1 projection (Convolution or ConvolutionBN, stride 1,
    group 1) optionally followed by an in-place ReLU; every Concat bottom is either
    - a ReLU of a 1x1 or 3x3 Convolution/ConvolutionBN (stride 1, group 1, "same" pad)
      of the common blob X, or
    - image pooling: Interp([p, X]) of a ReLU of a 1x1 unit of a global AVE Pooling of X
      (at most one),
    each intermediate read only within the pattern -> ``ASPPHead``
    (``deeplab::aspp_v3_head``).  Test phase only (inference); run ``fold_bn`` first so
    the BatchNorms are part of the units.

Fused layers are named after the Eltwise / Concat they replace and keep the absorbed
layers' modules, so parameter names are those of the unfused net (``layers/aspp.py``).
Pure and idempotent.
"""
from __future__ import annotations

import copy

from ..graph import Layer, Net
from ..layers._units import unit_of
from ..layers.conv import Convolution
from ._graph import consumers, producers, replace, sole_consumer

_CONV = Convolution()


def _conv_geom(unit_layer: Layer):
    """(kernel, dilation, pad) of a plain stride-1, group-1 square conv unit, else None."""
    leaves = {l.name: l for l in unit_of(unit_layer)[1]}
    conv = leaves[unit_of(unit_layer)[0]["conv"]]
    k, s, pad, d = _CONV.geom(conv)
    if k[0] != k[1] or s != (1, 1) or pad[0] != pad[1] or d[0] != d[1] or conv.params["group"] != 1:
        return None
    return k[0], d[0], pad[0]


def _fused_layer(name: str, type_: str, bottoms, bottom_ids, last: Layer, params: dict, members: list[Layer],
                 leaves: list[Layer], anchor: Layer) -> Layer:
    return Layer(name=name, type=type_, bottoms=list(bottoms), tops=list(last.tops), params=params,
                 phase=anchor.phase, loc=anchor.loc, key_locs=dict(anchor.key_locs),
                 loss_weight=list(last.loss_weight), bottom_ids=list(bottom_ids), top_ids=list(last.top_ids),
                 in_shapes=[], out_shapes=list(last.out_shapes),
                 fused_from=[n for l in members for n in (l.fused_from or [l.name])], absorbed=leaves)


def _v2(net: Net, cons, prod, fused: dict, removed: set) -> None:
    for e in net.layers:
        if e.type != "Eltwise" or e.params["operation"] != "sum" or len(e.bottom_ids) < 2:
            continue
        if e.params["coeff"] and any(c != 1.0 for c in e.params["coeff"]):
            continue
        convs = [prod.get(b) for b in e.bottom_ids]
        if any(c is None or c.type not in ("Convolution", "ConvolutionBN") or sole_consumer(net, cons, c.top_ids[0]) is not e
               or len(c.top_ids) != 1 for c in convs):
            continue
        geoms = [_conv_geom(c) for c in convs]
        outs = {c.out_shapes[0][1] for c in convs}
        if any(g is None for g in geoms) or len(outs) != 1:
            continue
        units, leaves = [], []
        for c in convs:
            u, lv = unit_of(c)
            units.append(u)
            leaves += lv
        same_bottom = len({c.bottom_ids[0] for c in convs}) == 1
        if same_bottom and all(k == 3 and p == d for k, d, p in geoms):
            c0 = convs[0]
            fused[e.name] = _fused_layer(e.name, "ASPPSum", c0.bottoms, c0.bottom_ids, e,
                                         {"branches": units, "rates": [d for _, d, _ in geoms]},
                                         convs + [e], leaves, e)
            fused[e.name].in_shapes = [c0.in_shapes[0]]
        elif all(k == 1 and p == 0 for k, _, p in geoms):
            fused[e.name] = _fused_layer(e.name, "ConvSum", [c.bottoms[0] for c in convs],
                                         [c.bottom_ids[0] for c in convs], e, {"branches": units},
                                         convs + [e], leaves, e)
            fused[e.name].in_shapes = [c.in_shapes[0] for c in convs]
        else:
            continue
        removed.update(l.name for l in convs + [e])


def _relu_of(net, cons, prod, blob: str):
    """(ReLU layer, unit layer) when ``blob`` is an in-place ReLU of a conv unit's sole output."""
    relu = prod.get(blob)
    if relu is None or relu.type != "ReLU" or relu.params.get("negative_slope", 0) not in (0, 0.0):
        return None
    unit = prod.get(relu.bottom_ids[0])
    if unit is None or unit.type not in ("Convolution", "ConvolutionBN") or len(unit.top_ids) != 1:
        return None
    if sole_consumer(net, cons, unit.top_ids[0]) is not relu:
        return None
    return relu, unit


def _v3(net: Net, cons, prod, fused: dict, removed: set) -> None:
    if net.phase != "test":
        return
    for cat in net.layers:
        if cat.type != "Concat" or cat.params["axis"] not in (1, -3) or cat.name in removed:
            continue
        proj = sole_consumer(net, cons, cat.top_ids[0])
        if proj is None or proj.type not in ("Convolution", "ConvolutionBN"):
            continue
        pg = _conv_geom(proj)
        if pg is None or pg[0] != 1 or pg[2] != 0:
            continue
        members, last = [cat, proj], proj
        relu_out = False
        after = sole_consumer(net, cons, proj.top_ids[0])
        if after is not None and after.type == "ReLU" and after.bottom_ids == [proj.top_ids[0]] \
                and after.tops == after.bottoms and not after.params.get("negative_slope"):
            members.append(after)
            last, relu_out = after, True
        x_id, kinds, rates, channels, units, leaves, ok = None, [], [], [], [], [], True
        for b in cat.bottom_ids:
            if sole_consumer(net, cons, b) is not cat:
                ok = False
                break
            found = _relu_of(net, cons, prod, b)
            if found is not None:
                relu, unit = found
                g = _conv_geom(unit)
                if g is None or g[0] not in (1, 3) or g[2] != g[1] * (g[0] - 1) // 2:
                    ok = False
                    break
                src = unit.bottom_ids[0]
                kind, rate = "conv", g[1] if g[0] == 3 else 1
                part = [relu, unit]
            else:
                interp = prod.get(b)
                if interp is None or interp.type != "Interp" or len(interp.bottom_ids) != 2 or "pool" in kinds:
                    ok = False
                    break
                inner = _relu_of(net, cons, prod, interp.bottom_ids[0])
                if inner is None or sole_consumer(net, cons, interp.bottom_ids[0]) is not interp:
                    ok = False
                    break
                relu, unit = inner
                g = _conv_geom(unit)
                gap = prod.get(unit.bottom_ids[0])
                if (g is None or g[0] != 1 or gap is None or gap.type != "Pooling" or gap.params["pool"] != "ave"
                        or not gap.params.get("global_pooling") or tuple(gap.out_shapes[0][2:]) != (1, 1)
                        or sole_consumer(net, cons, gap.top_ids[0]) is not unit
                        or tuple(interp.out_shapes[0][2:]) != tuple(net.blobs[interp.bottom_ids[1]].shape[2:])):
                    ok = False
                    break
                src = gap.bottom_ids[0]
                if interp.bottom_ids[1] != src:
                    ok = False
                    break
                kind, rate = "pool", 1
                part = [interp, relu, unit, gap]
            if x_id is None:
                x_id = src
            if src != x_id:
                ok = False
                break
            u, lv = unit_of(unit)
            kinds.append(kind), rates.append(rate), units.append(u), leaves.extend(lv)
            channels.append(unit.out_shapes[0][1])
            members.extend(part)
        if not ok or "conv" not in kinds:
            continue
        pu, plv = unit_of(proj)
        x_layer = prod.get(x_id)
        bottoms = [net.blobs[x_id].name]
        fl = _fused_layer(cat.name, "ASPPHead", bottoms, [x_id], last,
                          {"branches": units, "kinds": kinds, "rates": rates, "channels": channels, "proj": pu,
                           "relu_out": relu_out}, members, leaves + plv, cat)
        fl.in_shapes = [net.blobs[x_id].shape]
        fused[cat.name] = fl
        removed.update(l.name for l in members)
        del x_layer


def fuse_aspp(net: Net) -> Net:
    net = copy.deepcopy(net)
    cons, prod = consumers(net), producers(net)
    fused: dict[str, Layer] = {}
    removed: set[str] = set()
    _v2(net, cons, prod, fused, removed)
    _v3(net, cons, prod, fused, removed)
    # A fused layer goes where its last member was, so every bottom exists before it.
    order = {l.name: i for i, l in enumerate(net.layers)}
    new = []
    placed = set()
    last_member = {}
    for name, fl in fused.items():
        idx = max(order[n] for n in _member_names(fl, net) if n in order)
        last_member[idx] = fl
    for i, lay in enumerate(net.layers):
        if i in last_member:
            new.append(last_member[i])
            placed.add(last_member[i].name)
        if lay.name in removed:
            continue
        new.append(lay)
    net.layers = new
    replace(net, {}, set())
    return net


def _member_names(fl: Layer, net: Net) -> list[str]:
    names = set(fl.fused_from)
    return [l.name for l in net.layers if l.name in names or any(n in names for n in (l.fused_from or []))]
