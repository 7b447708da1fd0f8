"""Name tables from pretrained PyTorch state dicts to the zoo's layer names.

Each source is a table ``{source module: target}`` where the target says what the
source module becomes:

* ``("conv", name)``            a convolution: ``weight`` (and ``bias``) -> ``name.weight``/``.bias``;
* ``("bn", bn_name, scale_name)`` a BatchNorm2d: ``running_mean``/``running_var`` go to our
  BatchNorm ``bn_name``, ``weight``/``bias`` (gamma/beta) to the Scale ``scale_name``;
  ``num_batches_tracked`` has no counterpart and is dropped;
* ``None``                      a module we do not have (an ImageNet classifier, the
  auxiliary head): its tensors are dropped.

A conv target may name several layers, ``("conv", ("fc6", "fc6_1", ...))``: the tensor goes
to each of them the net has (VGG16's fc6/fc7 initialise every ASPP branch of v2).

Some sources need more than renaming: :data:`PREPARE` reshapes their tensors first
(VGG16's fully connected fc6/fc7 become convolutions, :mod:`.vgg16`), :data:`LAYOUTS`
names the netdef ``layout`` a source's weights were trained in (a netdef with another
``layout`` is refused), and :data:`CHECKS` inspects the compiled net for what the
weights assume (torchvision's ResNet strides its 3x3 convs).

:func:`key_table` expands a table to ``{source key: our key or None}``.  The tables are
written out from the published module naming of each source; the tests check them
against a key list and shape list of every source.

Sources
    ``torchvision:resnet101``            -> any net with ``lib/resnet.yaml``'s trunk
    ``torchvision:deeplabv3_resnet101``  -> ``deeplab_v3_resnet101`` (aux_classifier dropped)
    ``timm:xception65``                  -> nets with ``lib/xception65.yaml`` (head.fc dropped)
    ``timm:mobilenetv2_100``             -> nets with ``lib/mobilenetv2.yaml`` (conv_head, bn2,
                                            classifier dropped)
    ``torchvision:vgg16``                -> ``deeplab_largefov``, ``deeplab_v2_vgg16_aspp_l``
                                            (fc8 dropped; see :mod:`.vgg16`)
"""
from __future__ import annotations

Target = tuple | None

# ResNet-101's blocks per stage and DeepLab's Caffe block names: res3b1-b3, res4b1-b22.
RESNET101_BLOCKS = (3, 4, 23, 3)


def resnet_block_id(stage: int, index: int, blocks: int) -> str:
    """Caffe's id of block ``index`` (0-based) of stage ``stage`` (2..5): 2a, 2b, 3b1, 4b22."""
    if index == 0:
        return f"{stage}a"
    return f"{stage}b{index}" if blocks > 3 else f"{stage}{'abcdefgh'[index]}"


def _bn(conv_name: str) -> tuple:
    return ("bn", f"{conv_name}_bn", f"{conv_name}_scale")


def torchvision_resnet101(prefix: str = "") -> dict[str, Target]:
    t: dict[str, Target] = {f"{prefix}conv1": ("conv", "conv1"),
                            f"{prefix}bn1": ("bn", "bn_conv1", "scale_conv1")}
    for li, blocks in enumerate(RESNET101_BLOCKS):
        stage = li + 2
        for b in range(blocks):
            bid = resnet_block_id(stage, b, blocks)
            src = f"{prefix}layer{li + 1}.{b}"
            for k, branch in ((1, "2a"), (2, "2b"), (3, "2c")):
                t[f"{src}.conv{k}"] = ("conv", f"res{bid}_branch{branch}")
                t[f"{src}.bn{k}"] = ("bn", f"bn{bid}_branch{branch}", f"scale{bid}_branch{branch}")
            if b == 0:
                t[f"{src}.downsample.0"] = ("conv", f"res{bid}_branch1")
                t[f"{src}.downsample.1"] = ("bn", f"bn{bid}_branch1", f"scale{bid}_branch1")
    if not prefix:
        t["fc"] = None
    return t


def torchvision_deeplabv3_resnet101() -> dict[str, Target]:
    t = torchvision_resnet101("backbone.")
    a = "classifier.0."                       # DeepLabHead[0] is the ASPP
    t[a + "convs.0.0"], t[a + "convs.0.1"] = ("conv", "aspp_c0"), _bn("aspp_c0")
    for i in (1, 2, 3):
        t[f"{a}convs.{i}.0"], t[f"{a}convs.{i}.1"] = ("conv", f"aspp_c{i}"), _bn(f"aspp_c{i}")
    t[a + "convs.4.1"], t[a + "convs.4.2"] = ("conv", "aspp_pool"), _bn("aspp_pool")
    t[a + "project.0"], t[a + "project.1"] = ("conv", "aspp"), _bn("aspp")
    t["classifier.1"], t["classifier.2"] = ("conv", "head"), _bn("head")
    t["classifier.4"] = ("conv", "logits")
    for m in ("aux_classifier.0", "aux_classifier.1", "aux_classifier.4"):
        t[m] = None
    return t


def timm_xception65() -> dict[str, Target]:
    t: dict[str, Target] = {}
    for i, name in enumerate(("conv1_1", "conv1_2")):
        t[f"stem.{i}.conv"], t[f"stem.{i}.bn"] = ("conv", name), _bn(name)
    blocks = ["entry1", "entry2", "entry3"] + [f"middle{i}" for i in range(1, 17)] + ["exit1", "exit2"]
    for i, blk in enumerate(blocks):
        for j in (1, 2, 3):
            src, ours = f"blocks.{i}.stack.conv{j}", f"{blk}_sep{j}"
            t[f"{src}.conv_dw"], t[f"{src}.bn_dw"] = ("conv", f"{ours}_dw"), _bn(f"{ours}_dw")
            t[f"{src}.conv_pw"], t[f"{src}.bn_pw"] = ("conv", f"{ours}_pw"), _bn(f"{ours}_pw")
        if blk in ("entry1", "entry2", "entry3", "exit1"):
            t[f"blocks.{i}.shortcut.conv"] = ("conv", f"{blk}_shortcut")
            t[f"blocks.{i}.shortcut.bn"] = _bn(f"{blk}_shortcut")
    t["head.fc"] = None
    return t


# timm's mobilenetv2_100 stages: blocks.<stage>.<index>; our blocks ir1..ir17 in order.
MOBILENETV2_STAGES = (1, 2, 3, 4, 3, 3, 1)


def timm_mobilenetv2_100() -> dict[str, Target]:
    t: dict[str, Target] = {"conv_stem": ("conv", "conv1"), "bn1": _bn("conv1")}
    n = 0
    for s, count in enumerate(MOBILENETV2_STAGES):
        for b in range(count):
            n += 1
            src, ours = f"blocks.{s}.{b}", f"ir{n}"
            if n == 1:          # DepthwiseSeparableConv: conv_dw, bn1, conv_pw, bn2
                t[f"{src}.conv_dw"], t[f"{src}.bn1"] = ("conv", "ir1_dw"), _bn("ir1_dw")
                t[f"{src}.conv_pw"], t[f"{src}.bn2"] = ("conv", "ir1_project"), _bn("ir1_project")
                continue
            t[f"{src}.conv_pw"], t[f"{src}.bn1"] = ("conv", f"{ours}_expand"), _bn(f"{ours}_expand")
            t[f"{src}.conv_dw"], t[f"{src}.bn2"] = ("conv", f"{ours}_dw"), _bn(f"{ours}_dw")
            t[f"{src}.conv_pwl"], t[f"{src}.bn3"] = ("conv", f"{ours}_project"), _bn(f"{ours}_project")
    t["conv_head"], t["bn2"], t["classifier"] = None, None, None
    return t


# torchvision's vgg16 ``features`` indices of its 13 convolutions, in order (every conv is
# followed by a ReLU, and pool after 1_2, 2_2, 3_3, 4_3, 5_3: torchvision/models/vgg.py cfg "D").
VGG16_CONVS = {0: "1_1", 2: "1_2", 5: "2_1", 7: "2_2", 10: "3_1", 12: "3_2", 14: "3_3",
               17: "4_1", 19: "4_2", 21: "4_3", 24: "5_1", 26: "5_2", 28: "5_3"}
# v2 ASPP-L's four branches each start from the same fc6/fc7 (DeepLab v2 initialises them
# all from the one ImageNet model).
VGG16_FC_COPIES = ("", "_1", "_2", "_3", "_4")


def torchvision_vgg16() -> dict[str, Target]:
    t: dict[str, Target] = {f"features.{i}": ("conv", f"conv{cid}") for i, cid in VGG16_CONVS.items()}
    t["classifier.0"] = ("conv", tuple(f"fc6{s}" for s in VGG16_FC_COPIES))
    t["classifier.3"] = ("conv", tuple(f"fc7{s}" for s in VGG16_FC_COPIES))
    t["classifier.6"] = None          # the 1000-way ImageNet classifier: fc8 is the task's own
    return t


SOURCES = {
    "torchvision:resnet101": torchvision_resnet101,
    "torchvision:deeplabv3_resnet101": torchvision_deeplabv3_resnet101,
    "timm:xception65": timm_xception65,
    "timm:mobilenetv2_100": timm_mobilenetv2_100,
    "torchvision:vgg16": torchvision_vgg16,
}


def _vgg16_prepare(sd):
    from .vgg16 import to_deeplab
    return to_deeplab(sd)


def _strides_the_3x3(net) -> str | None:
    """torchvision's ResNet (v1.5) strides the 3x3 of each stage's first block; a net
    that strides the 1x1 (Caffe's MSRA ResNet, DeepLab v2's default layout) would run
    the weights on other pixels."""
    try:
        conv = net.get_submodule("res3a_branch2a")
    except AttributeError:
        return None
    if tuple(getattr(conv, "stride", (1, 1))) != (1, 1):
        return ("this net strides res3a_branch2a (the 1x1, as Caffe's ResNet), but torchvision's "
                "resnet101 strides the 3x3", "compile it with -D layout=torchvision")
    return None


#: source -> a function of the source state dict giving the state dict the table reads.
PREPARE = {"torchvision:vgg16": _vgg16_prepare}
#: source -> the netdef ``layout`` its weights were trained in (a whole model, head included).
LAYOUTS = {"torchvision:deeplabv3_resnet101": "torchvision"}
#: source -> a function of the compiled net: None, or (what does not fit, the way out).
CHECKS = {"torchvision:resnet101": _strides_the_3x3,
          "torchvision:deeplabv3_resnet101": _strides_the_3x3}

_CONV = ("weight", "bias")
_BN_STATS = ("running_mean", "running_var")
_BN_AFFINE = ("weight", "bias")


def module_table(source: str) -> dict[str, Target]:
    return SOURCES[source]()


def key_table(source: str) -> dict[str, str | tuple[str, ...] | None]:
    """Every tensor key a source state dict can have -> our state-dict key, a tuple of
    keys (copies; those the net has are fed) or None (dropped).  A convolution's
    ``bias`` is listed too; sources without it simply lack the key."""
    out: dict[str, str | tuple[str, ...] | None] = {}
    for mod, target in module_table(source).items():
        if target is None:
            for suffix in _CONV + _BN_STATS + ("num_batches_tracked",):
                out[f"{mod}.{suffix}"] = None
        elif target[0] == "conv":
            for suffix in _CONV:
                names = target[1]
                out[f"{mod}.{suffix}"] = (f"{names}.{suffix}" if isinstance(names, str)
                                          else tuple(f"{n}.{suffix}" for n in names))
        else:
            _, bn, scale = target
            for suffix in _BN_STATS:
                out[f"{mod}.{suffix}"] = f"{bn}.{suffix}"
            for suffix in _BN_AFFINE:
                out[f"{mod}.{suffix}"] = f"{scale}.{suffix}"
            out[f"{mod}.num_batches_tracked"] = None
    return out
