"""The net a solver trains: its netdef compiled in the TRAIN phase, with inputs sized by
the data layer (the solver's ``data`` keys over the netdef's ImageSegData), and the data
spec the loop's pipeline reads.
"""
from __future__ import annotations

import math
import os
from typing import Mapping

import torch

from ..errors import DeepLabError
from ..netdef.parse import loc_of
from .solver import Solver, resolve_path


class BatchSplitError(DeepLabError):
    """A global batch that the processes cannot share evenly."""


def train_ir(solver: Solver):
    """The solver's net in the TRAIN phase as IR, and its data spec (nothing allocated)."""
    from ..compiler import load, load_netdef, net_from_doc
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
    return ir, resolve_spec(ir, "train", solver.data or None)


def split_batch(solver: Solver, spec, processes: int, hint: str | None = None) -> tuple[int, int]:
    """Each process's share ``(batch_size, iter_size)`` of the data layer's ``batch_size``
    x the solver's ``iter_size`` read as the batch of all ``processes`` together (the
    papers' batch).  The batch is split first; what of ``processes`` it cannot take is
    taken from ``iter_size`` (DeepLab v2's batch 1 x iter_size 10 in 2 processes: 1 x 5
    each; DDP averages the processes' gradients as ``iter_size`` averages its passes).  A
    :class:`BatchSplitError` naming where the batch is set when neither divides."""
    b, i = int(spec.batch_size), int(solver.iter_size)
    if processes <= 1:
        return b, i
    share = _share(b, i, processes)
    if share is not None:
        return share
    data = solver.data if isinstance(solver.data, Mapping) else {}
    where = (str(loc_of(data, "batch_size") or solver.path) if "batch_size" in data
             else spec.where or resolve_path(solver, solver.net))
    total = f"batch_size {b}" + (f" x iter_size {i}" if i > 1 else "")
    raise BatchSplitError(f"{where}: {total} is the batch of all {processes} processes together and "
                          f"does not divide by {processes}",
                          hint=hint or f"make batch_size a multiple of {processes}, or run {divisors(b, i)}")


def _share(b: int, i: int, n: int) -> tuple[int, int] | None:
    g = math.gcd(b, n)
    rest = n // g                     # the part of n the batch cannot take
    return (b // g, i // rest) if i % rest == 0 else None


def divisors(b: int, i: int = 1) -> str:
    """The numbers of processes a batch of ``b`` (x ``iter_size`` ``i``) divides among:
    ``1, 2, 4 or 8 processes``."""
    fits = [str(n) for n in range(1, b * i + 1) if _share(b, i, n) is not None]
    return "1 process" if len(fits) == 1 else f"{', '.join(fits[:-1])} or {fits[-1]} processes"


def build_train_net(solver: Solver, *, seed: int, batch_size: int | None = None, processes: int = 1,
                    ir_spec=None):
    """Compile the solver's net in the TRAIN phase with inputs sized by its data layer.
    Returns ``(net, data_spec)``.  The netdef is read once: the data spec is resolved
    from its IR (or given as ``ir_spec``, :func:`train_ir`'s result), and the sized net
    is a reshape of that IR.  ``processes`` > 1: the data layer's batch is the global
    batch, and the net and the spec take this process's share of it (:func:`split_batch`;
    the caller runs the ``iter_size`` share)."""
    from ..codegen import generate
    from ..compiler import lowered, reshape
    ir, spec = ir_spec or train_ir(solver)
    if batch_size:
        spec.batch_size = batch_size
    spec.batch_size, _ = split_batch(solver, spec, processes)
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
