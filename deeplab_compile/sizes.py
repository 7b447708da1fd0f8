"""Parameter counts and memory of a shaped net, from the shape rules alone.

Nothing here allocates a tensor: each layer type says which learnable tensors its
module would hold (:meth:`LayerType.param_shapes`) and how many bytes of other tensors it
would allocate (:meth:`LayerType.buffer_bytes`), from its parameters and input shapes.
That is what the layer table of ``deeplab-compile`` prints, and what
:func:`check_memory` compares with the limit before :func:`deeplab_compile.codegen.generate`
builds a module, so a netdef with ``num_output: 1000000000`` ends in one located line
instead of an allocation that fails (or succeeds, and fills the machine).

The limit is :data:`DEFAULT_MAX_PARAM_GIB` GiB of tensors a build may allocate; the
environment variable ``DEEPLAB_MAX_PARAM_GIB`` (which the commands' ``--max-param-gib``
flag sets) or the ``max_param_gib`` argument of ``generate``/``compile_net`` raises it.
"""
from __future__ import annotations

import math
import os
from decimal import Decimal
from typing import Iterable

from .errors import DeepLabError
from .graph import Layer, Net
from .layers import registry
from .netdef.errors import SizeError

__all__ = ["DEFAULT_MAX_PARAM_GIB", "ENV_VAR", "holders", "param_layers", "layer_params",
           "build_bytes", "max_param_gib", "check_memory", "parse_gib"]

DEFAULT_MAX_PARAM_GIB = 4.0     # the largest zoo net (ResNet-101 MSC) needs about 0.2 GiB
ENV_VAR = "DEEPLAB_MAX_PARAM_GIB"
_FLOAT32 = 4                    # built modules hold float32 tensors


def holders(lay: Layer) -> list[Layer]:
    """The layers a fused layer absorbed whose modules codegen keeps, under their own
    names, as holders of the tensors the fused module reads (``Layer.absorbed``)."""
    return [a for a in lay.absorbed if a.name != lay.name and registry.get(a.type).blobs]


def param_layers(net: Net) -> list[Layer]:
    """Every layer whose module is in the graph module: the net's layers and the holders."""
    return [l for lay in net.layers for l in (lay, *holders(lay))]


def _numel(shape: Iterable[int]) -> int:
    return math.prod(int(d) for d in shape)


def layer_params(net: Net) -> dict[str, int]:
    """Learnable parameters of each layer of ``net`` (a holder's counted in the row of
    the fused layer that holds it), a tensor shared through ``param: [{name: ...}]``
    counted once, at its first user: the numbers a built module's ``parameters()``
    gives, without building it."""
    out: dict[str, int] = {}
    shared: set[str] = set()
    for lay in net.layers:
        n = 0
        for leaf in (lay, *holders(lay)):
            spec = registry.get(leaf.type)
            if not spec.blobs or spec.is_data:
                continue
            shapes = spec.param_shapes(leaf)
            for i, blob in enumerate(spec.blobs):
                if blob not in shapes:
                    continue
                ps = leaf.param_specs[i] if i < len(leaf.param_specs) else None
                if ps is not None and ps.name:
                    if ps.name in shared:
                        continue
                    shared.add(ps.name)
                n += _numel(shapes[blob])
        out[lay.name] = n
    return out


def build_bytes(net: Net) -> dict[str, int]:
    """Bytes of tensors building each layer's module allocates (its parameters as
    float32 before any sharing, and its buffers), holders in their fused layer's row."""
    out: dict[str, int] = {}
    for lay in net.layers:
        n = 0
        for leaf in (lay, *holders(lay)):
            spec = registry.get(leaf.type)
            if spec.is_data:
                continue
            n += sum(_FLOAT32 * _numel(s) for s in spec.param_shapes(leaf).values())
            n += spec.buffer_bytes(leaf)
        out[lay.name] = n
    return out


def parse_gib(text: str, source: str) -> float:
    """A positive number of GiB from ``text``; ``source`` names where it came from."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise DeepLabError(f"{source} must be a positive number of GiB, got {text!r}",
                           hint=f"e.g. {source.split('=')[0]}=16; the default is {DEFAULT_MAX_PARAM_GIB:g}")
    return value


def max_param_gib(value: float | None = None) -> float:
    """The limit in GiB: ``value`` when given, else ``$DEEPLAB_MAX_PARAM_GIB``, else
    :data:`DEFAULT_MAX_PARAM_GIB`."""
    if value is not None:
        return parse_gib(str(value), "max_param_gib")
    env = os.environ.get(ENV_VAR, "")
    return parse_gib(env, ENV_VAR) if env else DEFAULT_MAX_PARAM_GIB


def _gib(n: int) -> str:
    gib = Decimal(int(n)) / 2 ** 30           # exact for any integer: no float overflow
    if gib >= 10 ** 12:
        return f"{gib:.2E} GiB"
    return f"{gib:,.0f} GiB" if gib >= 100 else f"{float(gib):.3g} GiB"


def check_memory(net: Net, max_gib: float | None = None) -> int:
    """The bytes building ``net``'s module would allocate; a :class:`SizeError` naming
    the largest layer when that is over the limit (:func:`max_param_gib`)."""
    limit = max_param_gib(max_gib)
    sizes = build_bytes(net)
    total = sum(sizes.values())
    if total > limit * 2**30:
        name = max(sizes, key=sizes.get)
        lay = next(l for l in net.layers if l.name == name)
        raise lay.error(key="num_output" if "num_output" in lay.params else None, message=f"the net's parameters need {_gib(total)} ({_gib(sizes[name])} in this layer), "
                        f"over the limit of {limit:g} GiB",
                        hint=f"check num_output and the input sizes, or raise the limit with "
                             f"--max-param-gib (or {ENV_VAR})", cls=SizeError)
    return total
