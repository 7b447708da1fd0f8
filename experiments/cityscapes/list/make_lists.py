#!/usr/bin/env python3
"""Write the Cityscapes list files from DATA_ROOT's folders.

    python experiments/cityscapes/list/make_lists.py --data-root /data/cityscapes [--out DIR]

For each split (train 2,975 / val 500 / test 1,525 images) every
``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` becomes the line
``/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png /gtFine/<split>/<city>/<name>_gtFine_labelIds.png``
(test: the image only; its ground truth is not public); trainval = train + val.
The labelIds are mapped to the 19 trainIds at load time (LABEL_MAP=cityscapes).
The layout lives in deeplab_compile/data/datasets.py (``cityscapes_lists``).
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(HERE))))

from deeplab_compile.data.make_lists import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(dataset="cityscapes", out=HERE))
