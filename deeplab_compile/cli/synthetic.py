"""``deeplab-synthetic``: write the synthetic PASCAL-VOC-like dataset (:mod:`deeplab_compile.data.synthetic`).

    deeplab-synthetic OUT [--num-images 200] [--val-fraction 0.2] [--min-size 96]
                          [--max-size 128] [--seed 0] [--void-band 0] [--force]
"""
from __future__ import annotations

import argparse
import sys

from ..data.synthetic import NUM_CLASSES, generate
from ..errors import DeepLabError
from .common import Parser, entry_point


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="deeplab-synthetic",
                description="A synthetic PASCAL-VOC-like dataset, written in VOC's layout.")
    ap.add_argument("out", help="folder to write (VOC layout)")
    ap.add_argument("--num-images", type=int, default=200)
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--min-size", type=int, default=96)
    ap.add_argument("--max-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--void-band", type=int, default=0, help="pixels of 255 around each object (VOC: ~5)")
    ap.add_argument("--force", action="store_true", help="replace OUT if it exists")
    return ap


@entry_point
def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.num_images < 1 or not (0 <= a.val_fraction < 1) or not (8 <= a.min_size <= a.max_size):
        raise DeepLabError("need --num-images >= 1, 0 <= --val-fraction < 1 and 8 <= --min-size <= --max-size")
    generate(a.out, num_images=a.num_images, val_fraction=a.val_fraction, min_size=a.min_size,
             max_size=a.max_size, seed=a.seed, void_band=a.void_band, force=a.force)
    print(f"{a.out}: {a.num_images} images, {NUM_CLASSES} classes (list/train.txt, list/val.txt)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
