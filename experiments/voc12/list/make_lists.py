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
The layout lives in deeplab_compile/data/datasets.py (``voc_lists``).
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(HERE))))

from deeplab_compile.data.make_lists import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(dataset="voc12", out=HERE))
