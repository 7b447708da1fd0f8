"""DeepLab v1 LargeFOV and v2 VGG16 ASPP-L: exact sizes, shapes, forward/backward, groups."""
import os

import pytest
import torch

import deeplab_compile
from deeplab_compile.compiler import build_net

from conftest import NETDEF

LARGEFOV = os.path.join(NETDEF, "deeplab_largefov.yaml")
ASPP_L = os.path.join(NETDEF, "deeplab_v2_vgg16_aspp_l.yaml")

# VGG16 conv1_1..conv5_3 (weights + biases), counted from the published architecture.
_VGG = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
        (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
VGG16_CONV = sum(cin * cout * 9 + cout for cin, cout in _VGG)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_vgg_trunk_count_matches_published():
    assert VGG16_CONV == 14_714_688      # VGG16 (138,357,544) minus its three fc layers


def test_largefov_parameter_count():
    net = deeplab_compile.compile(LARGEFOV)
    assert n_params(net) == 20_505_429   # the published figure for DeepLab-LargeFOV, 21 classes
    fc = 512 * 1024 * 9 + 1024 + 1024 * 1024 + 1024 + 1024 * 21 + 21
    assert n_params(net) == VGG16_CONV + fc


def test_largefov_num_classes_override_changes_only_fc8():
    net = deeplab_compile.compile(LARGEFOV, vars={"num_classes": 59})
    assert n_params(net) == 20_505_429 + (59 - 21) * (1024 + 1)
    assert net.fc8.weight.shape == (59, 1024, 1, 1)


def test_aspp_l_parameter_count():
    net = deeplab_compile.compile(ASPP_L)
    branch = 512 * 1024 * 9 + 1024 + 1024 * 1024 + 1024 + 1024 * 21 + 21
    assert n_params(net) == VGG16_CONV + 4 * branch == 37_877_652
    assert [net.get_submodule(f"fc6_{i}").dilation for i in (1, 2, 3, 4)] == [(6, 6), (12, 12), (18, 18), (24, 24)]


@pytest.mark.parametrize("crop,score,pools", [(321, 41, (161, 81, 41)), (513, 65, (257, 129, 65))])
def test_largefov_shapes(crop, score, pools):
    net = build_net(LARGEFOV, phase="test", inputs={"data": f"1x3x{crop}x{crop}"})
    shape = {b.name: b.shape for b in net.blobs.values()}
    assert [shape[p][2] for p in ("pool1", "pool2", "pool3")] == list(pools)   # Caffe ceil-mode pooling
    assert shape["pool5a"][2:] == (score, score)
    fc8 = [b for b in net.blobs.values() if b.producer == "fc8"][0]
    assert fc8.shape == (1, 21, score, score)
    assert fc8.stride == 8
    assert shape["fc8_interp"] == (1, 21, crop, crop)


def test_largefov_receptive_field():
    net = build_net(LARGEFOV, phase="test")
    fc6 = [b for b in net.blobs.values() if b.producer == "fc6"][0]
    # conv5 at rate 2 on stride 8, fc6 3x3 at rate 12 on stride 8: rf grows by 2*12*8 = 192
    pool5a = [b for b in net.blobs.values() if b.producer == "pool5a"][0]
    assert fc6.rf == pool5a.rf + 2 * 12 * 8
    assert pool5a.stride == 8


def test_train_phase_has_loss_and_accuracy():
    net = deeplab_compile.compile(LARGEFOV, phase="train", vars={"crop": 65})
    assert net.input_names == ["data", "label"]
    assert set(net.output_names) == {"loss", "accuracy"}
    assert net.loss_weights == {"loss": 1.0}
    assert net.training


def test_test_phase_returns_upsampled_scores_and_takes_only_data():
    net = deeplab_compile.compile(LARGEFOV, vars={"crop": 65})
    assert net.input_names == ["data"]
    assert net.output_names == ["fc8_interp"]
    assert not net.training
    with torch.no_grad():
        out = net(torch.randn(1, 3, 65, 65))
    assert out["fc8_interp"].shape == (1, 21, 65, 65)


@pytest.mark.parametrize("path", [LARGEFOV, ASPP_L])
def test_forward_backward_small(path):
    torch.manual_seed(0)
    net = deeplab_compile.compile(path, phase="train", vars={"crop": 65})
    data = torch.randn(2, 3, 65, 65)
    label = torch.randint(0, 21, (2, 1, 65, 65)).float()
    label[:, :, :5] = 255
    out = net(data, label)
    loss = net.total_loss(out)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert net.conv1_1.weight.grad.abs().sum() > 0


def test_param_groups_follow_lr_and_decay_mult():
    net = deeplab_compile.compile(LARGEFOV, phase="train", vars={"crop": 65})
    groups = net.param_groups(base_lr=1e-3, weight_decay=5e-4)
    by_name = {n: g for g in groups for n in g["param_names"]}
    assert by_name["fc8.weight"]["lr"] == pytest.approx(1e-2)
    assert by_name["fc8.bias"]["lr"] == pytest.approx(2e-2)
    assert by_name["fc8.weight"]["weight_decay"] == pytest.approx(5e-4)
    assert by_name["fc8.bias"]["weight_decay"] == 0
    assert by_name["conv1_1.weight"]["lr"] == pytest.approx(1e-3)
    assert by_name["fc6.bias"]["lr"] == pytest.approx(2e-3)
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    opt = torch.optim.SGD(groups, lr=1e-3, momentum=0.9)
    assert len(opt.param_groups) == 4


def test_fillers_applied():
    torch.manual_seed(0)
    net = deeplab_compile.compile(LARGEFOV, vars={"crop": 65})
    assert net.fc8.weight.std().item() == pytest.approx(0.01, rel=0.1)      # gaussian std 0.01
    assert torch.count_nonzero(net.fc8.bias) == 0
    w = net.conv3_1.weight                                                 # msra: std sqrt(2 / fan_in)
    assert w.std().item() == pytest.approx((2 / (128 * 9)) ** 0.5, rel=0.1)


def test_generated_code_is_readable_and_lints():
    net = deeplab_compile.compile(LARGEFOV)
    net.graph.lint()
    code = net.code
    assert "self.conv1_1(data, relu = True)" in code          # the ReLU as the conv's post-op (lower.py)
    assert "self.fc6(" in code and "self.fc8_interp(" in code
    names = dict(net.named_parameters())
    assert "fc6.weight" in names and "fc6.bias" in names


def test_torch_compile_runs():
    net = deeplab_compile.compile(LARGEFOV, vars={"crop": 33})
    x = torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        ref = net(x)["fc8_interp"]
        out = torch.compile(net, backend="aot_eager")(x)["fc8_interp"]
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_torch_compile_train_phase_backward():
    torch.manual_seed(0)
    net = deeplab_compile.compile(LARGEFOV, phase="train", vars={"crop": 33})
    data, label = torch.randn(2, 3, 33, 33), torch.randint(0, 21, (2, 1, 33, 33)).float()
    compiled = torch.compile(net, backend="aot_eager")
    net.eval()          # dropout off so both runs see the same function
    ref = net.total_loss(net(data, label))
    loss = net.total_loss(compiled(data, label))
    torch.testing.assert_close(loss, ref)
    loss.backward()
    assert net.fc8.weight.grad is not None


@pytest.mark.slow
def test_torch_compile_inductor():
    net = deeplab_compile.compile(LARGEFOV, vars={"crop": 33})
    x = torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        ref = net(x)["fc8_interp"]
        out = torch.compile(net)(x)["fc8_interp"]
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
