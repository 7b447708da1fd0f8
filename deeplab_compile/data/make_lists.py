"""Write a dataset's list files (DeepLab's ``/image /label`` lines) from its own layout.

    python -m deeplab_compile.data.make_lists --dataset voc12 --data-root /data/VOCdevkit/VOC2012 \\
        [--sbd /data/benchmark_RELEASE/dataset] --out experiments/voc12/list
    python -m deeplab_compile.data.make_lists --dataset cityscapes --data-root /data/cityscapes --out DIR

``experiments/<dataset>/list/make_lists.py`` is this command with ``--dataset`` and
``--out`` set to its own folder.  The layouts are in :mod:`.datasets`.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..errors import DeepLabError
from .datasets import DATASETS, make_lists


def build_parser(dataset: str | None = None, out: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="make_lists.py", description="Write a dataset's list files from DATA_ROOT.")
    p.add_argument("--dataset", choices=sorted(DATASETS), default=dataset, required=dataset is None)
    p.add_argument("--data-root", required=True, help="the dataset folder (VOC: VOCdevkit/VOC2012)")
    p.add_argument("--out", default=out, required=out is None, help="where the lists go")
    p.add_argument("--sbd", default=os.environ.get("SBD_ROOT", ""),
                   help="VOC only: SBD's dataset folder with train.txt and val.txt (default: $SBD_ROOT)")
    p.add_argument("--label-dir", default="SegmentationClassAug", help="VOC only: the label folder")
    return p


def main(argv: list[str] | None = None, *, dataset: str | None = None, out: str | None = None) -> int:
    a = build_parser(dataset, out).parse_args(argv)
    options = {"sbd": a.sbd, "label_dir": a.label_dir} if a.dataset == "voc12" else {}
    try:
        make_lists(a.dataset, a.data_root, a.out, **options)
    except DeepLabError as err:
        print(f"make_lists.py: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
