"""Small queries and edits on a :class:`Net` shared by the passes."""
from __future__ import annotations

from ..graph import Layer, Net


def consumers(net: Net) -> dict[str, list[Layer]]:
    """Blob id -> the layers that read it."""
    out: dict[str, list[Layer]] = {}
    for lay in net.layers:
        for b in lay.bottom_ids:
            out.setdefault(b, []).append(lay)
    return out


def producers(net: Net) -> dict[str, Layer]:
    """Blob id -> the layer that writes it."""
    return {t: lay for lay in net.layers for t in lay.top_ids}


def sole_consumer(net: Net, cons: dict[str, list[Layer]], blob: str) -> Layer | None:
    """The one layer reading ``blob``, if exactly one does and it is not a net output."""
    readers = cons.get(blob, [])
    if len(readers) != 1 or blob in net.outputs:
        return None
    return readers[0]


def replace(net: Net, fused: dict[str, Layer], removed: set[str]) -> None:
    """Put ``fused[name]`` in place of the layer ``name``; drop the layers in ``removed``
    and the blobs nobody reads or writes any more."""
    net.layers = [fused.get(l.name, l) for l in net.layers if l.name not in removed or l.name in fused]
    live = set(net.outputs) | set(net.input_ids.values())
    for lay in net.layers:
        live.update(lay.bottom_ids)
        live.update(lay.top_ids)
    for bid in [b for b in net.blobs if b not in live]:
        del net.blobs[bid]


def square(v) -> int | None:
    """The value of a scalar-or-pair parameter when both axes agree."""
    if isinstance(v, (list, tuple)):
        return v[0] if all(x == v[0] for x in v) else None
    return v
