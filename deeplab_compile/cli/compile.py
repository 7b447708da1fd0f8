"""``deeplab-compile``: compile a netdef and print its layer table, or write an artifact.

    deeplab-compile netdef/deeplab_largefov.yaml
    deeplab-compile netdef/deeplab_largefov.yaml -D num_classes=59 --input data=1x3x513x513
    deeplab-compile netdef/deeplab_largefov.yaml --phase train
    deeplab-compile netdef/deeplab_largefov.yaml --emit onnx -o largefov.onnx
"""
from __future__ import annotations

import argparse
import os
import sys

from ..errors import DeepLabError
from .common import Parser, add_param_limit, entry_point


def parse_defines(items: list[str]) -> dict:
    """``-D name=value`` pairs; values are read as netdef scalars (``59`` is an int,
    ``1e-3`` a float, ``true`` a bool, anything else text)."""
    from ..netdef.parse import parse_scalar
    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise DeepLabError(f"bad -D '{item}'", hint="write -D name=value, e.g. -D num_classes=59")
        parsed = parse_scalar(value.strip())
        out[name] = value.strip() if parsed is None else parsed
    return out


def parse_inputs(items: list[str]) -> dict:
    out = {}
    for item in items or []:
        name, sep, dims = item.partition("=")
        if not sep or not name:
            raise DeepLabError(f"bad --input '{item}'", hint="write --input data=1x3x513x513")
        out[name.strip()] = dims.strip()
    return out


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="deeplab-compile",
        description="Compile a DeepLab netdef (YAML or Caffe prototxt) into a torch.fx graph and "
                    "print its layer table: shapes, parameters, FLOPs, output stride and receptive field.")
    p.add_argument("netdef", nargs="?", help="path of a .yaml netdef or a Caffe .prototxt")
    p.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME=VALUE",
                   help="override a netdef variable (repeatable), e.g. -D num_classes=59")
    p.add_argument("--phase", default="test", type=str.lower, choices=("train", "test"),
                   help="which phase to compile (default: test)")
    p.add_argument("--input", dest="inputs", action="append", default=[], metavar="NAME=NxCxHxW",
                   help="input size (repeatable), e.g. --input data=1x3x513x513; default: the netdef's")
    p.add_argument("--emit", choices=("python", "yaml", "onnx", "torchscript", "dot"),
                   help="write an artifact instead of only printing the table")
    p.add_argument("-o", "--output", help="artifact path (default: <netdef name>.<ext> in the current folder)")
    p.add_argument("--no-fuse", dest="fuse", action="store_false", default=None,
                   help="skip the passes (BatchNorm folding, ASPP fusion), which run by default for the "
                        "test phase (never for --phase train); the graph is then exactly the netdef's "
                        "layers.  Parameter names are the same either way.  --emit always writes "
                        "the unfused graph (portable: no deeplab:: custom ops)")
    add_param_limit(p)
    p.add_argument("-q", "--quiet", action="store_true", help="do not print the layer table")
    p.add_argument("--info", action="store_true", help="print versions and the active kernel backends")
    p.add_argument("--layers", nargs="?", const="", metavar="TYPE",
                   help="list the layer types, or show one type's parameters (e.g. --layers Interp)")
    return p


def print_info() -> None:
    import torch

    from .. import __version__
    print(f"deeplab-compile {__version__}")
    print(f"torch {torch.__version__}  (cuda available: {torch.cuda.is_available()}, "
          f"threads: {torch.get_num_threads()})")
    try:
        from ..ops import backends
    except ImportError:
        print("kernels: pure PyTorch (no extension module)")
        return
    for op, backend in backends().items():
        print(f"  {op}: {backend}")


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.layers is not None:
        from ..layers import reference
        print(reference.describe(args.layers) if args.layers else reference.overview())
        return 0
    if args.info:
        print_info()
        if not args.netdef:
            return 0
    if not args.netdef:
        build_parser().error("the netdef path is required (or --info, --layers)")
    from ..netdef.search import find_netdef, missing_netdef_hint
    args.netdef = find_netdef(args.netdef)
    if not os.path.isfile(args.netdef):
        raise DeepLabError(f"{args.netdef}: no such file", hint=missing_netdef_hint(args.netdef))

    from .. import compiler, emit, sizes, summary

    defines = parse_defines(args.defines)
    doc = compiler.load_netdef(args.netdef, defines)        # kept for --emit yaml
    # --emit writes the graph as the netdef wrote it: exporters know no fused ops.
    # Otherwise fuse as compile_net does: the test phase unless --no-fuse (args.fuse None).
    net = compiler.net_from_doc(doc, phase=args.phase, inputs=parse_inputs(args.inputs),
                                fuse=False if args.emit else args.fuse, source=args.netdef)
    # the table and the memory check come from the shape rules; a module is built
    # (and its parameters allocated) only to write an artifact
    sizes.check_memory(net)
    if not args.quiet:
        print(summary.format_table(net))
    if args.emit:
        from ..codegen import generate
        path = args.output or emit.default_path(args.netdef, args.emit)
        emit.emit(generate(net), args.emit, path, doc=doc)
        print(f"wrote {args.emit}: {path}", file=sys.stderr)
    elif args.output:
        raise DeepLabError("-o given without --emit", hint="add --emit python|yaml|onnx|torchscript|dot")
    return 0


if __name__ == "__main__":
    sys.exit(main())
