"""deeplab-crf: dense CRF post-processing of saved features, and its parameter search.

    deeplab-crf --features DIR --images DIR --list val.txt [--out DIR] --preset deeplab_largefov
    deeplab-crf --features DIR --images DIR --list val.txt --labels DIR --subset 100 \\
                --grid bi_w=3,4,5 bi_xy_std=49:20:129 bi_rgb_std=3,4,5 [--rank-by deeplab|defined]

Features are DeepLab MatWrite files (``<id>_blob_0.mat``, variable ``data``, [W,H,C,N]
float32 at the crop size); they are cropped to each image's size.  Labels are written
as VOC-palette PNGs, by default into ``<features>/post_densecrf_W4_XStd121_RStd5_PosW3_PosXStd3``
as DeepLab named it.  Outputs are written atomically and complete ones are skipped, so
an interrupted run resumes.  The CRF normalises its kernels as DeepLab's densecrf code
did (``--normalization after``, the default); ``--normalization symmetric`` (or a
``pydensecrf_*`` preset) gives pydensecrf's default, and adds ``_symmetric`` to the
folder name.  The grid is ranked by DeepLab's MATLAB mIOU (absent classes count 0, mean
over all classes), the number DeepLab cross-validated with; ``--rank-by defined`` ranks
by the mean over the classes present instead.  A bad input file is reported and skipped; the exit status
is then 1.  Errors in the command itself exit with 2.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading

import numpy as np

from ..crf import PRESETS, dense_crf, resolve
from ..crf.errors import CRFError
from ..crf.folder import crf_folder, load_pair, map_jobs, progress, report, set_threads
from ..crf.grid import RANKINGS, confusion, expand_grid, mean_iou, mean_iou_deeplab, write_table
from ..crf.params import DEEPLAB_KEYS, NORMALIZATIONS
from ..errors import DeepLabError
from ..io.mat import FEATURE_SUFFIX
from ..io.palette import PALETTES, read_label_png
from .common import Parser, entry_point


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="deeplab-crf", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", required=True, help="folder of <id>_blob_0.mat feature files")
    p.add_argument("--images", required=True, help="folder of the images (<id>.jpg or .png)")
    p.add_argument("--list", dest="list_file",
                   help="image ids, one a line (DeepLab's '/JPEGImages/x.jpg /SegmentationClassAug/x.png' "
                        "lines work too); default: every feature file in --features")
    p.add_argument("--out", help="output folder (default: <features>/post_densecrf_W.._PosXStd..)")
    p.add_argument("--preset", default="deeplab_largefov", choices=sorted(PRESETS),
                   help="published parameter set (default deeplab_largefov: 4/121/5/3/3, DeepLab's "
                        "normalisation; pydensecrf_* are the same numbers with pydensecrf's)")
    for key in DEEPLAB_KEYS:
        p.add_argument("--" + key.replace("_", "-"), "--" + key, dest=key, type=float, metavar="X",
                       help=f"override the preset's {key}")
    p.add_argument("--iterations", "--max-iter", type=int, default=10, help="mean-field steps (default 10)")
    p.add_argument("--normalization", choices=NORMALIZATIONS,
                   help="kernel normalisation (default: the preset's; 'after' as DeepLab's densecrf, "
                        "'symmetric' as pydensecrf's default)")
    p.add_argument("--scores", choices=("logits", "probs"), default="logits",
                   help="what the features hold (default logits: DeepLab saved fc8)")
    p.add_argument("--save-probs", action="store_true",
                   help="also write the CRF marginals as <out>/probs/<id>_blob_0.mat (MatWrite format)")
    p.add_argument("--palette", default="voc", choices=sorted(PALETTES))
    p.add_argument("--jobs", "-j", type=int, default=1, help="images processed at once (default 1)")
    p.add_argument("--feature-suffix", default=FEATURE_SUFFIX)
    p.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    g = p.add_argument_group("parameter search")
    g.add_argument("--grid", nargs="+", metavar="KEY=VALUES",
                   help="e.g. bi_w=3,4,5 bi_xy_std=49:20:129 (start:step:stop) bi_rgb_std=3,4,5")
    g.add_argument("--labels", help="folder of ground-truth label PNGs <id>.png (255 = ignore)")
    g.add_argument("--subset", type=int, help="use the first N ids of the list")
    g.add_argument("--rank-by", choices=RANKINGS, default="deeplab",
                   help="order by DeepLab's MATLAB mIOU (default: absent classes count 0, mean over all "
                        "classes, as DeepLab's cross-validation) or by the mean over the classes present")
    g.add_argument("--csv", help="where to save the table (default <features>/crf_grid.csv)")
    return p


def read_ids(list_file: str | None, features: str, suffix: str) -> list[str]:
    if list_file is None:
        return sorted(f[: -len(suffix)] for f in os.listdir(features) if f.endswith(suffix))
    try:
        with open(list_file) as f:
            lines = [ln.strip() for ln in f]
    except OSError as err:
        raise DeepLabError(f"--list {list_file}: cannot read ({err.strerror})") from None
    ids = []
    for ln in lines:
        if ln and not ln.startswith("#"):
            ids.append(os.path.splitext(os.path.basename(ln.split()[0]))[0])
    return ids


def run_crf(args, params, ids: list[str]) -> int:
    return crf_folder(args.features, args.images, ids, params, out=args.out, iterations=args.iterations,
                      scores=args.scores, palette=args.palette, jobs=args.jobs, save_probs=args.save_probs,
                      overwrite=args.overwrite, suffix=args.feature_suffix, quiet=args.quiet)


def run_grid(args, base, ids: list[str]) -> int:
    if not args.labels:
        raise DeepLabError("--grid needs --labels DIR (ground-truth label PNGs) to score the settings")
    settings = expand_grid(args.grid, base)
    lock = threading.Lock()
    num_classes = None
    confs: list[np.ndarray | None] = [None] * (len(settings) + 1)  # last: no CRF

    def work(image_id: str) -> None:
        nonlocal num_classes
        img, scores = load_pair(args.features, args.images, image_id, args.feature_suffix)
        lab_path = os.path.join(args.labels, image_id + ".png")
        if not os.path.isfile(lab_path):
            raise CRFError(f"{image_id}: no ground-truth label {lab_path}")
        gt = read_label_png(lab_path)
        if gt.shape != img.shape[:2]:
            raise CRFError(f"{image_id}: label {gt.shape[0]}x{gt.shape[1]} differs from image "
                           f"{img.shape[0]}x{img.shape[1]}")
        C = scores.shape[0]
        local = [confusion(dense_crf(img, scores, s, args.iterations, kind=args.scores).argmax(0), gt, C)
                 for s in settings]
        local.append(confusion(scores.argmax(0), gt, C))
        with lock:
            if num_classes is None:
                num_classes = C
            elif C != num_classes:
                raise CRFError(f"{image_id}: features have {C} labels, earlier ones {num_classes}")
            for k, c in enumerate(local):
                confs[k] = c if confs[k] is None else confs[k] + c

    failed, ok = [], 0
    with progress(len(ids), args.quiet, f"CRF grid ({len(settings)} settings)") as bar:
        for image_id, res in map_jobs(args.jobs, work, ids, bar):
            if isinstance(res, BaseException):
                if isinstance(res, KeyboardInterrupt):
                    raise res
                failed.append(report(bar, image_id, res))
            else:
                ok += 1
    if ok == 0:
        raise DeepLabError("no image could be scored; see the messages above")
    rows = [dict(p.as_dict(), miou_deeplab=round(100 * mean_iou_deeplab(c), 3), miou=round(100 * mean_iou(c), 3),
                 images=ok) for p, c in zip(settings, confs)]
    key = "miou_deeplab" if args.rank_by == "deeplab" else "miou"
    rows.sort(key=lambda r: (-r[key], -r["miou_deeplab" if key == "miou" else "miou"]))
    print(f"ranked by {'DeepLab' if key == 'miou_deeplab' else 'defined-classes'} mIOU; "
          f"DeepLab = MyVOCevalseg.m (absent classes count 0, mean over all {num_classes}), "
          f"defined = mean over the classes in ground truth or prediction; normalization {base.normalization}")
    head = ["rank"] + list(DEEPLAB_KEYS) + ["DeepLab", "defined"]
    widths = [4] + [max(len(k), 6) for k in DEEPLAB_KEYS] + [7, 7]
    print("  ".join(h.rjust(w) for h, w in zip(head, widths)))
    for i, r in enumerate(rows, 1):
        cells = [str(i)] + [f"{r[k]:g}" for k in DEEPLAB_KEYS] + [f"{r['miou_deeplab']:.2f}", f"{r['miou']:.2f}"]
        print("  ".join(c.rjust(w) for c, w in zip(cells, widths)))
    print(f"without CRF: mIOU {100 * mean_iou_deeplab(confs[-1]):.2f} (DeepLab), {100 * mean_iou(confs[-1]):.2f} "
          f"(defined) over {ok} images" + (f" ({len(failed)} skipped)" if failed else ""))
    csv_path = args.csv or os.path.join(args.features, "crf_grid.csv")
    write_table(csv_path, rows)
    print(f"deeplab-crf: table saved to {csv_path}", file=sys.stderr)
    return 1 if failed else 0


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("features", "images"):
        path = getattr(args, name)
        if not os.path.isdir(path):
            raise DeepLabError(f"--{name} {path}: not a folder")
    if args.labels and not os.path.isdir(args.labels):
        raise DeepLabError(f"--labels {args.labels}: not a folder")
    if args.jobs < 1:
        raise DeepLabError(f"--jobs must be >= 1, got {args.jobs}")
    if args.iterations < 0:
        raise DeepLabError(f"--iterations must be >= 0, got {args.iterations}")
    overrides = {k: getattr(args, k) for k in DEEPLAB_KEYS if getattr(args, k) is not None}
    if args.normalization:
        overrides["normalization"] = args.normalization
    params = resolve(args.preset, **overrides)
    ids = read_ids(args.list_file, args.features, args.feature_suffix)
    if args.subset is not None:
        if args.subset < 1:
            raise DeepLabError(f"--subset must be >= 1, got {args.subset}")
        ids = ids[: args.subset]
    if not ids:
        raise DeepLabError("no image ids: the list is empty and no feature files were found")
    set_threads(args.jobs)
    if args.grid:
        return run_grid(args, params, ids)
    return run_crf(args, params, ids)


if __name__ == "__main__":
    sys.exit(main())
