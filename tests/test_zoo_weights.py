"""Weight-import tables (deeplab_compile.zoo.mappings) against replicas of each source's
published module tree (tests/data/zoo/replicas.py): every source key is mapped exactly
once, shapes agree with our compiled nets, and imported weights give the same numbers.
These run without torchvision and timm; tests/test_zoo_peers.py checks the same against
their real model code where they are installed."""
import os
import sys

import pytest
import torch
import torch.nn.functional as F

import deeplab_compile
from deeplab_compile.zoo import mappings
from deeplab_compile.zoo.convert import ZooError, convert_file, convert_state_dict

from conftest import DATA, NETDEF
from zoo_helpers import netdef, n_params

sys.path.insert(0, os.path.join(DATA, "zoo"))
import replicas  # noqa: E402


def _compile(path, size=65, **vars):
    return deeplab_compile.compile(path, vars=vars, inputs={"data": f"1x3x{size}x{size}"})


def _backbone_net(tmp_path, lib, template, os_=16):
    p = tmp_path / "backbone.yaml"
    p.write_text(f"name: b\ninputs: {{data: [3, 65, 65]}}\ninclude: [{os.path.join(NETDEF, 'lib', lib)}]\n"
                 f"layers:\n  - {{use: {template}, with: {{bottom: data, output_stride: {os_}}}}}\n")
    return _compile(str(p))


def test_replicas_have_the_published_sizes():
    assert n_params(replicas.ResNet101()) == 44_549_160
    assert n_params(replicas.DeepLabV3ResNet101()) == 60_996_202
    assert n_params(replicas.MobileNetV2()) == 3_504_872
    assert round(n_params(replicas.Xception65()) / 1e6, 2) == 39.92


def _check_table(source, src_model, net):
    table = mappings.key_table(source)
    sd = src_model.state_dict()
    missing = [k for k in sd if k not in table]
    assert not missing, missing[:5]
    targets = [table[k] for k in sd if table[k] is not None]
    assert len(targets) == len(set(targets)), "a target is fed twice"
    ours = net.state_dict()
    for k in sd:
        if table[k] is not None:
            assert table[k] in ours, (k, table[k])
            assert tuple(ours[table[k]].shape) == tuple(sd[k].shape), k
    return sd


CASES = [
    ("torchvision:resnet101", replicas.ResNet101, "deeplab_v3_resnet101", {}),
    ("torchvision:resnet101", replicas.ResNet101, "deeplab_v2_resnet101_aspp", {}),
    ("torchvision:deeplabv3_resnet101", replicas.DeepLabV3ResNet101, "deeplab_v3_resnet101", {}),
    ("timm:xception65", replicas.Xception65, "deeplab_v3plus_xception65", {}),
    ("timm:mobilenetv2_100", replicas.MobileNetV2, "deeplab_v3plus_mobilenetv2", {}),
]


@pytest.mark.parametrize("source,model,net,vars", CASES, ids=[f"{c[0]}->{c[2]}" for c in CASES])
def test_every_source_key_maps_once_with_matching_shape(source, model, net, vars):
    _check_table(source, model(), _compile(netdef(net), 33, **vars))


def test_deeplabv3_feeds_every_tensor_of_our_net():
    net = _compile(netdef("deeplab_v3_resnet101"), 33)
    _, rep = convert_state_dict(replicas.DeepLabV3ResNet101().state_dict(), "torchvision:deeplabv3_resnet101", net)
    assert rep.left_at_init == []
    assert all(k.startswith("aux_classifier.") or k.endswith(".num_batches_tracked") for k in rep.dropped)


def test_deeplabv3_parity_with_torchvision_layout():
    torch.manual_seed(0)
    src = replicas.randomize_bn(replicas.DeepLabV3ResNet101()).eval()
    net = _compile(netdef("deeplab_v3_resnet101"), 65, layout="torchvision")
    sd, _ = convert_state_dict(src.state_dict(), "torchvision:deeplabv3_resnet101", net)
    net.load_state_dict(sd)
    x = torch.randn(1, 3, 65, 65)
    with torch.no_grad():
        ref = F.interpolate(src.logits(x), size=(65, 65), mode="bilinear", align_corners=False)
        out = net(x)["logits_interp"]
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("os_", [16, 8])
@pytest.mark.parametrize("replica,lib,source,top", [
    ("Xception65", "xception65", "timm:xception65", "exit2_sep3_pw"),
    ("MobileNetV2", "mobilenetv2", "timm:mobilenetv2_100", "ir17_project"),
])
def test_backbone_parity(tmp_path, os_, replica, lib, source, top):
    torch.manual_seed(0)
    src = replicas.randomize_bn(getattr(replicas, replica)(output_stride=os_)).eval()
    net = _backbone_net(tmp_path, f"{lib}.yaml", lib, os_)
    sd, _ = convert_state_dict(src.state_dict(), source, net)
    net.load_state_dict(sd)
    x = torch.randn(1, 3, 65, 65)
    with torch.no_grad():
        torch.testing.assert_close(net(x)[top], src.features(x), rtol=1e-4, atol=1e-4)


def test_errors_name_the_key(tmp_path):
    net = _compile(netdef("deeplab_v3_mobilenetv2"), 33)
    sd = replicas.MobileNetV2().state_dict()
    with pytest.raises(ZooError, match="not in its table"):
        convert_state_dict({**sd, "extra.weight": torch.zeros(1)}, "timm:mobilenetv2_100", net)
    with pytest.raises(ZooError, match="shape"):
        convert_state_dict({**sd, "conv_stem.weight": torch.zeros(16, 3, 3, 3)}, "timm:mobilenetv2_100", net)
    with pytest.raises(ZooError, match="unknown weight source"):
        convert_state_dict(sd, "timm:nope", net)


def test_convert_file_writes_a_checkpoint(tmp_path):
    src = tmp_path / "mnv2.pth"
    torch.save(replicas.MobileNetV2().state_dict(), src)
    out = tmp_path / "out.pt"
    rep = convert_file(src, "timm:mobilenetv2_100", netdef("deeplab_v3_mobilenetv2"), out)
    ck = torch.load(out, weights_only=True)
    assert ck["source"] == "timm:mobilenetv2_100" and "logits.weight" in ck["state_dict"]
    assert "logits.weight" in rep.left_at_init and rep.copied > 0
