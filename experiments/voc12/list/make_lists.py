#!/usr/bin/env python3
"""Write DeepLab's PASCAL VOC 2012 + SBD list files from the dataset's own id lists.

    python experiments/voc12/list/make_lists.py --data-root /data/VOCdevkit/VOC2012 \\
        [--sbd /data/benchmark_RELEASE/dataset] [--out experiments/voc12/list]

Reads ``<data-root>/ImageSets/Segmentation/{train,val,test}.txt`` (VOC 2012) and, when
given, SBD's ``train.txt`` / ``val.txt`` (Hariharan et al. 2011), and writes the
lists run_experiment.sh uses, with DeepLab's line format
``/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png``:

  train_aug.txt     (SBD train + SBD val + VOC train) - VOC val    10,582 images
  trainval_aug.txt  train_aug + VOC val                            12,031 images
  train.txt         VOC train                                       1,464 images
  val.txt           VOC val                                         1,449 images
  test.txt          VOC test, images only (when the test set is there)
  val_id.txt, test_id.txt   ids only (MatWrite's source in DeepLab's test.prototxt)

Without SBD, train_aug is VOC train (and trainval_aug VOC trainval).  Ids are sorted.
"""
import argparse
import os
import sys


def read_ids(path):
    with open(path) as f:
        return [ln.split()[0] for ln in f if ln.strip()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", required=True, help="VOCdevkit/VOC2012")
    ap.add_argument("--sbd", default=os.environ.get("SBD_ROOT", ""),
                    help="SBD's dataset folder with train.txt and val.txt (default: $SBD_ROOT)")
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--label-dir", default="SegmentationClassAug")
    a = ap.parse_args(argv)
    sets = os.path.join(a.data_root, "ImageSets", "Segmentation")
    try:
        voc = {k: read_ids(os.path.join(sets, k + ".txt")) for k in ("train", "val")}
    except OSError as e:
        print(f"make_lists.py: error: {e.filename}: {e.strerror} (is --data-root VOC2012?)", file=sys.stderr)
        return 2
    test_path = os.path.join(sets, "test.txt")
    voc["test"] = read_ids(test_path) if os.path.isfile(test_path) else []
    sbd = set()
    if a.sbd:
        for k in ("train", "val"):
            sbd |= set(read_ids(os.path.join(a.sbd, k + ".txt")))
    else:
        print("make_lists.py: no SBD lists (--sbd or SBD_ROOT): train_aug = VOC train", file=sys.stderr)
    val = set(voc["val"])
    train_aug = sorted((sbd | set(voc["train"])) - val)
    lists = {"train_aug": train_aug, "trainval_aug": sorted(set(train_aug) | val),
             "train": sorted(voc["train"]), "val": sorted(val)}
    os.makedirs(a.out, exist_ok=True)

    def write(name, lines):
        tmp = os.path.join(a.out, name + ".tmp")
        with open(tmp, "w") as f:
            f.write("".join(ln + "\n" for ln in lines))
        os.replace(tmp, os.path.join(a.out, name))

    for name, ids in lists.items():
        write(name + ".txt", [f"/JPEGImages/{i}.jpg /{a.label_dir}/{i}.png" for i in ids])
        print(f"{name}.txt: {len(ids)} images")
    write("val_id.txt", lists["val"])
    if voc["test"]:
        write("test.txt", [f"/JPEGImages/{i}.jpg" for i in sorted(voc["test"])])
        write("test_id.txt", sorted(voc["test"]))
        print(f"test.txt: {len(voc['test'])} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
