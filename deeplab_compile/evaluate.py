"""Segmentation evaluation: confusion matrix, per-class IoU, mean IoU, pixel accuracy.

``evaluate(pred_dir, gt_dir, ids, num_classes)`` reads, for every image id:

* the ground truth ``<gt_dir>/<id>.png`` (palette or grayscale class ids; a dataset
  ``label_map`` may be applied, see :mod:`deeplab_compile.data.labels`);
* the prediction ``<pred_dir>/<id>.png`` (class ids), or DeepLab's MatWrite features
  ``<pred_dir>/<id>_blob_0.mat`` ([W, H, C, N] scores of the padded input): cropped at
  the top-left to the image size, then the arg-max over C (ties go to the lowest
  class).

Pixels whose ground truth is ``ignore_label`` (255) are skipped; any other value outside
``[0, C)`` is an error naming the file and the value, and so is a prediction outside it.
From the C x C confusion matrix M (rows: ground truth, columns: prediction):

* IoU of class c: ``M[c,c] / (row_c + col_c - M[c,c])``, undefined (NaN, shown as '-')
  when the class is in neither ground truth nor prediction;
* two means of the IoUs, reported side by side:

  - ``miou`` (the defined-classes mean): the mean over the classes whose IoU is
    defined, so a class in neither ground truth nor prediction is left out;
  - ``miou_deeplab`` (DeepLab's MATLAB mean, ``MyVOCevalseg.m`` called by
    ``EvalSegResults.m``): such a class counts as IoU 0 (its union is taken as 1) and
    the sum is divided by all C classes.  DeepLab cross-validated its CRF parameters
    with this number on val subsets, where classes go missing.

  With every class present (full VOC val) the two are equal;
* pixel accuracy ``trace(M) / sum(M)``; mean class accuracy ``mean_c M[c,c] / row_c``
  over classes present in the ground truth.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from .data.errors import DataError
from .data.labels import CITYSCAPES_CLASSES, VOC_CLASSES, map_labels
from .errors import DeepLabError, Loc


class EvalError(DeepLabError):
    """Missing, unreadable or out-of-range predictions or ground truth."""


def confusion(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_label: int = 255) -> np.ndarray:
    """C x C counts (rows ground truth, columns prediction) over the pixels not ignored."""
    keep = gt != ignore_label
    g = gt[keep].astype(np.int64)
    p = pred[keep].astype(np.int64)
    return np.bincount(g * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def scores(conf: np.ndarray) -> dict:
    conf = conf.astype(np.float64)
    diag = np.diag(conf)
    rows, cols, total = conf.sum(1), conf.sum(0), conf.sum()
    union = rows + cols - diag
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, diag / np.maximum(union, 1), np.nan)
        acc_c = np.where(rows > 0, diag / np.maximum(rows, 1), np.nan)
    defined = ~np.isnan(iou)
    return {"iou": iou, "miou": float(iou[defined].mean()) if defined.any() else float("nan"),
            "miou_deeplab": miou_deeplab(conf),
            "pixel_accuracy": float(diag.sum() / total) if total else float("nan"),
            "mean_class_accuracy": float(np.nanmean(acc_c)) if (rows > 0).any() else float("nan")}


def miou_deeplab(conf: np.ndarray) -> float:
    """DeepLab's MATLAB mean IoU (``MyVOCevalseg.m``): per class TP / (TP + FP + FN) with
    a zero union replaced by 1 (so an absent class scores 0), summed and divided by the
    number of classes."""
    conf = np.asarray(conf, dtype=np.float64)
    diag = np.diag(conf)
    union = conf.sum(1) + conf.sum(0) - diag
    return float((diag / np.where(union == 0, 1.0, union)).sum() / conf.shape[0])


def class_names(num_classes: int) -> list[str]:
    if num_classes == 21:
        return list(VOC_CLASSES)
    if num_classes == 19:
        return list(CITYSCAPES_CLASSES)
    return [f"class_{c}" for c in range(num_classes)]


def read_ids(list_path: str) -> list[tuple[str, int]]:
    """Ids of a list: an id per line (``val_id.txt``) or ``image label`` lines (the id is
    the image's base name).  Returns ``(id, line)`` pairs."""
    from .data.listfile import image_id
    try:
        with open(list_path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise EvalError(f"cannot read list '{list_path}': {e.strerror or e}")
    out = []
    for n, ln in enumerate(lines, 1):
        t = ln.split()
        if t and not t[0].startswith("#"):
            out.append((image_id(t[0]), n))
    if not out:
        raise EvalError(f"list '{list_path}' has no entries")
    return out


def read_prediction(pred_dir: str, image_id: str, size: tuple[int, int], where: Loc) -> np.ndarray:
    from .data.dataset import read_label
    png = os.path.join(pred_dir, image_id + ".png")
    mat = os.path.join(pred_dir, image_id + "_blob_0.mat")
    if os.path.exists(png):
        pred = read_label(png, where=where)
        if pred.shape != size:
            raise EvalError(f"prediction '{png}' is {pred.shape[1]}x{pred.shape[0]}, the ground truth "
                            f"{size[1]}x{size[0]} (W x H)", loc=where)
        return pred
    if os.path.exists(mat):
        from .io.features import read_blob
        blob = read_blob(mat)[0]
        h, w = size
        if blob.shape[1] < h or blob.shape[2] < w:
            raise EvalError(f"features '{mat}' are {blob.shape[2]}x{blob.shape[1]}, smaller than the "
                            f"{w}x{h} image", loc=where, hint="test with a crop at least as large as the images")
        return blob[:, :h, :w].argmax(0).astype(np.int32)
    raise EvalError(f"no prediction for '{image_id}' (looked for {png} and {mat})", loc=where)


@dataclass
class EvalResult:
    confusion: np.ndarray
    scores: dict
    names: list[str]
    images: int

    def to_json(self) -> dict:
        iou = self.scores["iou"]
        return {"images": self.images, "num_classes": len(self.names),
                "miou": self.scores["miou"], "miou_deeplab": self.scores["miou_deeplab"],
                "miou_conventions": {"miou": "mean over the classes in ground truth or prediction",
                                     "miou_deeplab": "DeepLab's MyVOCevalseg.m: absent classes count 0, "
                                                     "mean over all classes"},
                "pixel_accuracy": self.scores["pixel_accuracy"],
                "mean_class_accuracy": self.scores["mean_class_accuracy"],
                "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(self.names, iou)},
                "confusion": self.confusion.astype(int).tolist()}

    def table(self) -> str:
        w = max(len(n) for n in self.names + ["pixel accuracy"])
        lines = [f"{'class':<{w}}  {'IoU':>7}", "-" * (w + 9)]
        for n, v in zip(self.names, self.scores["iou"]):
            lines.append(f"{n:<{w}}  {'-' if np.isnan(v) else f'{100 * v:6.2f}%':>7}")
        lines.append("-" * (w + 9))
        lines.append(f"{'mIOU':<{w}}  {100 * self.scores['miou']:6.2f}%  defined classes: mean over the "
                     f"{int((~np.isnan(self.scores['iou'])).sum())} classes in ground truth or prediction")
        lines.append(f"{'mIOU (DeepLab)':<{w}}  {100 * self.scores['miou_deeplab']:6.2f}%  DeepLab's MyVOCevalseg.m: "
                     f"absent classes count 0, mean over all {len(self.names)}")
        lines.append(f"{'pixel accuracy':<{w}}  {100 * self.scores['pixel_accuracy']:6.2f}%")
        lines.append(f"{'mean accuracy':<{w}}  {100 * self.scores['mean_class_accuracy']:6.2f}%")
        return "\n".join(lines)


def evaluate(pred_dir: str, gt_dir: str, list_path: str, num_classes: int, *, ignore_label: int = 255,
             label_map: str = "none", names: list[str] | None = None, progress: bool = False) -> EvalResult:
    from .data.dataset import read_label
    if not os.path.isdir(pred_dir):
        raise EvalError(f"prediction folder '{pred_dir}' does not exist")
    if not os.path.isdir(gt_dir):
        raise EvalError(f"ground-truth folder '{gt_dir}' does not exist")
    ids = read_ids(list_path)
    conf = np.zeros((num_classes, num_classes), np.int64)
    it = ids
    if progress:
        from tqdm import tqdm
        it = tqdm(ids, desc="eval", unit="img")
    for image_id, line in it:
        where = Loc(list_path, line, 1)
        gt_path = os.path.join(gt_dir, image_id + ".png")
        if not os.path.exists(gt_path):
            raise EvalError(f"ground truth '{gt_path}' does not exist", loc=where)
        try:
            gt = map_labels(read_label(gt_path, where=where), label_map)
            pred = read_prediction(pred_dir, image_id, gt.shape, where)
        except DataError as e:
            raise EvalError(e.message, loc=e.loc, hint=e.hint) from None
        bad = (gt != ignore_label) & ((gt < 0) | (gt >= num_classes))
        if bad.any():
            raise EvalError(f"ground truth '{gt_path}' has value {int(gt[bad][0])} outside [0, {num_classes}) "
                            f"that is not ignore_label {ignore_label}", loc=where,
                            hint="check --num-classes and --label-map")
        badp = (pred < 0) | (pred >= num_classes)
        if badp.any():
            raise EvalError(f"prediction for '{image_id}' has class {int(pred[badp][0])} outside "
                            f"[0, {num_classes})", loc=where, hint="check --num-classes")
        conf += confusion(pred, gt, num_classes, ignore_label)
    return EvalResult(confusion=conf, scores=scores(conf), names=names or class_names(num_classes), images=len(ids))


def save_json(result: EvalResult, path: str) -> str:
    from .io.atomic import atomic_write
    with atomic_write(path, "w") as f:
        json.dump(result.to_json(), f, indent=1)
        f.write("\n")
    return path
