"""The one list of layer types the compiler knows.

Every layer module is imported here explicitly and its types listed in ``_TYPES``;
nothing registers itself as an import side effect.
"""
from __future__ import annotations

from .base import LayerType

_TYPES: list[type[LayerType]] = [
    # filled in by the layer modules: see the imports above
]

REGISTRY: dict[str, LayerType] = {cls.type_name: cls() for cls in _TYPES}


def get(type_name: str) -> LayerType | None:
    """The layer type named ``type_name`` (Caffe spelling), or None."""
    return REGISTRY.get(type_name)


def known_types() -> list[str]:
    return sorted(REGISTRY)
