#!/usr/bin/env python3
"""Write the ADE20K (SceneParsing, ADEChallengeData2016) list files from DATA_ROOT.

    python experiments/ade20k/list/make_lists.py --data-root /data/ADEChallengeData2016 [--out DIR]

``images/training/<id>.jpg`` with ``annotations/training/<id>.png`` becomes train.txt
(20,210 images), ``images/validation`` val.txt (2,000), and trainval = both.  Annotations
hold 0 (other, ignored) and 1..150; LABEL_MAP=ade20k maps them at load time.
The layout lives in deeplab_compile/data/datasets.py (``ade20k_lists``).
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(HERE))))

from deeplab_compile.data.make_lists import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(dataset="ade20k", out=HERE))
