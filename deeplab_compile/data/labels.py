"""Label maps of the supported datasets: raw label values -> training ids, ignore 255.

* ``voc``: PASCAL VOC 2012 / SBD ``SegmentationClassAug``: ids 0..20 as stored, 255 is
  the boundary band (ignored).
* ``cityscapes``: the 34 ``labelIds`` of ``*_gtFine_labelIds.png`` -> the 19 training ids of
  ``cityscapesscripts/helpers/labels.py`` (road 0 ... bicycle 18); every other id -> 255.
* ``ade20k``: ADEChallengeData2016 annotations 0..150, where 0 is "other".  TF DeepLab
  trains with 151 outputs and ``ignore_label=0``; the same data here gives the 150 real
  classes ids 0..149 (``k -> k - 1``) and 0 becomes 255, so ``num_classes: 150`` and the
  usual ``ignore_label: 255`` hold for every dataset.
"""
from __future__ import annotations

import numpy as np

IGNORE = 255

# labelId -> trainId (cityscapesscripts helpers/labels.py); ids not listed are ignored.
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                        24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                      "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
                      "bus", "train", "motorcycle", "bicycle")
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
               "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")


def _lut(mapping: dict[int, int], default: int = IGNORE, size: int = 65536) -> np.ndarray:
    lut = np.full(size, default, np.int32)
    for k, v in mapping.items():
        lut[k] = v
    return lut


_CITYSCAPES_LUT = _lut(CITYSCAPES_TRAIN_IDS)
_ADE_LUT = np.arange(-1, 65535, dtype=np.int32)
_ADE_LUT[0] = IGNORE

LABEL_MAPS = ("none", "voc", "cityscapes", "ade20k")
NUM_CLASSES = {"voc": 21, "cityscapes": 19, "ade20k": 150}


def map_labels(seg: np.ndarray, label_map: str) -> np.ndarray:
    """Apply a dataset's label map to a label image of non-negative integers."""
    if label_map in ("none", "voc"):
        return seg
    if label_map == "cityscapes":
        return _CITYSCAPES_LUT[seg]
    if label_map == "ade20k":
        return _ADE_LUT[seg]
    raise ValueError(f"unknown label map {label_map!r}")
