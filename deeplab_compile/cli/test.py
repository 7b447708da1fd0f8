"""``deeplab-test``: run the TEST phase over a list; MatWrite features, PNG predictions.

    deeplab-test --net config/test.yaml --weights model/train_iter_6000.pt --list list/val.txt \\
                 --root /data/VOC2012 [-D crop=513] [--features DIR] [--png DIR]
                 [--scales 0.5,0.75,1.0,1.25,1.5,1.75 --flip] [--gpu 0|cpu]
                 [--precision fp32|bf16|fp16] [--channels-last]
"""
from __future__ import annotations

import argparse
import sys

from .common import Parser, add_param_limit, add_precision_flags, entry_point, parse_resize_to_range


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="deeplab-test", description="Run a compiled net's TEST phase over "
               "an image list and write DeepLab MatWrite features and/or PNG predictions.")
    p.add_argument("--net", required=True, help="netdef (.yaml or .prototxt)")
    p.add_argument("--weights", required=True, help=".pt state dict or snapshot, or .caffemodel")
    p.add_argument("--list", help="list of 'image [label]' lines (default: the data layer's source)")
    p.add_argument("--root", help="root_folder prefixed to the list's paths")
    p.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME=VALUE",
                   help="netdef variable (repeatable), e.g. -D crop=513")
    p.add_argument("--features", metavar="DIR", help="write the score blob as DIR/<id>_blob_0.mat")
    p.add_argument("--blob", help="the output blob to write and predict from (default: the MatWrite "
                                  "bottom, else the first output)")
    p.add_argument("--png", metavar="DIR", help="write arg-max predictions as VOC palette PNGs")
    p.add_argument("--scales", default="1", help="comma-separated inference scales, e.g. 0.5,0.75,1.0,1.25")
    p.add_argument("--flip", action="store_true", help="also run mirrored images and average")
    p.add_argument("--preprocess", choices=("caffe", "imagenet", "tf"),
                   help="caffe: BGR minus mean; tf: RGB [-1, 1]; imagenet: RGB, torchvision's mean and std "
                        "(default: the data layer's mean_value and scale; where it sets none, or the net has no "
                        "data layer, the weights file's record, else the netdef's preprocess)")
    p.add_argument("--mean", help="B,G,R mean values (default: DeepLab's 104.008,116.669,122.675)")
    p.add_argument("--resize-to-range", metavar="MIN[,MAX[,FACTOR]]",
                   help="resize every image as TF DeepLab's min/max_resize_value and resize_factor, e.g. "
                        "513,513,16 (default: the data layer's resize_to_range); the scores are written at "
                        "the image's own size")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--gpu", help="CUDA device index, or 'cpu'")
    p.add_argument("--workers", type=int)
    add_precision_flags(p)
    p.add_argument("--no-progress", action="store_true")
    add_param_limit(p)
    return p


@entry_point
def main(argv: list[str] | None = None) -> int:
    from ..errors import DeepLabError
    from ..test import run_test
    from .common import parse_scales
    from .compile import parse_defines
    a = build_parser().parse_args(argv)
    scales = parse_scales(a.scales)
    data = {}
    if a.preprocess:
        data["preprocess"] = a.preprocess
    if a.mean:
        try:
            data["mean_value"] = [float(v) for v in a.mean.split(",")]
        except ValueError:
            raise DeepLabError(f"--mean {a.mean!r}: give B,G,R numbers") from None
    if a.resize_to_range is not None:
        data["resize_to_range"] = parse_resize_to_range(a.resize_to_range)
    r = run_test(a.net, a.weights, list_path=a.list, root=a.root, vars=parse_defines(a.defines), data=data,
                 gpu=a.gpu, batch_size=a.batch_size, scales=scales, flip=a.flip, features_dir=a.features,
                 blob=a.blob, png_dir=a.png, num_workers=a.workers, precision=a.precision,
                 channels_last=a.channels_last,
                 progress=not a.no_progress and sys.stderr.isatty())
    print(f"{r.images} images tested ({r.blob}); {len(r.files)} files written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
