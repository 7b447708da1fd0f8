"""Caffe interop: prototxt import (``prototxt``), caffemodel weights in and out
(``caffemodel``) and solver import (``solver``).  The message schema is ``caffe.proto``,
built at import time by ``proto``.  Weights files of every kind are read by
:mod:`deeplab_compile.weights`."""
