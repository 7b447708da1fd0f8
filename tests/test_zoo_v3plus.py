"""DeepLabv3+ (Xception-65, ResNet-101, MobileNetV2) and DeepLabv3 MobileNetV2: exact
counts against the published backbones, shapes at 321/513/odd sizes, FLOPs against TF's
model zoo, small forward passes."""
import pytest
import torch

import deeplab_compile
from deeplab_compile.layers.pooling import caffe_pool_size

from zoo_helpers import count, madds, netdef, shapes


TV_MOBILENET_V2 = 3_504_872                 # torchvision docs / timm mobilenetv2_100


def _sep(cin, cout, bn_dw=True):
    return cin * 9 + (2 * cin if bn_dw else 0) + cin * cout + 2 * cout


def xception65_backbone():
    """Aligned Xception-65 from its published layer list (weights + BN gamma/beta)."""
    n = 3 * 32 * 9 + 64 + 32 * 64 * 9 + 128
    def module(cin, outs, shortcut):
        total, c = 0, cin
        for o in outs:
            total += _sep(c, o)
            c = o
        return total + ((cin * outs[-1] + 2 * outs[-1]) if shortcut else 0)
    n += module(64, (128,) * 3, True) + module(128, (256,) * 3, True) + module(256, (728,) * 3, True)
    n += 16 * module(728, (728,) * 3, False)
    n += module(728, (728, 1024, 1024), True) + module(1024, (1536, 1536, 2048), False)
    return n


def test_xception65_backbone_is_timm_without_fc():
    # timm's xception65 has 39.92M parameters (its model table); its fc is 2048 * 1000 + 1000
    assert xception65_backbone() == 37_867_312
    assert round((xception65_backbone() + 2_049_000) / 1e6, 2) == 39.92


def test_v3plus_xception65_count():
    aspp = (2048 * 256 + 512) * 2 + 3 * _sep(2048, 256) + 1280 * 256 + 512
    decoder = 256 * 48 + 96 + _sep(304, 256) + _sep(256, 256)
    assert count("deeplab_v3plus_xception65") == xception65_backbone() + aspp + decoder + 256 * 21 + 21 == 41_055_413


def test_v3plus_resnet101_count_is_smp():
    smp_sep = lambda cin, cout: cin * 9 + cin * cout + 2 * cout        # dw, pw, BN
    aspp = (2048 * 256 + 512) * 2 + 3 * smp_sep(2048, 256) + 1280 * 256 + 512
    decoder = smp_sep(256, 256) + 256 * 48 + 96 + smp_sep(304, 256)
    assert count("deeplab_v3plus_resnet101", 33) == 42_500_160 + aspp + decoder + 5_397 == 45_674_853


def test_mobilenetv2_counts():
    backbone = TV_MOBILENET_V2 - (320 * 1280 + 2 * 1280) - (1280 * 1000 + 1000)
    assert backbone == 1_811_712
    head = 2 * (320 * 256 + 512) + 512 * 256 + 512 + 256 * 21 + 21
    assert count("deeplab_v3_mobilenetv2") == backbone + head == 2_113_557
    decoder = 144 * 48 + 96 + _sep(304, 256) + _sep(256, 256)
    assert count("deeplab_v3plus_mobilenetv2") == 2_113_557 + decoder == 2_271_109


@pytest.mark.parametrize("dm,channels", [(50, [16, 8, 16, 16, 32, 48, 80, 160]),
                                         (35, [16, 8, 8, 16, 24, 32, 56, 112]),
                                         (140, [48, 24, 32, 48, 88, 136, 224, 448])])
def test_mobilenetv2_depth_multiplier_rounds_like_tf(dm, channels):
    from deeplab_compile.compiler import build_net
    v = build_net(netdef("deeplab_v3_mobilenetv2"), vars={"depth_multiplier": dm}).vars
    assert [v[k] for k in ("c_stem", "c16", "c24", "c32", "c64", "c96", "c160", "c320")] == channels


NETS = ["deeplab_v3plus_xception65", "deeplab_v3plus_resnet101", "deeplab_v3_mobilenetv2", "deeplab_v3plus_mobilenetv2"]
FEATURE = {"deeplab_v3plus_xception65": "exit2_sep3_pw", "deeplab_v3plus_resnet101": "res5c",
           "deeplab_v3_mobilenetv2": "ir17_project", "deeplab_v3plus_mobilenetv2": "ir17_project"}


@pytest.mark.parametrize("name", NETS)
@pytest.mark.parametrize("crop,os_", [(321, 16), (513, 16), (299, 16), (321, 8)])
def test_shapes(name, crop, os_):
    s = shapes(name, crop, output_stride=os_)
    feat = (crop - 1) // os_ + 1
    assert s[FEATURE[name]][2:] == (feat, feat)
    assert s["logits_interp"] == (1, 21, crop, crop)
    if "plus" in name:
        low = (crop - 1) // 4 + 1
        if "resnet" in name:        # pool1 rounds up (Caffe): 299 -> 150 -> 76, torchvision's floor gives 75
            low = caffe_pool_size((crop - 1) // 2 + 1, 3, 2, 1, True)
        assert s["decoder_concat"] == (1, 304, low, low)


def test_flops_against_tf_model_zoo():
    # TF model_zoo.md: 2.75B (mobilenetv2_coco_voc_trainaug, 513, OS 16) and 54.17B
    # (xception_coco_voc_trainaug, OS 16), counted by tfprof, which includes BN, bias,
    # ReLU and resize ops; ours counts convolutions only and comes out 0.3% lower.
    mnv2 = madds("deeplab_v3_mobilenetv2", 513)
    xcp = madds("deeplab_v3plus_xception65", 513)
    assert mnv2 == pytest.approx(2.7407e9, rel=1e-4) and abs(mnv2 / 2.75e9 - 1) < 0.005
    assert xcp == pytest.approx(54.035e9, rel=1e-4) and abs(xcp / 54.17e9 - 1) < 0.005


@pytest.mark.parametrize("name", NETS)
def test_forward_backward_small(name):
    torch.manual_seed(0)
    net = deeplab_compile.compile(netdef(name), phase="train", vars={"crop": 49})
    data, label = torch.randn(2, 3, 49, 49), torch.randint(0, 21, (2, 1, 49, 49)).float()
    loss = net.total_loss(net(data, label))
    loss.backward()
    assert torch.isfinite(loss)
    assert net.logits.weight.grad.abs().sum() > 0
    net.eval()
    with torch.no_grad():
        assert net(data, label)["loss"].shape == ()
