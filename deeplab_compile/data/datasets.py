"""The datasets the experiment tree knows, in one table: PASCAL VOC 2012 (+SBD),
Cityscapes and ADE20K.

Each entry gives what differs between them: the number of classes, the label map
(:mod:`.labels`) and palette (:mod:`..io.palette`) by name, the class names, the image
and label folders under ``DATA_ROOT``, the training-list suffix, and the function that
writes the list files from the dataset's own layout.  ``experiments/<name>/run_experiment.sh``
names its entry with ``DATASET``; ``experiments/<name>/list/make_lists.py`` and
``python -m deeplab_compile.data.make_lists`` call :func:`make_lists`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from ..io.atomic import atomic_write
from .errors import DataError
from .labels import CITYSCAPES_CLASSES, VOC_CLASSES


def _read_ids(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [ln.split()[0] for ln in f if ln.strip()]


def voc_lists(data_root: str, *, sbd: str = "", label_dir: str = "SegmentationClassAug",
              say: Callable[[str], None] = print) -> dict[str, list[str]]:
    """DeepLab's VOC 2012 + SBD lists from ``ImageSets/Segmentation/{train,val,test}.txt``
    and SBD's ``train.txt`` / ``val.txt``: train_aug = (SBD train + SBD val + VOC train)
    - VOC val, trainval_aug = train_aug + VOC val; without SBD, train_aug is VOC train.
    Ids are sorted; ``val_id``/``test_id`` hold ids only (DeepLab's MatWrite source)."""
    sets = os.path.join(data_root, "ImageSets", "Segmentation")
    try:
        voc = {k: _read_ids(os.path.join(sets, k + ".txt")) for k in ("train", "val")}
    except OSError as e:
        raise DataError(f"{e.filename}: {e.strerror}", hint="is --data-root VOC2012?") from None
    test_path = os.path.join(sets, "test.txt")
    test = sorted(_read_ids(test_path)) if os.path.isfile(test_path) else []
    extra: set[str] = set()
    if sbd:
        for k in ("train", "val"):
            extra |= set(_read_ids(os.path.join(sbd, k + ".txt")))
    else:
        say("make_lists.py: no SBD lists (--sbd or SBD_ROOT): train_aug = VOC train")
    val = set(voc["val"])
    train_aug = sorted((extra | set(voc["train"])) - val)
    ids = {"train_aug": train_aug, "trainval_aug": sorted(set(train_aug) | val),
           "train": sorted(voc["train"]), "val": sorted(val)}
    lists = {name: [f"/JPEGImages/{i}.jpg /{label_dir}/{i}.png" for i in v] for name, v in ids.items()}
    lists["val_id"] = ids["val"]
    if test:
        lists["test"] = [f"/JPEGImages/{i}.jpg" for i in test]
        lists["test_id"] = test
    return lists


def cityscapes_lists(data_root: str, **_) -> dict[str, list[str]]:
    """``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` with
    ``gtFine/<split>/<city>/<name>_gtFine_labelIds.png`` for train / val, the image only
    for test (its ground truth is not public); trainval = train + val."""
    lists = {}
    for split in ("train", "val", "test"):
        top = os.path.join(data_root, "leftImg8bit", split)
        lines = []
        for city in sorted(os.listdir(top)) if os.path.isdir(top) else []:
            for f in sorted(os.listdir(os.path.join(top, city))):
                if not f.endswith("_leftImg8bit.png"):
                    continue
                img = f"/leftImg8bit/{split}/{city}/{f}"
                gt = f"/gtFine/{split}/{city}/{f[:-len('_leftImg8bit.png')]}_gtFine_labelIds.png"
                lines.append(img if split == "test" else f"{img} {gt}")
        if lines:
            lists[split] = lines
    if "train" not in lists or "val" not in lists:
        raise DataError(f"no leftImg8bit/train or leftImg8bit/val under {data_root}")
    lists["trainval"] = lists["train"] + lists["val"]
    return lists


def ade20k_lists(data_root: str, **_) -> dict[str, list[str]]:
    """``images/training/<id>.jpg`` with ``annotations/training/<id>.png`` -> train,
    ``validation`` -> val; trainval = both."""
    lists = {}
    for name, split in (("train", "training"), ("val", "validation")):
        top = os.path.join(data_root, "images", split)
        if not os.path.isdir(top):
            raise DataError(f"no {top}")
        ids = sorted(os.path.splitext(f)[0] for f in os.listdir(top) if f.endswith(".jpg"))
        lists[name] = [f"/images/{split}/{i}.jpg /annotations/{split}/{i}.png" for i in ids]
    lists["trainval"] = lists["train"] + lists["val"]
    return lists


@dataclass(frozen=True)
class Dataset:
    name: str                 # the experiments/<name>/ folder
    title: str
    num_labels: int           # classes the net predicts (NUM_LABELS)
    label_map: str            # stored label values -> training ids (data/labels.py)
    palette: str              # colours of label PNGs (io/palette.py)
    classes: tuple[str, ...] | None
    image_dir: str            # under DATA_ROOT, as the lists name them
    label_dir: str
    train_suffix: str         # stage 1 trains on train<suffix>, stage 2 on trainval<suffix>
    make: Callable[..., dict[str, list[str]]]
    data_root_hint: str       # what DATA_ROOT must hold; "" where the synthetic set stands in
    net_id: str               # NET_ID on real data (the synthetic set: deeplab_largefov_tiny)


DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("voc12", "PASCAL VOC 2012 + SBD", 21, "voc", "voc", VOC_CLASSES,   # 20 classes + background
            "JPEGImages", "SegmentationClassAug", "_aug", voc_lists, "", "deeplab_largefov"),
    Dataset("cityscapes", "Cityscapes (fine annotations)", 19, "cityscapes", "cityscapes",  # the 19 trainIds
            CITYSCAPES_CLASSES, "leftImg8bit", "gtFine", "", cityscapes_lists,
            "the Cityscapes folder (leftImg8bit/, gtFine/)", "deeplab_largefov_tiny"),
    Dataset("ade20k", "ADE20K (SceneParsing, ADEChallengeData2016)", 150, "ade20k", "ade20k",  # 0 = other, ignored
            None, "images", "annotations", "", ade20k_lists,
            "ADEChallengeData2016 (images/, annotations/)", "deeplab_largefov_tiny"),
)}


def get_dataset(name: str) -> Dataset:
    if name not in DATASETS:
        from ..netdef.errors import did_you_mean
        raise DataError(f"unknown dataset '{name}'",
                        hint=did_you_mean(name, list(DATASETS)) or "known: " + ", ".join(DATASETS))
    return DATASETS[name]


def make_lists(dataset: str, data_root: str, out: str, *, say: Callable[[str], None] = print,
               **options) -> dict[str, int]:
    """Write ``<out>/<name>.txt`` for every list of ``dataset`` (each atomically); returns
    the number of lines of each.  ``options`` go to the dataset's list maker (VOC:
    ``sbd``, ``label_dir``)."""
    lists = get_dataset(dataset).make(data_root, say=say, **options)
    os.makedirs(out, exist_ok=True)
    for name, lines in lists.items():
        with atomic_write(os.path.join(out, name + ".txt"), "w") as f:
            f.write("".join(ln + "\n" for ln in lines))
        if not name.endswith("_id"):
            say(f"{name}.txt: {len(lines)} images")
    return {name: len(lines) for name, lines in lists.items()}
