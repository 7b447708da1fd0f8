"""Shared helpers for the zoo tests: parameter counts and FLOPs without a big forward."""
import os

import deeplab_compile
from deeplab_compile.compiler import build_net
from deeplab_compile.layers import registry

from conftest import NETDEF


def netdef(name):
    return os.path.join(NETDEF, name + ".yaml")


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def count(name, size=65, **vars):
    """Exact parameter count: compile at a small input (shared params count once)."""
    return n_params(deeplab_compile.compile(netdef(name), vars=vars, inputs={"data": f"1x3x{size}x{size}"}))


def shapes(name, size, phase="test", **vars):
    """Blob name -> shape (the last write of each name), from shape inference only."""
    net = build_net(netdef(name), phase=phase, vars=vars, inputs={"data": f"1x3x{size}x{size}"})
    return {b.name: b.shape for b in net.blobs.values()}


def madds(name, size, **vars):
    net = build_net(netdef(name), vars=vars, inputs={"data": f"1x3x{size}x{size}"})
    return sum(registry.get(lay.type).flops(lay) for lay in net.layers)
