"""``deeplab-eval``: mean IoU of predictions against ground truth.

    deeplab-eval --pred res/val --gt VOC2012/SegmentationClassAug --list list/val.txt --num-classes 21
"""
from __future__ import annotations

import argparse
import os
import sys

from .common import Parser, entry_point


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="deeplab-eval", description="Confusion matrix, per-class IoU, mIOU and "
               "pixel accuracy of PNG predictions or MatWrite .mat features.")
    p.add_argument("--pred", required=True, help="folder of <id>.png predictions or <id>_blob_0.mat features")
    p.add_argument("--gt", required=True, help="folder of <id>.png ground-truth label maps")
    p.add_argument("--list", required=True, help="ids, one per line, or 'image label' lines")
    p.add_argument("--num-classes", type=int, required=True)
    p.add_argument("--ignore-label", type=int, default=255)
    p.add_argument("--label-map", choices=("none", "voc", "cityscapes", "ade20k"), default="none",
                   help="map ground-truth values first (cityscapes labelIds, ade20k 0..150)")
    p.add_argument("-o", "--out", help="JSON result (default: <pred>/results.json)")
    p.add_argument("--no-progress", action="store_true")
    return p


@entry_point
def main(argv: list[str] | None = None) -> int:
    from ..errors import DeepLabError
    from ..evaluate import evaluate, save_json
    a = build_parser().parse_args(argv)
    if a.num_classes < 1:
        raise DeepLabError("--num-classes must be >= 1")
    r = evaluate(a.pred, a.gt, a.list, a.num_classes, ignore_label=a.ignore_label, label_map=a.label_map,
                 progress=not a.no_progress and sys.stderr.isatty())
    print(r.table())
    out = a.out or os.path.join(a.pred, "results.json")
    save_json(r, out)
    print(f"{r.images} images; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
