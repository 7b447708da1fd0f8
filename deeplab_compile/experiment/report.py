"""What an experiment shows at the end: the before/after-CRF table of a stage
(``res/<NET_ID>/<set>/summary.txt``) and the picture image | ground truth | before CRF |
after CRF (``before_after_crf.png``)."""
from __future__ import annotations

import os

import numpy as np

from ..data.labels import map_labels
from ..data.listfile import join
from ..io.atomic import atomic_path, atomic_write
from ..io.mat import FEATURE_SUFFIX, read_scores
from ..io.palette import colorize, read_label_png
from .settings import Settings
from .steps import list_entries


def table(s: Settings, test_set: str, before: dict, after: dict | None) -> str:
    rows = [("before CRF (fc8)", before)] + ([("after CRF", after)] if after else [])
    lines = [f"{s.net_id} on {test_set} ({before['images']} images, {s.num_labels} classes)",
             f"{'':<18}{'mIOU':>9}{'pixel acc.':>13}"]
    for label, res in rows:
        lines.append(f"{label:<18}{100 * res['miou']:>8.2f}%{100 * res['pixel_accuracy']:>12.2f}%")
    if after:
        lines.append(f"{'CRF gain':<18}{100 * (after['miou'] - before['miou']):>+8.2f} "
                     f"{100 * (after['pixel_accuracy'] - before['pixel_accuracy']):>+11.2f}")
    return "\n".join(lines)


def write_summary(path: str, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text + "\n")


def picture(s: Settings, lst: str, feats: str, crf_dir: str, path: str, count: int = 4) -> str:
    """image | ground truth | before CRF | after CRF, for the first ``count`` ids."""
    from PIL import Image, ImageDraw
    rows, widths = [], []
    for e in list_entries(lst)[:count]:
        img = np.asarray(Image.open(join(s.data_root, e[1])).convert("RGB"))
        h, w = img.shape[:2]
        gt = read_label_png(join(s.data_root, e[2])) if e[2] else np.full((h, w), 255, np.uint8)
        if s.label_map != "none":
            gt = map_labels(gt, s.label_map)
        before = read_scores(os.path.join(feats, e[0] + FEATURE_SUFFIX), h, w).argmax(0)
        after = read_label_png(os.path.join(crf_dir, e[0] + ".png"))
        tiles = [img] + [colorize(np.asarray(x).astype(np.uint8), s.palette)[..., :3] for x in (gt, before, after)]
        gap = np.full((h, 4, 3), 255, np.uint8)
        rows.append(np.concatenate(sum([[t, gap] for t in tiles], [])[:-1], axis=1))
        widths = widths or [w]
    if not rows:
        return ""
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    head = Image.new("RGB", (width, 14), (255, 255, 255))
    draw, x = ImageDraw.Draw(head), 0
    for title in ("image", "ground truth", "before CRF", "after CRF"):
        draw.text((x + 2, 1), title, fill=(0, 0, 0))
        x += widths[0] + 4
    padded.insert(0, np.asarray(head))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(np.concatenate(padded, axis=0)).save(tmp, format="PNG")
    return path
