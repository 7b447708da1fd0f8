"""Optional rewrites of a shaped :class:`~deeplab_compile.graph.Net` (DESIGN.md section 2).

Each pass is a pure function ``Net -> Net`` that leaves its input alone and changes
nothing when run twice.  :func:`run_passes` applies them in order:

``fold_bn``    Convolution + BatchNorm (global stats) + Scale -> ConvolutionBN (test phase)
``fuse_aspp``  v2 ASPP sums -> ASPPSum / ConvSum (both phases); v3 heads -> ASPPHead (test phase)

They are inference passes: :func:`deeplab_compile.compiler.compile_net` runs them by
default for the test phase only.  On a train-phase net ``fold_bn`` and the v3 head
fusion do nothing (a BatchNorm there normalizes with batch statistics), and a BatchNorm
with ``use_global_stats: false`` is never folded in either phase; only the v2 sums,
whose fused ops have a backward, are rewritten when a train-phase net is fused on request
(``fuse=True``).

Fused layers record ``fused_from`` (shown by the layer table) and keep the modules of
the layers they absorbed, so a fused net loads the unfused net's state_dict as is.
"""
from __future__ import annotations

from ..graph import Net
from .fold_bn import fold_bn
from .fuse_aspp import fuse_aspp

PASSES = (fold_bn, fuse_aspp)


def run_passes(net: Net) -> Net:
    for p in PASSES:
        net = p(net)
    return net


__all__ = ["PASSES", "fold_bn", "fuse_aspp", "run_passes"]
