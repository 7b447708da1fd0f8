"""Prototxts written the way DeepLab's released configs are, for the Caffe-import tests.

The nets are the ones the zoo names (DeepLab-LargeFOV, v2 VGG16 ASPP-L, v2 ResNet-101
ASPP with MSC), with DeepLab's data layers, ``${VAR}`` placeholders, phase rules and
the fields of both of DeepLab's schemas.  ``largefov_v1`` uses the V1 layer syntax
(``layers { type: CONVOLUTION }``, DeepLab v1), the others the current one (DeepLab v2).
Each function returns the text; ``tests/data/caffe/`` keeps two of them as files.
"""
from __future__ import annotations

MEAN = (104.008, 116.669, 122.675)        # DeepLab's prototxts (ImageNet VGG16 mean, B G R)

# VGG16's conv layers: (name, channels) per block
VGG_BLOCKS = [[("conv1_1", 64), ("conv1_2", 64)], [("conv2_1", 128), ("conv2_2", 128)],
              [("conv3_1", 256), ("conv3_2", 256), ("conv3_3", 256)],
              [("conv4_1", 512), ("conv4_2", 512), ("conv4_3", 512)],
              [("conv5_1", 512), ("conv5_2", 512), ("conv5_3", 512)]]


# ---------------------------------------------------------------- V1 syntax (DeepLab v1)

def _v1_conv(name, bottom, n, k=3, pad=1, hole=1, lr=(1, 2), std=None, extra=""):
    hole_s = f"    hole: {hole}\n" if hole != 1 else ""
    filler = f'    weight_filler {{ type: "gaussian" std: {std} }}\n' if std else ""
    return (f'layers {{\n  bottom: "{bottom}"\n  top: "{name}"\n  name: "{name}"\n  type: CONVOLUTION\n'
            f"  blobs_lr: {lr[0]}\n  blobs_lr: {lr[1]}\n  weight_decay: 1\n  weight_decay: 0\n{extra}"
            f"  convolution_param {{\n    num_output: {n}\n    pad: {pad}\n    kernel_size: {k}\n"
            f"{hole_s}{filler}  }}\n}}\n")


def _v1_simple(name, type_, bottom, top=None, body="", phase=None):
    inc = f"  include: {{ phase: {phase} }}\n" if phase else ""
    bottoms = "".join(f'  bottom: "{b}"\n' for b in ([bottom] if isinstance(bottom, str) else bottom))
    return (f'layers {{\n{bottoms}  top: "{top or name}"\n  name: "{name}"\n  type: {type_}\n'
            f"{body}{inc}}}\n")


def largefov_v1() -> str:
    """DeepLab-LargeFOV, train and test in one file (phase rules): V1 syntax, `hole`,
    IMAGE_SEG_DATA (test: ``has_label: false``), ``strict_dim``, MAT_WRITE."""
    out = ["# DeepLab-LargeFOV in DeepLab v1's V1 layer syntax, train and test in one file.\n"
           "# Written as DeepLab v1's exper/voc12/config/DeepLab-LargeFOV prototxts are: sub.sed\n"
           "# fills ${DATA_ROOT} ${EXP} ${TRAIN_SET} ${TEST_SET} ${NUM_LABELS} ${FEATURE_DIR}.\n"
           "# (A placeholder in a comment, like ${MODEL} here, is not a use.)\n"
           'name: "${NET_ID}"\n']
    mean = "".join(f"    mean_value: {m}\n" for m in MEAN)
    out.append('layers {\n  name: "data"\n  type: IMAGE_SEG_DATA\n  top: "data"\n  top: "label"\n'
               '  image_data_param {\n    root_folder: "${DATA_ROOT}"\n'
               '    source: "${EXP}/list/${TRAIN_SET}.txt"\n    batch_size: 10\n    shuffle: true\n  }\n'
               f"  transform_param {{\n{mean}    crop_size: 321\n    mirror: true\n  }}\n"
               "  include: { phase: TRAIN }\n}\n")
    out.append('layers {\n  name: "data"\n  type: IMAGE_SEG_DATA\n  top: "data"\n  top: "label"\n'
               '  image_data_param {\n    root_folder: "${DATA_ROOT}"\n'
               '    source: "${EXP}/list/${TEST_SET}.txt"\n    batch_size: 1\n    has_label: false\n  }\n'
               f"  transform_param {{\n{mean}    crop_size: 513\n    mirror: false\n  }}\n"
               "  include: { phase: TEST }\n}\n")
    bottom = "data"
    for bi, block in enumerate(VGG_BLOCKS, 1):
        for name, n in block:
            # strict_dim: false on conv1_1, as DeepLab v1 loads ImageNet weights of another shape
            extra = "  strict_dim: false\n" if name == "conv1_1" else ""
            out.append(_v1_conv(name, bottom, n, pad=2 if bi == 5 else 1, hole=2 if bi == 5 else 1,
                                extra=extra))
            out.append(_v1_simple(f"relu{name[4:]}", "RELU", name, name))
            bottom = name
        stride = 2 if bi <= 3 else 1
        out.append(_v1_simple(f"pool{bi}", "POOLING", bottom,
                              body=f"  pooling_param {{\n    pool: MAX\n    kernel_size: 3\n"
                                   f"    stride: {stride}\n    pad: 1\n  }}\n"))
        bottom = f"pool{bi}"
    out.append(_v1_simple("pool5a", "POOLING", "pool5", body="  pooling_param {\n    pool: AVE\n"
                          "    kernel_size: 3\n    stride: 1\n    pad: 1\n  }\n"))
    out.append(_v1_conv("fc6", "pool5a", 1024, pad=12, hole=12))
    out.append(_v1_simple("relu6", "RELU", "fc6", "fc6"))
    out.append(_v1_simple("drop6", "DROPOUT", "fc6", "fc6", body="  dropout_param {\n    dropout_ratio: 0.5\n  }\n"))
    out.append(_v1_conv("fc7", "fc6", 1024, k=1, pad=0))
    out.append(_v1_simple("relu7", "RELU", "fc7", "fc7"))
    out.append(_v1_simple("drop7", "DROPOUT", "fc7", "fc7", body="  dropout_param {\n    dropout_ratio: 0.5\n  }\n"))
    out.append(_v1_conv("fc8", "fc7", "${NUM_LABELS}", k=1, pad=0, lr=(10, 20), std=0.01))
    out.append(_v1_simple("label_shrink", "INTERP", "label", phase="TRAIN",
                          body="  interp_param {\n    shrink_factor: 8\n    pad_beg: 0\n    pad_end: 0\n  }\n"))
    out.append(_v1_simple("loss", "SOFTMAX_LOSS", ["fc8", "label_shrink"], phase="TRAIN",
                          body="  softmaxloss_param {\n    ignore_label: 255\n  }\n"))
    out.append(_v1_simple("accuracy", "SEG_ACCURACY", ["fc8", "label_shrink"], phase="TRAIN",
                          body="  seg_accuracy_param {\n    metric: PixelAccuracy\n    ignore_label: 255\n  }\n"))
    out.append(_v1_simple("fc8_interp", "INTERP", "fc8", phase="TEST",
                          body="  interp_param {\n    zoom_factor: 8\n  }\n"))
    out.append(_v1_simple("fc8_mat", "MAT_WRITE", "fc8_interp", phase="TEST",
                          body='  mat_write_param {\n    prefix: "${FEATURE_DIR}/${TEST_SET}/fc8/"\n'
                               '    source: "${EXP}/list/${TEST_SET}_id.txt"\n    strip: 0\n    period: 1\n  }\n')
               .replace('  top: "fc8_mat"\n', ""))
    out.append(_v1_simple("silence", "SILENCE", "label", phase="TEST").replace('  top: "silence"\n', ""))
    return "".join(out)


# ---------------------------------------------------------------- current syntax (DeepLab v2)

def _conv(name, bottom, n, k=3, pad=1, dilation=1, stride=1, bias=True, params=None, std=None, sfx=""):
    ps = "".join(f"  param {{ {p} }}\n" for p in (params or ["lr_mult: 1 decay_mult: 1", "lr_mult: 2 decay_mult: 0"]))
    dil = f" dilation: {dilation}" if dilation != 1 else ""
    st = f" stride: {stride}" if stride != 1 else ""
    b = "" if bias else " bias_term: false"
    filler = f' weight_filler {{ type: "gaussian" std: {std} }}' if std else ""
    return (f'layer {{\n  bottom: "{bottom}{sfx}"\n  top: "{name}{sfx}"\n  name: "{name}{sfx}"\n  type: "Convolution"\n'
            f"{ps}  convolution_param {{ num_output: {n} kernel_size: {k} pad: {pad}{st}{dil}{b}{filler} }}\n}}\n")


def _layer(name, type_, bottoms, tops=None, body="", phase=None):
    inc = f"  include {{ phase: {phase} }}\n" if phase else ""
    bs = "".join(f'  bottom: "{b}"\n' for b in ([bottoms] if isinstance(bottoms, str) else bottoms))
    tops = [name] if tops is None else [tops] if isinstance(tops, str) else tops
    ts = "".join(f'  top: "{t}"\n' for t in tops)
    return f'layer {{\n  name: "{name}"\n  type: "{type_}"\n{bs}{ts}{body}{inc}}}\n'


def _seg_data(train: bool, *, scale_factors=(), three_tops=False, label_type=None, crop=321):
    mean = "".join(f"    mean_value: {m}\n" for m in MEAN)
    scales = "".join(f"    scale_factors: {f}\n" for f in scale_factors)
    tops = "  top: \"data\"\n  top: \"label\"\n" + ("  top: \"data_dim\"\n" if three_tops else "")
    lt = f"    label_type: {label_type}\n" if label_type else ""
    src = "${TRAIN_SET}" if train else "${TEST_SET}"
    return ('layer {\n  name: "data"\n  type: "ImageSegData"\n' + tops +
            f"  transform_param {{\n{mean}    crop_size: {crop}\n    mirror: {'true' if train else 'false'}\n{scales}  }}\n"
            f'  image_data_param {{\n    root_folder: "${{DATA_ROOT}}"\n    source: "${{EXP}}/list/{src}.txt"\n'
            f"    batch_size: {10 if train else 1}\n{'    shuffle: true' + chr(10) if train else ''}{lt}  }}\n"
            f"  include {{ phase: {'TRAIN' if train else 'TEST'} }}\n}}\n")


def vgg16_aspp_l() -> str:
    """DeepLab v2's VGG16 ASPP-L, train and test in one file: ImageSegData with
    ``scale_factors`` (train) and three tops with ``label_type: NONE`` (test)."""
    out = ['# DeepLab v2 VGG16 ASPP-L, written as DeepLab v2\'s exper/voc12/config/vgg16 prototxts.\n'
           'name: "${NET_ID}"\n',
           _seg_data(True, scale_factors=(0.5, 0.75, 1, 1.25, 1.5)),
           _seg_data(False, three_tops=True, label_type="NONE", crop=513)]
    bottom = "data"
    for bi, block in enumerate(VGG_BLOCKS, 1):
        for name, n in block:
            out.append(_conv(name, bottom, n, pad=2 if bi == 5 else 1, dilation=2 if bi == 5 else 1))
            out.append(_layer(f"relu{name[4:]}", "ReLU", name, name))
            bottom = name
        out.append(_layer(f"pool{bi}", "Pooling", bottom,
                          body=f"  pooling_param {{ pool: MAX kernel_size: 3 stride: {2 if bi <= 3 else 1} pad: 1 }}\n"))
        bottom = f"pool{bi}"
    for i, rate in enumerate((6, 12, 18, 24), 1):
        out.append(_conv(f"fc6_{i}", "pool5", 1024, pad=rate, dilation=rate))
        out.append(_layer(f"relu6_{i}", "ReLU", f"fc6_{i}", f"fc6_{i}", body='  relu_param { engine: CAFFE }\n'))
        out.append(_layer(f"drop6_{i}", "Dropout", f"fc6_{i}", f"fc6_{i}", body="  dropout_param { dropout_ratio: 0.5 }\n"))
        out.append(_conv(f"fc7_{i}", f"fc6_{i}", 1024, k=1, pad=0))
        out.append(_layer(f"relu7_{i}", "ReLU", f"fc7_{i}", f"fc7_{i}"))
        out.append(_layer(f"drop7_{i}", "Dropout", f"fc7_{i}", f"fc7_{i}", body="  dropout_param { dropout_ratio: 0.5 }\n"))
        out.append(_conv(f"fc8_${{EXP}}_{i}", f"fc7_{i}", "${NUM_LABELS}", k=1, pad=0, std=0.01,
                         params=["lr_mult: 10 decay_mult: 1", "lr_mult: 20 decay_mult: 0"]))
    out.append(_layer("fc8_${EXP}", "Eltwise", [f"fc8_${{EXP}}_{i}" for i in range(1, 5)],
                      body="  eltwise_param { operation: SUM }\n"))
    out.append(_layer("label_shrink", "Interp", "label", phase="TRAIN",
                      body="  interp_param { shrink_factor: 8 pad_beg: 0 pad_end: 0 }\n"))
    out.append(_layer("loss", "SoftmaxWithLoss", ["fc8_${EXP}", "label_shrink"], phase="TRAIN",
                      body="  loss_param { ignore_label: 255 }\n"))
    out.append(_layer("accuracy", "SegAccuracy", ["fc8_${EXP}", "label_shrink"], phase="TRAIN",
                      body="  seg_accuracy_param { ignore_label: 255 }\n"))
    out.append(_layer("fc8_interp", "Interp", "fc8_${EXP}", phase="TEST", body="  interp_param { zoom_factor: 8 }\n"))
    out.append(_layer("fc8_mat", "MatWrite", "fc8_interp", [], phase="TEST",
                      body='  mat_write_param {\n    prefix: "${FEATURE_DIR}/${TEST_SET}/fc8/"\n'
                           '    source: "${EXP}/list/${TEST_SET}_id.txt"\n    strip: 0\n    period: 1\n  }\n'))
    out.append(_layer("silence", "Silence", ["label", "data_dim"], [], phase="TEST"))
    return "".join(out)


# ResNet-101: (stage, planes, block ids)
RESNET101 = [(2, 64, ["a", "b", "c"]), (3, 128, ["a", "b1", "b2", "b3"]),
             (4, 256, ["a"] + [f"b{i}" for i in range(1, 23)]), (5, 512, ["a", "b", "c"])]


def _conv_bn(out, name, bn, scale, bottom, n, k=1, pad=0, stride=1, dilation=1, relu=True, sfx=""):
    out.append(_conv(name, bottom, n, k=k, pad=pad, stride=stride, dilation=dilation, bias=False, sfx=sfx,
                     params=[f'name: "{name}_w" lr_mult: 1 decay_mult: 1']))
    out.append(f'layer {{\n  bottom: "{name}{sfx}"\n  top: "{name}{sfx}"\n  name: "{bn}{sfx}"\n  type: "BatchNorm"\n'
               f'  param {{ name: "{bn}_mean" lr_mult: 0 }}\n  param {{ name: "{bn}_var" lr_mult: 0 }}\n'
               f'  param {{ name: "{bn}_f" lr_mult: 0 }}\n  batch_norm_param {{ use_global_stats: true }}\n}}\n')
    out.append(f'layer {{\n  bottom: "{name}{sfx}"\n  top: "{name}{sfx}"\n  name: "{scale}{sfx}"\n  type: "Scale"\n'
               f'  param {{ name: "{scale}_w" lr_mult: 1 decay_mult: 0 }}\n'
               f'  param {{ name: "{scale}_b" lr_mult: 1 decay_mult: 0 }}\n  scale_param {{ bias_term: true }}\n}}\n')
    if relu:
        out.append(f'layer {{\n  bottom: "{name}{sfx}"\n  top: "{name}{sfx}"\n  name: "{name}_relu{sfx}"\n'
                   f'  type: "ReLU"\n}}\n')


def _resnet_tower(out, sfx):
    _conv_bn(out, "conv1", "bn_conv1", "scale_conv1", "data", 64, k=7, pad=3, stride=2, sfx=sfx)
    out.append(_layer(f"pool1{sfx}", "Pooling", f"conv1{sfx}",
                      body="  pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }\n"))
    prev = "pool1"
    for stage, planes, ids in RESNET101:
        dil = {4: 2, 5: 4}.get(stage, 1)
        for j, b in enumerate(ids):
            rid = f"{stage}{b}"
            stride = 2 if (stage == 3 and j == 0) else 1
            if j == 0:
                _conv_bn(out, f"res{rid}_branch1", f"bn{rid}_branch1", f"scale{rid}_branch1", prev, planes * 4,
                         stride=stride, relu=False, sfx=sfx)
                skip = f"res{rid}_branch1"
            else:
                skip = prev
            _conv_bn(out, f"res{rid}_branch2a", f"bn{rid}_branch2a", f"scale{rid}_branch2a", prev, planes,
                     stride=stride, sfx=sfx)
            _conv_bn(out, f"res{rid}_branch2b", f"bn{rid}_branch2b", f"scale{rid}_branch2b", f"res{rid}_branch2a",
                     planes, k=3, pad=dil, dilation=dil, sfx=sfx)
            _conv_bn(out, f"res{rid}_branch2c", f"bn{rid}_branch2c", f"scale{rid}_branch2c", f"res{rid}_branch2b",
                     planes * 4, relu=False, sfx=sfx)
            out.append(_layer(f"res{rid}{sfx}", "Eltwise", [f"{skip}{sfx}", f"res{rid}_branch2c{sfx}"]))
            out.append(_layer(f"res{rid}_relu{sfx}", "ReLU", f"res{rid}{sfx}", f"res{rid}{sfx}"))
            prev = f"res{rid}"
    for i in range(4):
        rate = 6 * (i + 1)
        out.append(_conv(f"fc1_${{EXP}}_c{i}", "res5c", "${NUM_LABELS}", pad=rate, dilation=rate, std=0.01, sfx=sfx,
                         params=[f'name: "fc1_${{EXP}}_c{i}_w" lr_mult: 10 decay_mult: 1',
                                 f'name: "fc1_${{EXP}}_c{i}_b" lr_mult: 20 decay_mult: 0']))
    out.append(_layer(f"fc1_${{EXP}}{sfx}", "Eltwise", [f"fc1_${{EXP}}_c{i}{sfx}" for i in range(4)],
                      body="  eltwise_param { operation: SUM }\n"))


def resnet101_msc() -> str:
    """DeepLab v2's ResNet-101 ASPP with MSC (scales 1, 0.75, 0.5 sharing every param
    by name, fused by Eltwise MAX), BatchNorm + Scale with global stats; train and test."""
    out = ['# DeepLab v2 ResNet-101 ASPP MSC, written as DeepLab v2\'s exper/voc12/config/resnet101 prototxts.\n'
           'name: "${NET_ID}"\n',
           _seg_data(True, scale_factors=(0.5, 0.75, 1, 1.25, 1.5)),
           _seg_data(False, three_tops=True, label_type="NONE", crop=513),
           _layer("data_res075", "Interp", "data", body="  interp_param { shrink_factor: 4 zoom_factor: 3 }\n"),
           _layer("data_res05", "Interp", "data", body="  interp_param { shrink_factor: 2 }\n")]
    for sfx in ("", "_res075", "_res05"):
        _resnet_tower(out, sfx)
    e = "fc1_${EXP}"
    out.append(_layer(f"{e}_res075_interp", "Interp", [f"{e}_res075", e]))
    out.append(_layer(f"{e}_res05_interp", "Interp", [f"{e}_res05", e]))
    out.append(_layer("fc_fusion", "Eltwise", [e, f"{e}_res075_interp", f"{e}_res05_interp"],
                      body="  eltwise_param { operation: MAX }\n"))
    out.append(_layer("label_shrink", "Interp", "label", phase="TRAIN", body="  interp_param { shrink_factor: 8 }\n"))
    out.append(_layer("label_shrink075", "Interp", ["label", f"{e}_res075"], phase="TRAIN"))
    out.append(_layer("label_shrink05", "Interp", ["label", f"{e}_res05"], phase="TRAIN"))
    for name, score, lab in (("loss", e, "label_shrink"), ("loss_res075", f"{e}_res075", "label_shrink075"),
                             ("loss_res05", f"{e}_res05", "label_shrink05"),
                             ("loss_fusion", "fc_fusion", "label_shrink")):
        out.append(_layer(name, "SoftmaxWithLoss", [score, lab], phase="TRAIN",
                          body="  loss_param { ignore_label: 255 }\n"))
    out.append(_layer("accuracy", "SegAccuracy", ["fc_fusion", "label_shrink"], phase="TRAIN",
                      body="  seg_accuracy_param { ignore_label: 255 }\n"))
    out.append(_layer("fc_fusion_interp", "Interp", "fc_fusion", phase="TEST", body="  interp_param { zoom_factor: 8 }\n"))
    out.append(_layer("fc_fusion_mat", "MatWrite", "fc_fusion_interp", [], phase="TEST",
                      body='  mat_write_param {\n    prefix: "${FEATURE_DIR}/${TEST_SET}/fc1/"\n'
                           '    source: "${EXP}/list/${TEST_SET}_id.txt"\n    strip: 0\n    period: 1\n  }\n'))
    out.append(_layer("silence", "Silence", ["label", "data_dim"], [], phase="TEST"))
    return "".join(out)
