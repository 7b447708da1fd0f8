#!/usr/bin/env python3
"""Write the Cityscapes list files from DATA_ROOT's folders.

    python experiments/cityscapes/list/make_lists.py --data-root /data/cityscapes [--out DIR]

For each split (train 2,975 / val 500 / test 1,525 images) every
``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` becomes the line
``/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png /gtFine/<split>/<city>/<name>_gtFine_labelIds.png``
(test: the image only; its ground truth is not public); trainval = train + val.
The labelIds are mapped to the 19 trainIds at load time (LABEL_MAP=cityscapes).
"""
import argparse
import os
import sys


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    a = ap.parse_args(argv)
    lists = {}
    for split in ("train", "val", "test"):
        top = os.path.join(a.data_root, "leftImg8bit", split)
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
        print(f"make_lists.py: error: no leftImg8bit/train or leftImg8bit/val under {a.data_root}", file=sys.stderr)
        return 2
    lists["trainval"] = lists["train"] + lists["val"]
    os.makedirs(a.out, exist_ok=True)
    for name, lines in lists.items():
        with open(os.path.join(a.out, name + ".txt"), "w") as f:
            f.write("".join(ln + "\n" for ln in lines))
        print(f"{name}.txt: {len(lines)} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
