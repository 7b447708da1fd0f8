"""Dense CRF over a folder of saved features: the work behind ``deeplab-crf`` and the
experiment's CRF step.

Features are DeepLab MatWrite files (``<id>_blob_0.mat``, variable ``data``, [W,H,C,N]
float32 at the crop size); they are cropped to each image's size.  Labels are written
as palette PNGs, atomically, and complete ones are skipped, so an interrupted run
resumes.  A bad input file is reported and skipped.
"""
from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np

from ..errors import DeepLabError
from ..io.mat import FEATURE_SUFFIX, read_scores, write_blob
from ..io.palette import write_label_png
from .errors import CRFError
from .inference import dense_crf
from .params import CRFParams

IMAGE_EXTS = (".jpg", ".png", ".jpeg", ".JPEG", ".JPG", ".PNG", ".bmp")


def find_image(images: str, image_id: str) -> str | None:
    for ext in IMAGE_EXTS:
        path = os.path.join(images, image_id + ext)
        if os.path.isfile(path):
            return path
    return None


def load_pair(features: str, images: str, image_id: str, suffix: str = FEATURE_SUFFIX):
    """(RGB uint8 image, C x H x W scores cropped to it) for one id."""
    from PIL import Image

    feat = os.path.join(features, image_id + suffix)
    if not os.path.isfile(feat):
        raise CRFError(f"{image_id}: no feature file {feat}")
    img_path = find_image(images, image_id)
    if img_path is None:
        raise CRFError(f"{image_id}: missing image for feature file {feat}",
                       hint=f"looked for {image_id}{{{','.join(IMAGE_EXTS[:3])},...}} in {images}")
    try:
        with Image.open(img_path) as im:
            img = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except OSError as err:
        raise CRFError(f"{img_path}: cannot read image ({err})") from None
    scores = read_scores(feat, img.shape[0], img.shape[1])
    return img, scores


def outputs(out: str, image_id: str, save_probs: bool) -> list[str]:
    paths = [os.path.join(out, image_id + ".png")]
    if save_probs:
        paths.append(os.path.join(out, "probs", image_id + FEATURE_SUFFIX))
    return paths


def complete(paths: list[str]) -> bool:
    # Writes are atomic (temporary file + rename), so an existing file is a whole one.
    return all(os.path.isfile(p) and os.path.getsize(p) > 0 for p in paths)


def progress(total: int, quiet: bool, desc: str):
    from tqdm import tqdm
    return tqdm(total=total, disable=quiet, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True)


def set_threads(jobs: int) -> None:
    import torch
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // jobs))


def map_jobs(jobs: int, fn, items, bar):
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


def report(bar, image_id: str, err: BaseException) -> str:
    msg = str(err) if isinstance(err, DeepLabError) else f"{image_id}: {type(err).__name__}: {err}"
    if image_id not in msg:
        msg = f"{image_id}: {msg}"
    bar.write(f"deeplab-crf: skipped {msg}", file=sys.stderr)
    return msg


def crf_folder(features: str, images: str, ids: list[str], params: CRFParams, *, out: str | None = None,
               iterations: int = 10, scores: str = "logits", palette: str = "voc", jobs: int = 1,
               save_probs: bool = False, overwrite: bool = False, suffix: str = FEATURE_SUFFIX,
               quiet: bool = False) -> int:
    """Label PNGs (and with ``save_probs`` the marginals) of every id into ``out``
    (default ``<features>/post_densecrf_W.._PosXStd..``, DeepLab's name); returns 1 when
    an image failed (each is reported on stderr), else 0."""
    out = out or os.path.join(features, params.dirname())
    todo = [i for i in ids if overwrite or not complete(outputs(out, i, save_probs))]
    done_before = len(ids) - len(todo)
    os.makedirs(out, exist_ok=True)

    def work(image_id: str) -> None:
        img, s = load_pair(features, images, image_id, suffix)
        q = dense_crf(img, s, params, iterations, kind=scores)
        paths = outputs(out, image_id, save_probs)
        if save_probs:
            write_blob(paths[1], q[None])
        write_label_png(paths[0], q.argmax(0).astype(np.uint8), palette)

    failed = []
    with progress(len(todo), quiet, "dense CRF") as bar:
        for image_id, res in map_jobs(jobs, work, todo, bar):
            if isinstance(res, BaseException):
                if isinstance(res, KeyboardInterrupt):
                    raise res
                failed.append(report(bar, image_id, res))
    print(f"deeplab-crf: {len(todo) - len(failed)} written, {done_before} already complete, "
          f"{len(failed)} failed -> {out}", file=sys.stderr)
    return 1 if failed else 0
