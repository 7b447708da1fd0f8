"""The net a solver trains: its netdef compiled in the TRAIN phase, with inputs sized by
the data layer (the solver's ``data`` keys over the netdef's ImageSegData), and the data
spec the loop's pipeline reads.
"""
from __future__ import annotations

import os

import torch

from .solver import Solver, resolve_path


def _declared_vars(net_path: str, given: dict) -> dict:
    """The netdef's variables, its includes' too.  Its own values among ``given`` are
    passed to the expansion, so that a netdef with required (``~``) variables, such as a
    prototxt's ``${DATA_ROOT}``, can be read."""
    from ..compiler import load, load_netdef
    own = load(net_path).get("vars") or {}
    return load_netdef(net_path, vars={k: v for k, v in given.items() if k in own}).get("vars") or {}


def build_train_net(solver: Solver, *, seed: int, batch_size: int | None = None):
    """Compile the solver's net in the TRAIN phase with inputs sized by its data layer.
    Returns ``(net, data_spec)``."""
    from ..compiler import build_net, compile_net, load_netdef
    from ..data.spec import resolve_spec
    net_path = resolve_path(solver, solver.net)
    if not os.path.exists(net_path):
        raise solver.error(f"net '{solver.net}' does not exist", "net", "give the netdef path")
    net_vars = solver.net_vars(_declared_vars(net_path, solver.vars))
    ir = build_net(net_path, phase="train", vars=net_vars)
    spec = resolve_spec(ir, "train", solver.data or None)
    if batch_size:
        spec.batch_size = batch_size
    inputs = {}
    b, h, w = spec.batch_size, spec.crop_height, spec.crop_width
    for name, shape in ir.inputs.items():
        if name == spec.tops[0]:
            inputs[name] = (b, shape[1], h, w)
        elif len(spec.tops) > 1 and name == spec.tops[1] and spec.label_type == "pixel":
            inputs[name] = (b, shape[1], h, w)
    torch.manual_seed(seed)
    # never fused: the passes are for inference, and training walks the netdef's layers
    net = compile_net(net_path, phase="train", vars=net_vars, inputs=inputs or None, fuse=False)
    if spec.num_classes is None:
        from ..data.spec import net_num_classes
        spec.num_classes = net_num_classes(net.net)
    return net, spec
