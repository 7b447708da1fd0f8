"""Caffe interop: prototxt import (``prototxt``), caffemodel weights in and out
(``caffemodel``, ``weights``) and solver import (``solver``).  The message schema is
``caffe.proto``, built at import time by ``proto``."""

__all__ = ["load_weights"]


def load_weights(net, path, *, allow_missing=False, progress=False):
    """See :func:`deeplab_compile.caffe.weights.load_weights`."""
    from .weights import load_weights as _load
    return _load(net, path, allow_missing=allow_missing, progress=progress)
