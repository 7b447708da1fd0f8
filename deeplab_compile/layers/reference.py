"""A human-readable reference of the layer types, generated from their schemas.

``deeplab-compile --layers`` prints the list; ``deeplab-compile --layers Convolution``
prints one type's parameters, bottoms and tops.  The schemas are the source of truth,
so the reference cannot drift from what the compiler accepts.
"""
from __future__ import annotations

import inspect

from ..netdef.errors import UnknownLayerError, did_you_mean
from . import registry
from .base import REQUIRED, LayerType


def _count(bounds: tuple[int, int | None]) -> str:
    lo, hi = bounds
    if lo == hi:
        return str(lo)
    return f"{lo}+" if hi is None else f"{lo}-{hi}"


def _default(p) -> str:
    if p.default is REQUIRED:
        return "required"
    if isinstance(p.default, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in p.default.items()) + "}"
    return repr(p.default) if isinstance(p.default, str) else str(p.default)


def _summary(spec: LayerType) -> str:
    """The first paragraph of the type's docstring, else of its module's."""
    cls = type(spec)
    doc = cls.__dict__.get("__doc__") or spec.doc or inspect.getmodule(cls).__doc__ or ""
    return inspect.cleandoc(doc).split("\n\n")[0].replace("\n", " ").replace("``", "")


def describe(type_name: str) -> str:
    spec = registry.get(type_name)
    if spec is None:
        raise UnknownLayerError(f"unknown layer type '{type_name}'",
                                hint=did_you_mean(type_name, registry.known_types()) or
                                "run deeplab-compile --layers for the list")
    flags = [f for f, on in (("data layer: its tops are graph inputs", spec.is_data),
                             ("loss: loss_weight defaults to 1", spec.is_loss),
                             ("metric: a train-phase output", spec.is_metric)) if on]
    lines = [f"{spec.type_name}: {_summary(spec)}",
             f"  bottoms: {_count(spec.bottoms)}   tops: {_count(spec.tops)}"
             + (f"   learnable blobs (param entries apply in this order): {', '.join(spec.blobs)}"
                if spec.blobs else "")]
    lines += [f"  {f}" for f in flags]
    if spec.params:
        width = max(len(k) for k in spec.params)
        lines.append("  parameters:")
        for key, p in spec.params.items():
            kind = p.kind + (f" ({'|'.join(p.choices)})" if p.choices else "")
            rng = ""
            if p.min is not None or p.max is not None:
                rng = f" [{'' if p.min is None else f'{p.min:g}'}..{'' if p.max is None else f'{p.max:g}'}]"
            alias = f" alias: {', '.join(p.aliases)}" if p.aliases else ""
            doc = f"  {p.doc}" if p.doc else ""
            lines.append(f"    {key.ljust(width)}  {kind}{rng} = {_default(p)}{alias}{doc}")
    lines.append("  common keys: name, type, bottom, top, phase, param [{lr_mult, decay_mult, name}], loss_weight")
    return "\n".join(lines)


def overview() -> str:
    names = registry.known_types()
    width = max(map(len, names))
    return "\n".join(f"{n.ljust(width)}  {_summary(registry.get(n))[:100]}" for n in names)
