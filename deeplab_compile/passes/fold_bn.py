"""``fold_bn``: Convolution -> BatchNorm (global statistics) [-> Scale] becomes one
``ConvolutionBN`` layer, for inference (test phase) only.

Matched: a Convolution whose only reader is a BatchNorm that uses its running statistics
in the test phase (``use_global_stats`` true or unset), optionally followed by a Scale
with a learned per-channel scale (one bottom, axis 1, num_axes 1) as the BatchNorm's only
reader.  The intermediate blobs must not be net outputs.  The fused layer keeps the
convolution's name, bottoms and parameter specs, and the last layer's tops; its module
reads the BatchNorm and Scale tensors from their own modules, so parameter names and
state_dicts are those of the unfused net (see ``layers/conv_bn.py``).

Inference only: a train-phase net is returned unchanged (its BatchNorms normalize with
batch statistics), and so is every BatchNorm with ``use_global_stats: false``.  A folded
BatchNorm whose ``use_global_stats`` is unset follows the module's mode in the unfused
net, so the fused module refuses to run in training mode (``layers/_units.py``).

Pure (the input net is not changed) and idempotent (a ConvolutionBN is not matched again).
"""
from __future__ import annotations

import copy

from ..graph import Layer, Net
from ._graph import consumers, replace, sole_consumer


def fold_bn(net: Net) -> Net:
    if net.phase != "test":             # training: BatchNorm uses batch statistics
        return net
    net = copy.deepcopy(net)
    cons = consumers(net)
    fused: dict[str, Layer] = {}
    removed: set[str] = set()
    for lay in net.layers:
        if lay.type != "Convolution" or len(lay.top_ids) != 1:
            continue
        bn = sole_consumer(net, cons, lay.top_ids[0])
        if bn is None or bn.type != "BatchNorm" or bn.params.get("use_global_stats") is False:
            continue
        chain = [lay, bn]
        sc = sole_consumer(net, cons, bn.top_ids[0])
        if (sc is not None and sc.type == "Scale" and len(sc.bottom_ids) == 1 and sc.params["axis"] == 1
                and sc.params["num_axes"] == 1):
            chain.append(sc)
        last = chain[-1]
        unit = {"conv": lay.name, "bn": bn.name, "scale": sc.name if len(chain) == 3 else None}
        fused[lay.name] = Layer(
            name=lay.name, type="ConvolutionBN", bottoms=list(lay.bottoms), tops=list(last.tops),
            params={"unit": unit}, param_specs=list(lay.param_specs), phase=lay.phase, loc=lay.loc,
            key_locs=dict(lay.key_locs), loss_weight=list(last.loss_weight), bottom_ids=list(lay.bottom_ids),
            top_ids=list(last.top_ids), in_shapes=list(lay.in_shapes), out_shapes=list(last.out_shapes),
            fused_from=[l.name for l in chain], absorbed=chain)
        removed.update(l.name for l in chain)
    replace(net, fused, removed)
    return net
