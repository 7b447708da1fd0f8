#!/usr/bin/env python3
"""Write the ADE20K (SceneParsing, ADEChallengeData2016) list files from DATA_ROOT.

    python experiments/ade20k/list/make_lists.py --data-root /data/ADEChallengeData2016 [--out DIR]

``images/training/<id>.jpg`` with ``annotations/training/<id>.png`` becomes train.txt
(20,210 images), ``images/validation`` val.txt (2,000), and trainval = both.  Annotations
hold 0 (other, ignored) and 1..150; LABEL_MAP=ade20k maps them at load time.
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
    for name, split in (("train", "training"), ("val", "validation")):
        top = os.path.join(a.data_root, "images", split)
        if not os.path.isdir(top):
            print(f"make_lists.py: error: no {top}", file=sys.stderr)
            return 2
        ids = sorted(os.path.splitext(f)[0] for f in os.listdir(top) if f.endswith(".jpg"))
        lists[name] = [f"/images/{split}/{i}.jpg /annotations/{split}/{i}.png" for i in ids]
    lists["trainval"] = lists["train"] + lists["val"]
    os.makedirs(a.out, exist_ok=True)
    for name, lines in lists.items():
        with open(os.path.join(a.out, name + ".txt"), "w") as f:
            f.write("".join(ln + "\n" for ln in lines))
        print(f"{name}.txt: {len(lines)} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
