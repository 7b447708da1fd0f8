"""deeplab-compile: DeepLab as a Caffe-style declarative network compiler for PyTorch."""
from .errors import DeepLabError

__version__ = "0.1.0"


def compile(source, *, phase="test", vars=None, inputs=None, **kwargs):
    """Compile a netdef (YAML or prototxt path) into a torch.fx GraphModule.

    The test phase is fused for inference by default (``fuse=False`` keeps the netdef's
    layers; the train phase is never fused by default).  See
    :func:`deeplab_compile.compiler.compile_net` for the arguments.
    """
    from .compiler import compile_net
    return compile_net(source, phase=phase, vars=vars, inputs=inputs, **kwargs)


def load_weights(net, path, *, allow_missing=False, progress=False):
    """Load a ``.caffemodel`` or ``.pt`` checkpoint into a compiled net (in place).

    See :func:`deeplab_compile.weights.load_weights`.
    """
    from .weights import load_weights as _load
    return _load(net, path, allow_missing=allow_missing, progress=progress)


__all__ = ["compile", "load_weights", "DeepLabError", "__version__"]
