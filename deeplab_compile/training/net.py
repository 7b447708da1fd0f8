"""The net a solver trains: its netdef compiled in the TRAIN phase, with inputs sized by
the data layer (the solver's ``data`` keys over the netdef's ImageSegData), and the data
spec the loop's pipeline reads.
"""
from __future__ import annotations

import os

import torch

from .solver import Solver, resolve_path


def build_train_net(solver: Solver, *, seed: int, batch_size: int | None = None):
    """Compile the solver's net in the TRAIN phase with inputs sized by its data layer.
    Returns ``(net, data_spec)``.  The netdef is read once: the data spec is resolved
    from its IR, and the sized net is a reshape of that IR."""
    from ..codegen import generate
    from ..compiler import load, load_netdef, lowered, net_from_doc, reshape
    from ..data.spec import resolve_spec
    net_path = resolve_path(solver, solver.net)
    if not os.path.exists(net_path):
        raise solver.error(f"net '{solver.net}' does not exist", "net", "give the netdef path")
    text = load(net_path)
    # expanded with the netdef's own variables first, to learn those of its includes too
    own = {k: v for k, v in solver.vars.items() if k in (text.get("vars") or {})}
    doc = load_netdef(text, vars=own)
    net_vars = solver.net_vars(doc.get("vars") or {}, sed=bool(getattr(text, "sed_vars", False)))
    if net_vars != own:
        doc = load_netdef(text, vars=net_vars)
    ir = net_from_doc(doc, phase="train", source=net_path)
    spec = resolve_spec(ir, "train", solver.data or None)
    if batch_size:
        spec.batch_size = batch_size
    inputs = {}
    b, h, w = spec.batch_size, spec.crop_height, spec.crop_width
    for name, shape in ir.inputs.items():
        if name == spec.tops[0]:
            inputs[name] = (b, shape[1], h, w)
        elif len(spec.tops) > 1 and name == spec.tops[1] and spec.roles[1] == "label":
            inputs[name] = (b, shape[1], h, w)
    torch.manual_seed(seed)
    # never fused: the passes are for inference, and training walks the netdef's layers
    net = lowered(generate(reshape(ir, inputs) if inputs else ir))   # BatchNorm + Scale as one call
    if spec.num_classes is None:
        from ..data.spec import net_num_classes
        spec.num_classes = net_num_classes(net.net)
    return net, spec
