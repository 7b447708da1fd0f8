"""A DeepLab config folder written the way DeepLab's exper/voc12/config/<NET_ID>/ is, at
the synthetic set's size: train.prototxt, test.prototxt, solver.prototxt and
solver2.prototxt with DeepLab's ${VAR} placeholders and its paths relative to exper/
(``${EXP}/list/...``, ``${EXP}/model/${NET_ID}/train``), in the current layer syntax
(DeepLab v2) or the V1 one (DeepLab v1).

The net is LargeFOV's head at toy size: conv1 (3x3) + ReLU, a stride-2 max pool (ceil
mode), fc8_${EXP} (1x1, as DeepLab names its classifier), the label shrunk by 2 for
SoftmaxWithLoss in training, fc8 zoomed by 2 for MatWrite in testing.  Crops are 2k+1
(41 in training, 57 in testing: the synthetic images of the tests are at most 56 a side).
"""
from __future__ import annotations

import os

TRAIN_CROP, TEST_CROP = 41, 57


def _new(phase: str) -> str:
    """train.prototxt (phase 'train') or test.prototxt (phase 'test'), DeepLab v2 syntax."""
    if phase == "train":
        data = ('layer {\n  name: "data"\n  type: "ImageSegData"\n  top: "data"\n  top: "label"\n'
                '  top: "data_dim"\n  image_data_param {\n    root_folder: "${DATA_ROOT}"\n'
                '    source: "${EXP}/list/${TRAIN_SET}.txt"\n    batch_size: 2\n    shuffle: true\n'
                '    label_type: PIXEL\n  }\n  transform_param {\n    mean_value: 104.008\n'
                f'    mean_value: 116.669\n    mean_value: 122.675\n    crop_size: {TRAIN_CROP}\n'
                '    mirror: true\n  }\n  include { phase: TRAIN }\n}\n')
    else:
        data = ('layer {\n  name: "data"\n  type: "ImageSegData"\n  top: "data"\n  top: "label"\n'
                '  top: "data_dim"\n  image_data_param {\n    root_folder: "${DATA_ROOT}"\n'
                '    source: "${EXP}/list/${TEST_SET}.txt"\n    batch_size: 1\n    label_type: NONE\n  }\n'
                '  transform_param {\n    mean_value: 104.008\n    mean_value: 116.669\n'
                f'    mean_value: 122.675\n    crop_size: {TEST_CROP}\n    mirror: false\n  }}\n'
                '  include { phase: TEST }\n}\n')
    body = ('layer {\n  bottom: "data"\n  top: "conv1"\n  name: "conv1"\n  type: "Convolution"\n'
            '  param { lr_mult: 1 decay_mult: 1 }\n  param { lr_mult: 2 decay_mult: 0 }\n'
            '  convolution_param {\n    num_output: 4\n    pad: 1\n    kernel_size: 3\n  }\n}\n'
            'layer {\n  bottom: "conv1"\n  top: "conv1"\n  name: "relu1"\n  type: "ReLU"\n}\n'
            'layer {\n  bottom: "conv1"\n  top: "pool1"\n  name: "pool1"\n  type: "Pooling"\n'
            '  pooling_param {\n    pool: MAX\n    kernel_size: 3\n    stride: 2\n    pad: 1\n  }\n}\n'
            'layer {\n  bottom: "pool1"\n  top: "fc8_${EXP}"\n  name: "fc8_${EXP}"\n  type: "Convolution"\n'
            '  param { lr_mult: 10 decay_mult: 1 }\n  param { lr_mult: 20 decay_mult: 0 }\n'
            '  convolution_param {\n    num_output: ${NUM_LABELS}\n    kernel_size: 1\n'
            '    weight_filler { type: "gaussian" std: 0.01 }\n    bias_filler { type: "constant" value: 0 }\n'
            '  }\n}\n')
    if phase == "train":
        tail = ('layer {\n  bottom: "label"\n  top: "label_shrink"\n  name: "label_shrink"\n  type: "Interp"\n'
                '  interp_param {\n    shrink_factor: 2\n    pad_beg: 0\n    pad_end: 0\n  }\n'
                '  include { phase: TRAIN }\n}\n'
                'layer {\n  name: "loss"\n  type: "SoftmaxWithLoss"\n  bottom: "fc8_${EXP}"\n'
                '  bottom: "label_shrink"\n  loss_param {\n    ignore_label: 255\n  }\n'
                '  include { phase: TRAIN }\n}\n'
                'layer {\n  name: "accuracy"\n  type: "SegAccuracy"\n  bottom: "fc8_${EXP}"\n'
                '  bottom: "label_shrink"\n  top: "accuracy"\n  seg_accuracy_param {\n    ignore_label: 255\n'
                '  }\n  include { phase: TRAIN }\n}\n'
                'layer {\n  name: "silence"\n  type: "Silence"\n  bottom: "data_dim"\n'
                '  include { phase: TRAIN }\n}\n')
    else:
        tail = ('layer {\n  bottom: "fc8_${EXP}"\n  top: "fc8_interp"\n  name: "fc8_interp"\n  type: "Interp"\n'
                '  interp_param {\n    zoom_factor: 2\n  }\n}\n'
                'layer {\n  name: "fc8_mat"\n  type: "MatWrite"\n  bottom: "fc8_interp"\n'
                '  mat_write_param {\n    prefix: "${FEATURE_DIR}/${TEST_SET}/fc8/"\n'
                '    source: "${EXP}/list/${TEST_SET}_id.txt"\n    strip: 0\n    period: 1\n  }\n'
                '  include { phase: TEST }\n}\n'
                'layer {\n  bottom: "label"\n  bottom: "data_dim"\n  name: "silence"\n  type: "Silence"\n'
                '  include { phase: TEST }\n}\n')
    return f'# DeepLab v2 style; run_pascal.sh fills the variables with sed.\nname: "${{NET_ID}}"\n\n{data}{body}{tail}'


def _v1(phase: str) -> str:
    """The same net in DeepLab v1's V1 layer syntax (``layers { type: CONVOLUTION }``,
    ``blobs_lr``, ``has_label: false``, ``strict_dim``)."""
    mean = "    mean_value: 104.008\n    mean_value: 116.669\n    mean_value: 122.675\n"
    if phase == "train":
        data = ('layers {\n  name: "data"\n  type: IMAGE_SEG_DATA\n  top: "data"\n  top: "label"\n'
                '  image_data_param {\n    root_folder: "${DATA_ROOT}"\n'
                '    source: "${EXP}/list/${TRAIN_SET}.txt"\n    batch_size: 2\n    shuffle: true\n  }\n'
                f'  transform_param {{\n{mean}    crop_size: {TRAIN_CROP}\n    mirror: true\n  }}\n'
                '  include: { phase: TRAIN }\n}\n')
    else:
        data = ('layers {\n  name: "data"\n  type: IMAGE_SEG_DATA\n  top: "data"\n  top: "label"\n'
                '  image_data_param {\n    root_folder: "${DATA_ROOT}"\n'
                '    source: "${EXP}/list/${TEST_SET}.txt"\n    batch_size: 1\n    has_label: false\n  }\n'
                f'  transform_param {{\n{mean}    crop_size: {TEST_CROP}\n    mirror: false\n  }}\n'
                '  include: { phase: TEST }\n}\n')
    body = ('layers {\n  bottom: "data"\n  top: "conv1"\n  name: "conv1"\n  type: CONVOLUTION\n'
            '  blobs_lr: 1\n  blobs_lr: 2\n  weight_decay: 1\n  weight_decay: 0\n'
            '  convolution_param {\n    num_output: 4\n    pad: 1\n    kernel_size: 3\n  }\n}\n'
            'layers {\n  bottom: "conv1"\n  top: "conv1"\n  name: "relu1"\n  type: RELU\n}\n'
            'layers {\n  bottom: "conv1"\n  top: "pool1"\n  name: "pool1"\n  type: POOLING\n'
            '  pooling_param {\n    pool: MAX\n    kernel_size: 3\n    stride: 2\n    pad: 1\n  }\n}\n'
            'layers {\n  bottom: "pool1"\n  top: "fc8_${EXP}"\n  name: "fc8_${EXP}"\n  type: CONVOLUTION\n'
            '  strict_dim: false\n  blobs_lr: 10\n  blobs_lr: 20\n  weight_decay: 1\n  weight_decay: 0\n'
            '  convolution_param {\n    num_output: ${NUM_LABELS}\n    kernel_size: 1\n'
            '    weight_filler { type: "gaussian" std: 0.01 }\n    bias_filler { type: "constant" value: 0 }\n'
            '  }\n}\n')
    if phase == "train":
        tail = ('layers {\n  bottom: "label"\n  top: "label_shrink"\n  name: "label_shrink"\n  type: INTERP\n'
                '  interp_param {\n    shrink_factor: 2\n    pad_beg: 0\n    pad_end: 0\n  }\n'
                '  include: { phase: TRAIN }\n}\n'
                'layers {\n  name: "loss"\n  type: SOFTMAX_LOSS\n  bottom: "fc8_${EXP}"\n'
                '  bottom: "label_shrink"\n  softmaxloss_param {\n    ignore_label: 255\n  }\n'
                '  include: { phase: TRAIN }\n}\n'
                'layers {\n  name: "accuracy"\n  type: SEG_ACCURACY\n  bottom: "fc8_${EXP}"\n'
                '  bottom: "label_shrink"\n  top: "accuracy"\n  seg_accuracy_param {\n    ignore_label: 255\n'
                '  }\n  include: { phase: TRAIN }\n}\n')
    else:
        tail = ('layers {\n  bottom: "fc8_${EXP}"\n  top: "fc8_interp"\n  name: "fc8_interp"\n  type: INTERP\n'
                '  interp_param {\n    zoom_factor: 2\n  }\n}\n'
                'layers {\n  name: "fc8_mat"\n  type: MAT_WRITE\n  bottom: "fc8_interp"\n'
                '  mat_write_param {\n    prefix: "${FEATURE_DIR}/${TEST_SET}/fc8/"\n'
                '    source: "${EXP}/list/${TEST_SET}_id.txt"\n    strip: 0\n    period: 1\n  }\n'
                '  include: { phase: TEST }\n}\n'
                'layers {\n  bottom: "label"\n  name: "silence"\n  type: SILENCE\n  include: { phase: TEST }\n}\n')
    return f'# DeepLab v1 style (V1 layers).\nname: "${{NET_ID}}"\n\n{data}{body}{tail}'


def solver(stage: int, max_iter: int = 2, base_lr: float = 0.001) -> str:
    """DeepLab's solver.prototxt (stage 1) or solver2.prototxt (stage 2)."""
    prefix = "train" if stage == 1 else "train2"
    return (f'net: "${{EXP}}/config/${{NET_ID}}/train_${{TRAIN_SET}}.prototxt"\n\n'
            f'lr_policy: "step"\ngamma: 0.1\nstepsize: 2000\nbase_lr: {base_lr}\n\n'
            f'display: 1\nmax_iter: {max_iter}\nmomentum: 0.9\nweight_decay: 0.0005\n\n'
            f'snapshot: 1000\nsnapshot_prefix: "${{EXP}}/model/${{NET_ID}}/{prefix}"\nsolver_mode: GPU\n'
            'random_seed: 1\n')


def write_config(folder, syntax: str = "new", max_iter: int = 2, base_lr: float = 0.001) -> dict:
    """The four files in ``folder`` (made if needed); returns name -> text."""
    make = _new if syntax == "new" else _v1
    files = {"train.prototxt": make("train"), "test.prototxt": make("test"),
             "solver.prototxt": solver(1, max_iter, base_lr), "solver2.prototxt": solver(2, max_iter, base_lr)}
    os.makedirs(folder, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
            f.write(text)
    return files
