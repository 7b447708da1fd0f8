"""The zoo against the real peers: torchvision's and timm's own model code (random weights,
randomised BatchNorm statistics, nothing downloaded), converted with ``deeplab-convert
--from`` and compared fused and unfused to 1e-5 relative: backbone features, and the
whole output where the peer has the same head (torchvision's deeplabv3_resnet101).
Skipped with the reason where torchvision or timm is not installed (requirements-peers.txt).
"""
import pytest
import torch
import torch.fx

import deeplab_compile
from deeplab_compile.cli.convert import main as convert_main

import peers
from zoo_helpers import netdef

SIZE = 49     # small and fast; at output stride 8 still a 7 x 7 map for res4/res5's dilations
RTOL = 1e-5
FUSE = pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])


def close(out, ref):
    """Equal to 1e-5 relative to the reference's magnitude (random nets put many values
    near zero, where an elementwise relative bound means nothing)."""
    torch.testing.assert_close(out, ref, rtol=RTOL, atol=RTOL * ref.abs().max().item())


def convert(tmp_path, model, source, net, **vars):
    """``deeplab-convert peer.pth --from SOURCE --netdef NET -D ...`` -> the checkpoint path."""
    src, out = tmp_path / "peer.pth", tmp_path / "converted.pt"
    torch.save(model.state_dict(), src)
    argv = [str(src), "--from", source, "--netdef", netdef(net), "-o", str(out), "-q"]
    for k, v in vars.items():
        argv += ["-D", f"{k}={v}"]
    assert convert_main(argv) == 0
    return out


def compiled(net, ckpt, fuse, size=SIZE, **vars):
    gm = deeplab_compile.compile(netdef(net), vars=vars, inputs={"data": f"1x3x{size}x{size}"}, fuse=fuse)
    deeplab_compile.load_weights(gm, str(ckpt))
    return gm.eval()


def run(gm, x, *nodes):
    """The net's outputs and the values of the named graph nodes (intermediate blobs)."""
    seen = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            value = super().run_node(n)
            if n.name in nodes:
                seen[n.name] = value.clone()
            return value

    with torch.no_grad():
        out = Recorder(gm).run(x)
    missing = [n for n in nodes if n not in seen]
    assert not missing, (missing, [n.name for n in gm.graph.nodes][-40:])
    return out, seen


def image(size=SIZE, seed=1):
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- torchvision deeplabv3


@pytest.fixture(scope="module")
def tv_deeplabv3(tmp_path_factory):
    """torchvision's deeplabv3_resnet101, its outputs on the test image, and its weights
    converted for deeplab_v3_resnet101 with layout torchvision."""
    tv = peers.torchvision()
    torch.manual_seed(0)
    model = peers.randomize_bn(tv.models.segmentation.deeplabv3_resnet101(
        weights=None, weights_backbone=None, num_classes=21, aux_loss=True))
    x = image()
    with torch.no_grad():
        ref = {"out": model(x)["out"], "features": model.backbone(x)["out"]}
    ck = convert(tmp_path_factory.mktemp("dlv3"), model, "torchvision:deeplabv3_resnet101",
                 "deeplab_v3_resnet101", layout="torchvision")
    return x, ref, ck


@FUSE
def test_torchvision_layout_is_torchvision_deeplabv3(tv_deeplabv3, fuse):
    """compile(deeplab_v3_resnet101, vars={"layout": "torchvision"}) with the converted
    weights is torchvision's model without its aux head: its backbone features, and its
    `out` at full resolution (align_corners=False)."""
    x, ref, ck = tv_deeplabv3
    out, seen = run(compiled("deeplab_v3_resnet101", ck, fuse, layout="torchvision"), x, "res5c_relu")
    close(seen["res5c_relu"], ref["features"])
    close(out["logits_interp"], ref["out"])


def test_convert_refuses_another_layout(tv_deeplabv3, tmp_path, capsys):
    """The weights need layout torchvision: the CLI refuses the default layout in one line."""
    _, _, ck = tv_deeplabv3
    src = ck.parent / "peer.pth"
    code = convert_main([str(src), "--from", "torchvision:deeplabv3_resnet101", "--netdef",
                         netdef("deeplab_v3_resnet101"), "-o", str(tmp_path / "x.pt"), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "layout 'torchvision'" in err and "-D layout=torchvision" in err and "'deeplab'" in err
    assert not (tmp_path / "x.pt").exists()


# ---------------------------------------------------------------- torchvision resnet101


@pytest.fixture(scope="module")
def tv_resnet101(tmp_path_factory):
    tv = peers.torchvision()
    torch.manual_seed(0)
    model = peers.randomize_bn(tv.models.resnet101(weights=None, replace_stride_with_dilation=[False, True, True]))
    x = image(seed=2)
    with torch.no_grad():
        h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        ref = model.layer4(model.layer3(model.layer2(model.layer1(h))))
    ck = convert(tmp_path_factory.mktemp("r101"), model, "torchvision:resnet101", "deeplab_v2_resnet101_aspp",
                 layout="torchvision")
    return model, x, ref, ck


@FUSE
def test_torchvision_resnet101_into_v2(tv_resnet101, fuse):
    """ImageNet ResNet-101 into v2's Caffe-named ASPP net with layout torchvision (stride on
    the 3x3, first blocks at the previous rate): res5c is torchvision's layer4 output.
    (v3's trunk is checked through deeplabv3_resnet101's backbone above.)"""
    model, x, ref, ck = tv_resnet101
    _, seen = run(compiled("deeplab_v2_resnet101_aspp", ck, fuse, layout="torchvision"), x, "res5c_relu")
    close(seen["res5c_relu"], ref)


def test_torchvision_resnet101_refuses_a_strided_1x1(tv_resnet101, tmp_path, capsys):
    """v2's default layout strides the 1x1 (Caffe's ResNet): torchvision's weights would
    run on other pixels, so the conversion says how to compile the net instead."""
    src = tv_resnet101[3].parent / "peer.pth"
    code = convert_main([str(src), "--from", "torchvision:resnet101", "--netdef",
                         netdef("deeplab_v2_resnet101_aspp"), "-o", str(tmp_path / "x.pt"), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "-D layout=torchvision" in err, err


# ---------------------------------------------------------------- timm backbones


def _timm(name, os_):
    timm = peers.timm()
    torch.manual_seed(0)
    return peers.randomize_bn(timm.create_model(name, pretrained=False, output_stride=os_))


@FUSE
@pytest.mark.parametrize("os_", [16, 8])
def test_timm_xception65_into_v3plus(tmp_path, os_, fuse):
    """timm's xception65 (aligned Xception, BN eps 1e-3) into v3+ Xception-65: the exit
    flow's output is timm's forward_features, at output stride 16 and 8."""
    model = _timm("xception65", os_)
    x = image(seed=3)
    with torch.no_grad():
        ref = model.forward_features(x)
    ck = convert(tmp_path, model, "timm:xception65", "deeplab_v3plus_xception65", output_stride=os_)
    _, seen = run(compiled("deeplab_v3plus_xception65", ck, fuse, output_stride=os_), x, "exit2_sep3_pw_relu")
    close(seen["exit2_sep3_pw_relu"], ref)


@FUSE
@pytest.mark.parametrize("os_", [16, 8])
def test_timm_mobilenetv2_into_v3plus(tmp_path, os_, fuse):
    """timm's mobilenetv2_100 into v3+ MobileNetV2: ir17's projection is the output of
    timm's last block (before its conv_head, which we do not have)."""
    model = _timm("mobilenetv2_100", os_)
    x = image(seed=4)
    with torch.no_grad():
        ref = model.blocks(model.bn1(model.conv_stem(x)))
    ck = convert(tmp_path, model, "timm:mobilenetv2_100", "deeplab_v3plus_mobilenetv2", output_stride=os_)
    node = "ir17_project" if fuse else "ir17_project_scale"
    _, seen = run(compiled("deeplab_v3plus_mobilenetv2", ck, fuse, output_stride=os_), x, node)
    close(seen[node], ref)
