"""The layer table ``deeplab-compile`` prints: shapes, parameters, FLOPs, stride, RF.

Everything in it comes from the shaped IR and the shape rules (:mod:`.sizes`): no module
is built and no tensor allocated, so the table of a net too large to build still prints.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from .codegen import CompiledNet, io_names
from .graph import Net
from .layers import registry
from .sizes import layer_params


@dataclass
class Row:
    name: str
    type: str
    wiring: str
    shape: str
    params: int
    flops: int
    stride: str
    rf: str
    note: str = ""


def _fmt_shape(s) -> str:
    if s is None:
        return "?"
    return "x".join(str(d) for d in s) if len(s) else "scalar"


def _fmt_stride(f: Fraction) -> str:
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


def human(n: int) -> str:
    """``1234567`` -> ``1.23M``; exact for any integer (no float overflow), with an
    exponent past ``999999G``."""
    n = Decimal(int(n))
    if abs(n) >= 10 ** 15:
        return f"{n:.2E}"
    for unit, div in (("G", 10 ** 9), ("M", 10 ** 6), ("K", 10 ** 3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def mib(n_bytes: int) -> str:
    """Bytes as MiB with one decimal, exact for any integer."""
    value = Decimal(int(n_bytes)) / 2 ** 20
    return f"{value:.1f}" if value < 10 ** 12 else f"{value:.2E}"


def _net(net: Net | CompiledNet) -> Net:
    return net.net if isinstance(net, CompiledNet) else net


def rows(net: Net | CompiledNet) -> list[Row]:
    """One row per graph input and per layer of a shaped net (or a compiled one's)."""
    net = _net(net)
    inputs, _ = io_names(net)
    params = layer_params(net)
    out = []
    for name, shape in net.inputs.items():
        if name in inputs:
            out.append(Row(name, "(input)", f"-> {name}", _fmt_shape(shape), 0, 0, "1", "1"))
    for lay in net.layers:
        spec = registry.get(lay.type)
        n_params = params[lay.name]
        tops = lay.top_ids
        blob = net.blobs[tops[0]] if tops else None
        wiring = ",".join(lay.bottoms) + " -> " + ",".join(lay.tops)
        shape = " ".join(_fmt_shape(net.blobs[t].shape) for t in tops) if tops else "-"
        note = []
        if lay.fused_from:
            note.append("fused: " + ",".join(lay.fused_from))
        if any(lay.loss_weight):
            note.append("loss x" + "/".join(f"{w:g}" for w in lay.loss_weight))
        out.append(Row(lay.name, lay.type, wiring, shape, n_params, 0 if spec.is_data else spec.flops(lay),
                       _fmt_stride(blob.stride) if blob else "-", str(blob.rf) if blob else "-", "; ".join(note)))
    return out


def format_table(net: Net | CompiledNet) -> str:
    """The table of a shaped :class:`Net` (or of a compiled net's ``.net``)."""
    net = _net(net)
    rs = rows(net)
    head = ("layer", "type", "bottoms -> tops", "top shape", "params", "FLOPs (MAdds)", "stride", "RF", "")
    body = [(r.name, r.type, r.wiring, r.shape, f"{r.params:,}" if r.params else "-",
             human(r.flops) if r.flops else "-", r.stride, r.rf, r.note) for r in rs]
    widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
    right = {4, 5, 6, 7}

    def line(cells):
        return "  ".join((str(c).rjust(w) if i in right else str(c).ljust(w))
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    total_params = sum(r.params for r in rs)
    total_flops = sum(r.flops for r in rs)
    input_names, output_names = io_names(net)
    inputs = ", ".join(f"{n} {_fmt_shape(net.blobs[net.input_ids[n]].shape)}" for n in input_names)
    outs = ", ".join(f"{k} {_fmt_shape(net.blobs[b].shape)}" for k, b in zip(output_names, net.outputs))
    sep = "-" * len(line(head))
    lines = [f"{net.name}  (phase {net.phase}; {len(net.layers)} layers)", sep, line(head), sep]
    lines += [line(b) for b in body]
    lines += [sep,
              f"total: {total_params:,} parameters ({mib(total_params * 4)} MiB fp32), "
              f"{human(total_flops)} multiply-adds",
              f"inputs: {inputs or '-'}",
              f"outputs: {outs or '-'}"]
    return "\n".join(lines)
