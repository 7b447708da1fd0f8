"""DeepLab v2 ResNet-101 (ASPP-L, MSC) and DeepLabv3 ResNet-101: counts, shapes, FLOPs,
sharing, a small forward/backward."""
import pytest
import torch

import deeplab_compile
from deeplab_compile.compiler import build_net

from zoo_helpers import count, madds, netdef, shapes

# torchvision's published totals (docs: ResNet101_Weights.IMAGENET1K_V1 and
# DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1, "num_params").
TV_RESNET101 = 44_549_160
TV_DEEPLABV3_RESNET101 = 60_996_202
RESNET101_TRUNK = TV_RESNET101 - (2048 * 1000 + 1000)


def test_trunk_is_torchvision_resnet101_without_fc():
    assert RESNET101_TRUNK == 42_500_160


def test_v2_aspp_parameter_count():
    assert count("deeplab_v2_resnet101_aspp", 33) == RESNET101_TRUNK + 4 * (2048 * 9 * 21 + 21) == 44_048_532


def test_v2_msc_shares_every_parameter():
    assert count("deeplab_v2_resnet101_msc", 33) == 44_048_532
    net = deeplab_compile.compile(netdef("deeplab_v2_resnet101_msc"), inputs={"data": "1x3x33x33"})
    assert net.res4b22_branch2b_res075.weight is net.res4b22_branch2b.weight
    assert net.fc1_c3_res05.bias is net.fc1_c3.bias
    assert net.scale_conv1_res05.weight is net.scale_conv1.weight


def test_v3_parameter_count_is_torchvision_without_aux():
    aux = 1024 * 256 * 9 + 2 * 256 + 256 * 21 + 21        # FCNHead(1024, 21)
    assert count("deeplab_v3_resnet101", 33) == TV_DEEPLABV3_RESNET101 - aux == 58_630_997


@pytest.mark.parametrize("crop,score", [(321, 41), (513, 65), (353, 45), (97, 13)])
def test_v2_shapes(crop, score):
    s = shapes("deeplab_v2_resnet101_aspp", crop)
    assert s["res5c"] == (1, 2048, score, score)
    assert s["fc1"] == (1, 21, score, score)
    assert s["fc1_interp"][2:] == ((score - 1) * 8 + 1,) * 2      # Caffe's zoom: 321 back to 321


def test_v2_stride_and_dilation_follow_deeplab():
    net = build_net(netdef("deeplab_v2_resnet101_aspp"))
    lay = {l.name: l for l in net.layers}
    assert lay["res3a_branch2a"].params["stride"] == [2] and lay["res3a_branch2b"].params["stride"] == [1]
    assert lay["res3a_branch1"].params["stride"] == [2]
    assert lay["res4b7_branch2b"].params["dilation"] == [2]
    assert lay["res5c_branch2b"].params["dilation"] == [4]
    assert [lay[f"fc1_c{i}"].params["dilation"][0] for i in range(4)] == [6, 12, 18, 24]
    assert not lay["conv1"].params["bias_term"]
    assert lay["bn_conv1"].params["use_global_stats"] is True
    fc1 = [b for b in net.blobs.values() if b.producer == "fc1"][0]
    assert fc1.stride == 8


def test_v2_train_phase_frozen_bn_and_lr_mults():
    net = deeplab_compile.compile(netdef("deeplab_v2_resnet101_aspp"), phase="train", vars={"crop": 33})
    by_name = {n: g for g in net.param_groups(base_lr=1e-3) for n in g["param_names"]}
    assert not net.scale_conv1.weight.requires_grad and not net.scale5c_branch2c.bias.requires_grad
    assert by_name["fc1_c0.weight"]["lr"] == pytest.approx(1e-2)
    assert by_name["fc1_c0.bias"]["lr"] == pytest.approx(2e-2)
    assert by_name["res4b22_branch2b.weight"]["lr"] == pytest.approx(1e-3)


def test_msc_scales_and_losses():
    s = shapes("deeplab_v2_resnet101_msc", 321, phase="train")
    assert s["data_res075"][2:] == (241, 241) and s["data_res05"][2:] == (161, 161)
    assert s["fc1"][2:] == (41, 41) and s["fc1_res075"][2:] == (31, 31) and s["fc1_res05"][2:] == (21, 21)
    assert s["fc_fusion"][2:] == (41, 41)
    assert s["label_shrink075"][2:] == (31, 31) and s["label_shrink05"][2:] == (21, 21)
    net = build_net(netdef("deeplab_v2_resnet101_msc"), phase="train")
    assert sorted(l.name for l in net.layers if l.type == "SoftmaxWithLoss") == [
        "loss", "loss_fusion", "loss_res05", "loss_res075"]
    assert [l for l in net.layers if l.name == "fc_fusion"][0].params["operation"] == "max"


@pytest.mark.parametrize("os_,score,rates", [(16, 33, [6, 12, 18]), (8, 65, [12, 24, 36])])
def test_v3_output_stride(os_, score, rates):
    net = build_net(netdef("deeplab_v3_resnet101"), vars={"output_stride": os_}, inputs={"data": "1x3x513x513"})
    lay = {l.name: l for l in net.layers}
    s = {b.name: b.shape for b in net.blobs.values()}
    assert s["res5c"][2:] == (score, score) and s["aspp_pool_interp"][2:] == (score, score)
    assert s["logits_interp"] == (1, 21, 513, 513)
    assert [lay[f"aspp_c{i}"].params["dilation"][0] for i in (1, 2, 3)] == rates
    r = 32 // os_                                      # multi-grid (1, 2, 4) on block4's rate
    assert [lay[f"res5{b}_branch2b"].params["dilation"][0] for b in "abc"] == [r, 2 * r, 4 * r]
    assert lay["res3a_branch2b"].params["stride"] == [2] and lay["res3a_branch2a"].params["stride"] == [1]


@pytest.mark.parametrize("crop", [321, 513, 301])
def test_v3_shapes_any_size(crop):
    s = shapes("deeplab_v3_resnet101", crop)
    assert s["logits_interp"] == (1, 21, crop, crop)


def test_flops_in_the_table():
    assert madds("deeplab_v2_resnet101_aspp", 513) == pytest.approx(188.89e9, rel=1e-3)
    assert madds("deeplab_v3_resnet101", 513) == pytest.approx(71.70e9, rel=1e-3)
    assert madds("deeplab_v3_resnet101", 513, output_stride=8) == pytest.approx(248.67e9, rel=1e-3)


def test_v3_forward_backward_small():
    torch.manual_seed(0)
    net = deeplab_compile.compile(netdef("deeplab_v3_resnet101"), phase="train", vars={"crop": 65})
    data, label = torch.randn(2, 3, 65, 65), torch.randint(0, 21, (2, 1, 65, 65)).float()
    out = net(data, label)
    loss = net.total_loss(out)
    loss.backward()
    assert torch.isfinite(loss) and net.conv1.weight.grad.abs().sum() > 0


def test_v2_test_phase_forward_small():
    net = deeplab_compile.compile(netdef("deeplab_v2_resnet101_aspp"), vars={"crop": 65})
    with torch.no_grad():
        out = net(torch.randn(1, 3, 65, 65))["fc1_interp"]
    assert out.shape == (1, 21, 65, 65)


@pytest.mark.slow
def test_msc_forward_backward():
    torch.manual_seed(0)
    net = deeplab_compile.compile(netdef("deeplab_v2_resnet101_msc"), phase="train", vars={"crop": 129})
    data, label = torch.randn(1, 3, 129, 129), torch.randint(0, 21, (1, 1, 129, 129)).float()
    out = net(data, label)
    assert set(out) >= {"loss", "loss_res075", "loss_res05", "loss_fusion"}
    net.total_loss(out).backward()
    assert net.fc1_c0.weight.grad.abs().sum() > 0
