"""``deeplab-convert``: weights and solvers between Caffe and this project.

    deeplab-convert init.caffemodel --netdef N.yaml -o init.pt       # Caffe weights -> checkpoint
    deeplab-convert model.pt --netdef N.yaml -o model.caffemodel     # checkpoint -> Caffe weights
    deeplab-convert solver.prototxt -o solver.yaml                   # Caffe solver -> solver YAML
    deeplab-convert train.prototxt -o train.yaml                     # Caffe net -> netdef YAML

The input's suffix picks the converter (:data:`CONVERTERS`); another source can be added
there.  Outputs are written atomically: on any error nothing is left behind.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Callable

from ..errors import DeepLabError, Loc
from .common import Parser, add_param_limit, atomic_path, atomic_write, entry_point
from .compile import parse_defines


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="deeplab-convert",
        description="Convert Caffe weights (.caffemodel) to PyTorch checkpoints (.pt) and back, "
                    "and Caffe solver or net prototxts to YAML.")
    p.add_argument("input", help="a .caffemodel, a .pt/.pth checkpoint, or a solver/net .prototxt")
    p.add_argument("-o", "--output", help="output path (default: the input's name with the new suffix)")
    p.add_argument("--netdef", help="the netdef (.yaml or .prototxt) the weights belong to")
    p.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME=VALUE",
                   help="netdef variable (repeatable), e.g. -D num_classes=21")
    p.add_argument("--phase", default="test", type=str.lower, choices=("train", "test"),
                   help="the netdef phase whose layers are matched (default: test)")
    p.add_argument("--allow-missing", action="store_true",
                   help="load what matches; missing and unexpected blobs are not errors")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--from", dest="source", metavar="SOURCE",
                   help="import a pretrained PyTorch state dict by name table: "
                        "torchvision:resnet101, torchvision:deeplabv3_resnet101, torchvision:vgg16, "
                        "timm:xception65, timm:mobilenetv2_100 (deeplab_compile.zoo.mappings); "
                        "torchvision:deeplabv3_resnet101 needs -D layout=torchvision")
    add_param_limit(p)
    return p


def _net(args):
    if not args.netdef:
        raise DeepLabError(f"converting '{args.input}' needs the net", hint="add --netdef N.yaml")
    import torch

    from ..compiler import compile_net
    # the layers as the netdef wrote them: a caffemodel holds the netdef's layers, by name
    # and type, and --phase train must give the same net as --phase test would
    with torch.device("meta"):      # shapes and names only: no memory for the weights
        return compile_net(args.netdef, phase=args.phase, vars=parse_defines(args.defines), fuse=False)


def _output(args, suffix: str) -> str:
    out = args.output or os.path.splitext(args.input)[0] + suffix
    if os.path.splitext(out)[1].lower() != suffix:
        raise DeepLabError(f"the output '{out}' should end in {suffix}", hint=f"write -o NAME{suffix}")
    if os.path.abspath(out) == os.path.abspath(args.input):
        raise DeepLabError("the output would overwrite the input", hint="give another -o")
    return out


def from_caffemodel(args) -> str:
    import torch

    from ..caffe.caffemodel import caffe_state_dict
    net = _net(args)
    out = _output(args, ".pt")
    state = caffe_state_dict(net, args.input, allow_missing=args.allow_missing,
                             progress=not args.quiet)
    with atomic_path(out) as tmp:
        torch.save(state, tmp)
    return f"wrote {len(state)} tensors: {out}"


def from_checkpoint(args) -> str:
    from ..caffe.caffemodel import write_caffemodel
    from ..weights import load_state
    net = _net(args)
    out = _output(args, ".caffemodel")
    state = load_state(net, args.input)
    with atomic_write(out) as f:
        write_caffemodel(net, state, f, progress=not args.quiet)
    return f"wrote {out}"


def _is_net(text: str) -> bool:
    body = re.sub(r"#[^\n]*", "", text)
    return re.search(r"(?m)^\s*(layers?|input|input_shape)\s*[:{]", body) is not None


def from_prototxt(args) -> str:
    path = args.input
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise DeepLabError(f"cannot read '{path}': {getattr(err, 'strerror', None) or err}",
                           loc=Loc(path), hint="give a UTF-8 text prototxt") from None
    out = _output(args, ".yaml")
    if _is_net(text):
        from ..compiler import load_netdef
        from ..netdef.parse import dump
        doc = load_netdef(path, parse_defines(args.defines))
        with atomic_write(out, "w") as f:
            f.write(f"# Converted from the Caffe net {os.path.basename(path)}.\n" + dump(doc))
        return f"wrote netdef: {out}"
    from ..caffe.solver import to_yaml
    from ..training.solver import convert_caffe
    fields, notes = convert_caffe(text, path)
    with atomic_write(out, "w") as f:
        f.write(to_yaml(fields, notes, os.path.basename(path)))
    return f"wrote solver: {out}"


def from_pretrained(args) -> str:
    """``--from SOURCE``: a torchvision/timm state dict -> a checkpoint for ``--netdef``."""
    from ..zoo.convert import convert_file
    if not args.netdef:
        raise DeepLabError("--from needs --netdef (the zoo net the weights are for)", loc=None)
    from ..zoo.mappings import LAYOUTS
    out = _output(args, ".pt")
    rep = convert_file(args.input, args.source, args.netdef, out, vars=parse_defines(args.defines))
    need = LAYOUTS.get(args.source)
    note = f" (weights of layout '{need}': compile with -D layout={need})" if need else ""
    return f"{rep.summary()}; wrote {out}{note}"


#: Input suffix -> converter(args) -> message.
CONVERTERS: dict[str, Callable] = {
    ".caffemodel": from_caffemodel,
    ".pt": from_checkpoint,
    ".pth": from_checkpoint,
    ".prototxt": from_prototxt,
}


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not os.path.isfile(args.input):
        raise DeepLabError(f"{args.input}: no such file", loc=None,
                           hint="give a .caffemodel, .pt or .prototxt file")
    if args.source:
        print(from_pretrained(args), file=sys.stderr)
        return 0
    suffix = os.path.splitext(args.input)[1].lower()
    convert = CONVERTERS.get(suffix)
    if convert is None:
        raise DeepLabError(f"cannot convert '{args.input}': unknown suffix '{suffix}'",
                           hint="inputs are " + ", ".join(CONVERTERS))
    print(convert(args), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
