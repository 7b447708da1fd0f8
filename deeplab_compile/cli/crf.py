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
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np

from ..crf import PRESETS, dense_crf, resolve
from ..crf.errors import CRFError
from ..crf.grid import RANKINGS, confusion, expand_grid, mean_iou, mean_iou_deeplab, write_table
from ..crf.params import DEEPLAB_KEYS, NORMALIZATIONS
from ..errors import DeepLabError
from ..io.mat import FEATURE_SUFFIX, read_scores, write_blob
from ..io.palette import PALETTES, read_label_png, write_label_png
from .common import entry_point

IMAGE_EXTS = (".jpg", ".png", ".jpeg", ".JPEG", ".JPG", ".PNG", ".bmp")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deeplab-crf", description=__doc__.split("\n\n")[0],
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


def find_image(images: str, image_id: str) -> str | None:
    for ext in IMAGE_EXTS:
        path = os.path.join(images, image_id + ext)
        if os.path.isfile(path):
            return path
    return None


def load_pair(args, image_id: str):
    """(RGB uint8 image, C x H x W scores cropped to it) for one id."""
    from PIL import Image

    feat = os.path.join(args.features, image_id + args.feature_suffix)
    if not os.path.isfile(feat):
        raise CRFError(f"{image_id}: no feature file {feat}")
    img_path = find_image(args.images, image_id)
    if img_path is None:
        raise CRFError(f"{image_id}: missing image for feature file {feat}",
                       hint=f"looked for {image_id}{{{','.join(IMAGE_EXTS[:3])},...}} in {args.images}")
    try:
        with Image.open(img_path) as im:
            img = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except OSError as err:
        raise CRFError(f"{img_path}: cannot read image ({err})") from None
    scores = read_scores(feat, img.shape[0], img.shape[1])
    return img, scores


def _outputs(args, out: str, image_id: str) -> list[str]:
    paths = [os.path.join(out, image_id + ".png")]
    if args.save_probs:
        paths.append(os.path.join(out, "probs", image_id + FEATURE_SUFFIX))
    return paths


def _complete(paths: list[str]) -> bool:
    # Writes are atomic (temporary file + rename), so an existing file is a whole one.
    return all(os.path.isfile(p) and os.path.getsize(p) > 0 for p in paths)


def _progress(total: int, quiet: bool, desc: str):
    from tqdm import tqdm
    return tqdm(total=total, disable=quiet, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True)


def _set_threads(jobs: int) -> None:
    import torch
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // jobs))


def _map(jobs: int, fn, items, bar):
    """Yield (item, result or exception) as items finish, ``jobs`` at a time."""
    if jobs <= 1:
        for it in items:
            try:
                yield it, fn(it)
            except Exception as err:  # reported per file by the caller
                yield it, err
            bar.update(1)
        return
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futs = {pool.submit(fn, it): it for it in items}
        for fut in as_completed(futs):
            err = fut.exception()
            yield futs[fut], (err if err is not None else fut.result())
            bar.update(1)


def _report(bar, image_id: str, err: BaseException) -> str:
    msg = str(err) if isinstance(err, DeepLabError) else f"{image_id}: {type(err).__name__}: {err}"
    if image_id not in msg:
        msg = f"{image_id}: {msg}"
    bar.write(f"deeplab-crf: skipped {msg}", file=sys.stderr)
    return msg


def run_crf(args, params, ids: list[str]) -> int:
    out = args.out or os.path.join(args.features, params.dirname())
    todo = [i for i in ids if args.overwrite or not _complete(_outputs(args, out, i))]
    done_before = len(ids) - len(todo)
    os.makedirs(out, exist_ok=True)

    def work(image_id: str) -> None:
        img, scores = load_pair(args, image_id)
        q = dense_crf(img, scores, params, args.iterations, kind=args.scores)
        paths = _outputs(args, out, image_id)
        if args.save_probs:
            write_blob(paths[1], q[None])
        write_label_png(paths[0], q.argmax(0).astype(np.uint8), args.palette)

    failed = []
    with _progress(len(todo), args.quiet, "dense CRF") as bar:
        for image_id, res in _map(args.jobs, work, todo, bar):
            if isinstance(res, BaseException):
                if isinstance(res, KeyboardInterrupt):
                    raise res
                failed.append(_report(bar, image_id, res))
    print(f"deeplab-crf: {len(todo) - len(failed)} written, {done_before} already complete, "
          f"{len(failed)} failed -> {out}", file=sys.stderr)
    return 1 if failed else 0


def run_grid(args, base, ids: list[str]) -> int:
    if not args.labels:
        raise DeepLabError("--grid needs --labels DIR (ground-truth label PNGs) to score the settings")
    settings = expand_grid(args.grid, base)
    lock = threading.Lock()
    num_classes = None
    confs: list[np.ndarray | None] = [None] * (len(settings) + 1)  # last: no CRF

    def work(image_id: str) -> None:
        nonlocal num_classes
        img, scores = load_pair(args, image_id)
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
    with _progress(len(ids), args.quiet, f"CRF grid ({len(settings)} settings)") as bar:
        for image_id, res in _map(args.jobs, work, ids, bar):
            if isinstance(res, BaseException):
                if isinstance(res, KeyboardInterrupt):
                    raise res
                failed.append(_report(bar, image_id, res))
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
    _set_threads(args.jobs)
    if args.grid:
        return run_grid(args, params, ids)
    return run_crf(args, params, ids)


if __name__ == "__main__":
    sys.exit(main())
