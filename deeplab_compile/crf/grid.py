"""DeepLab's CRF cross-validation: a grid of parameter settings scored by mIOU.

``bi_w=3,4,5`` lists values; ``bi_xy_std=49:20:129`` is MATLAB's start:step:stop
(49, 69, 89, 109, 129), as in DeepLab's run scripts.
"""
from __future__ import annotations

import csv
import itertools
import os

import numpy as np

from ..errors import did_you_mean
from .errors import CRFError
from .params import DEEPLAB_KEYS, CRFParams


def _number(text: str, key: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise CRFError(f"--grid {key}: '{text}' is not a number") from None


def parse_grid_axis(spec: str) -> tuple[str, list[float]]:
    """``"bi_w=3,4,5"`` or ``"bi_xy_std=49:20:129"`` -> (key, values)."""
    if "=" not in spec:
        raise CRFError(f"--grid entry '{spec}' must read key=values", hint="e.g. bi_w=3,4,5 or bi_xy_std=49:20:129")
    key, _, rhs = spec.partition("=")
    key = key.strip().replace("-", "_")
    if key not in DEEPLAB_KEYS:
        raise CRFError(f"--grid: unknown parameter '{key}'",
                       hint=did_you_mean(key, DEEPLAB_KEYS) or f"use {', '.join(DEEPLAB_KEYS)}")
    values: list[float] = []
    for part in rhs.split(","):
        part = part.strip()
        if not part:
            continue
        if ":" in part:
            bits = part.split(":")
            if len(bits) != 3:
                raise CRFError(f"--grid {key}: range '{part}' must be start:step:stop")
            start, step, stop = (_number(b, key) for b in bits)
            if step <= 0 or stop < start:
                raise CRFError(f"--grid {key}: range '{part}' needs step > 0 and stop >= start")
            n = int(np.floor((stop - start) / step + 1e-9)) + 1
            values += [start + i * step for i in range(n)]
        else:
            values.append(_number(part, key))
    if not values:
        raise CRFError(f"--grid {key}: no values")
    return key, values


def expand_grid(specs: list[str], base: CRFParams) -> list[CRFParams]:
    """Every combination of the grid axes, other parameters from ``base``."""
    axes = [parse_grid_axis(s) for s in specs]
    keys = [k for k, _ in axes]
    dup = {k for k in keys if keys.count(k) > 1}
    if dup:
        raise CRFError(f"--grid: parameter '{sorted(dup)[0]}' given twice")
    return [base.with_(**dict(zip(keys, combo))) for combo in itertools.product(*(v for _, v in axes))]


def confusion(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore: int = 255) -> np.ndarray:
    """num_classes x num_classes counts (rows: ground truth, columns: prediction)."""
    keep = (gt != ignore) & (gt < num_classes)
    idx = gt[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


RANKINGS = ("deeplab", "defined")   # which mean IoU orders the grid; DeepLab's first (the default)


def mean_iou_deeplab(conf: np.ndarray) -> float:
    """DeepLab's MATLAB mean (``MyVOCevalseg.m``), the one its CRF cross-validation used:
    TP / (TP + FP + FN) per class, a class absent from ground truth and prediction
    counting 0, summed and divided by all classes."""
    tp = np.diag(conf).astype(np.float64)
    denom = conf.sum(0) + conf.sum(1) - tp
    return float((tp / np.where(denom > 0, denom, 1)).sum() / conf.shape[0])


def mean_iou(conf: np.ndarray) -> float:
    """Mean over classes that occur (in ground truth or prediction) of TP / (TP + FP + FN)."""
    tp = np.diag(conf).astype(np.float64)
    denom = conf.sum(0) + conf.sum(1) - tp
    present = denom > 0
    return float((tp[present] / denom[present]).mean()) if present.any() else 0.0


def write_table(path: str | os.PathLike, rows: list[dict]) -> None:
    from ..io.atomic import atomic_write
    fields = list(DEEPLAB_KEYS) + ["normalization", "miou_deeplab", "miou", "images"]
    with atomic_write(path, "w") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow(r)
