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


def compiled(net, ckpt, fuse, size=SIZE, lower=None, **vars):
    gm = deeplab_compile.compile(netdef(net), vars=vars, inputs={"data": f"1x3x{size}x{size}"}, fuse=fuse,
                                 lower=lower)
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

TIMM_CASES = {  # id: (timm model, source, our net, input seed)
    "xception65": ("xception65", "timm:xception65", "deeplab_v3plus_xception65", 3),
    "mobilenetv2": ("mobilenetv2_100", "timm:mobilenetv2_100", "deeplab_v3plus_mobilenetv2", 4),
}


def _timm_features(model, x):
    """Where our backbones end: Xception's exit flow (timm's forward_features); MobileNetV2's
    ir17 projection, the output of timm's last block (we have no conv_head)."""
    if hasattr(model, "conv_stem"):
        return model.blocks(model.bn1(model.conv_stem(x)))
    return model.forward_features(x)


@pytest.fixture(scope="module", params=[(k, os_) for k in TIMM_CASES for os_ in (16, 8)],
                ids=lambda p: f"{p[0]}-os{p[1]}")
def timm_case(request, tmp_path_factory):
    key, os_ = request.param
    name, source, net, seed = TIMM_CASES[key]
    timm = peers.timm()
    torch.manual_seed(0)
    model = peers.randomize_bn(timm.create_model(name, pretrained=False, output_stride=os_))
    x = image(seed=seed)
    with torch.no_grad():
        ref = _timm_features(model, x)
    ck = convert(tmp_path_factory.mktemp(key), model, source, net, output_stride=os_)
    return key, net, os_, x, ref, ck


@FUSE
def test_timm_backbones_into_v3plus(timm_case, fuse):
    """timm's xception65 (aligned Xception, BN eps 1e-3) and mobilenetv2_100 into the v3+
    nets, at output stride 16 and 8: our backbone's last blob is timm's feature map."""
    key, net, os_, x, ref, ck = timm_case
    node = {"xception65": "exit2_sep3_pw_relu", "mobilenetv2": "ir17_project" if fuse else "ir17_project_scale"}[key]
    _, seen = run(compiled(net, ck, fuse, output_stride=os_), x, node)
    close(seen[node], ref)


# ---------------------------------------------------------------- torchvision vgg16


@pytest.fixture(scope="module")
def tv_vgg16(tmp_path_factory):
    """torchvision's vgg16 (ImageNet layout, random weights) and its conversion for
    DeepLab-LargeFOV and v2 VGG16 ASPP-L."""
    tv = peers.torchvision()
    torch.manual_seed(0)
    model = tv.models.vgg16(weights=None).eval()
    tmp = tmp_path_factory.mktemp("vgg")
    src = tmp / "peer.pth"
    torch.save(model.state_dict(), src)
    cks = {}
    for net in ("deeplab_largefov", "deeplab_v2_vgg16_aspp_l"):
        cks[net] = tmp / f"{net}.pt"
        assert convert_main([str(src), "--from", "torchvision:vgg16", "--netdef", netdef(net),
                             "-o", str(cks[net]), "-q"]) == 0
    return model, cks


def _deeplab_and_torchvision_inputs(size=SIZE, seed=5):
    """One RGB image in [0, 255] as DeepLab's nets read it (B G R less mean_value) and as
    torchvision's VGG16 reads it (RGB / 255, ImageNet mean and std)."""
    from deeplab_compile.zoo.vgg16 import DEEPLAB_MEAN_BGR, TORCHVISION_MEAN, TORCHVISION_STD
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(1, 3, size, size, generator=g, dtype=torch.float64) * 255
    caffe = rgb.flip(1) - torch.tensor(DEEPLAB_MEAN_BGR, dtype=torch.float64).view(1, 3, 1, 1)
    tvin = (rgb / 255 - torch.tensor(TORCHVISION_MEAN, dtype=torch.float64).view(1, 3, 1, 1)) \
        / torch.tensor(TORCHVISION_STD, dtype=torch.float64).view(1, 3, 1, 1)
    return caffe.float(), tvin.float()


@FUSE
@pytest.mark.parametrize("net", ["deeplab_largefov", "deeplab_v2_vgg16_aspp_l"])
def test_vgg16_conv_trunk_reads_deeplab_input(tv_vgg16, net, fuse):
    """conv1_1 is rewritten for DeepLab's input: conv1_2 on DeepLab's B G R minus mean gives
    torchvision's conv1_2 on torchvision's normalised RGB, away from the zero-padded border;
    conv2_1 .. conv5_3 are torchvision's tensors."""
    model, cks = tv_vgg16
    caffe, tvin = _deeplab_and_torchvision_inputs()
    gm = compiled(net, cks[net], fuse, lower=False)   # conv1_2 before its ReLU: the lowering fuses the two
    _, seen = run(gm, caffe, "conv1_2")
    with torch.no_grad():
        ref = model.features[:3](tvin)
    close(seen["conv1_2"][..., 2:-2, 2:-2], ref[..., 2:-2, 2:-2])
    sd = gm.state_dict()
    for i, cid in ((2, "1_2"), (5, "2_1"), (28, "5_3")):
        assert torch.equal(sd[f"conv{cid}.weight"], model.features[i].weight.detach())


@pytest.mark.parametrize("net,layer,rate", [("deeplab_largefov", "fc6", 12),
                                            ("deeplab_v2_vgg16_aspp_l", "fc6_1", 6),
                                            ("deeplab_v2_vgg16_aspp_l", "fc6_4", 24)])
def test_vgg16_fc6_is_the_decimated_fully_connected_layer(tv_vgg16, net, layer, rate):
    """fc6 as a 3x3 atrous conv is torchvision's fc6 (a 4096 x 512 x 7 x 7 window on pool5)
    seen through rows/columns 0, 3, 6 and every 4th output: put a pool5 window that is zero
    off those taps through the Linear, and the same taps `rate` apart through our conv."""
    model, cks = tv_vgg16
    gm = compiled(net, cks[net], True)
    g = torch.Generator().manual_seed(6)
    window = torch.zeros(512, 7, 7)
    window[:, ::3, ::3] = torch.randn(512, 3, 3, generator=g)
    size = 2 * rate + 1
    fmap = torch.zeros(1, 512, size, size)
    fmap[0, :, ::rate, ::rate] = window[:, ::3, ::3]
    with torch.no_grad():
        ref = model.classifier[0](window.reshape(1, -1))[0, ::4]
        ours = gm.get_submodule(layer)(fmap)[0, :, rate, rate]
    close(ours, ref)


def test_vgg16_fc7_and_the_report(tv_vgg16, tmp_path, capsys):
    """fc7 is torchvision's fc7 between every 4th unit; fc8 (the 1000 ImageNet classes)
    is dropped and the task's fc8 stays at its filler."""
    model, cks = tv_vgg16
    gm = compiled("deeplab_largefov", cks["deeplab_largefov"], True)
    h = torch.randn(1024, generator=torch.Generator().manual_seed(7))
    full = torch.zeros(4096)
    full[::4] = h
    with torch.no_grad():
        ref = model.classifier[3](full[None])[0, ::4]
        ours = gm.get_submodule("fc7")(h.view(1, 1024, 1, 1))[0, :, 0, 0]
    close(ours, ref)
    src = cks["deeplab_largefov"].parent / "peer.pth"
    assert convert_main([str(src), "--from", "torchvision:vgg16", "--netdef", netdef("deeplab_largefov"),
                         "-o", str(tmp_path / "init.pt")]) == 0
    err = capsys.readouterr().err
    assert "fc8.weight" in err and "left at their initial values" in err
