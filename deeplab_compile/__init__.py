"""deeplab-compile: DeepLab as a Caffe-style declarative network compiler for PyTorch."""
from .errors import DeepLabError

__version__ = "0.1.0"


def compile(source, *, phase="test", vars=None, inputs=None, **kwargs):
    """Compile a netdef (YAML or prototxt path) into a torch.fx GraphModule.

    See :func:`deeplab_compile.compiler.compile_net` for the arguments.
    """
    from .compiler import compile_net
    return compile_net(source, phase=phase, vars=vars, inputs=inputs, **kwargs)


__all__ = ["compile", "DeepLabError", "__version__"]
