"""fold_bn and fuse_aspp on golden nets: the rewrite, idempotence, equal outputs and
unchanged parameter names."""
import copy
import os

import pytest
import torch

from deeplab_compile import summary
from deeplab_compile.compiler import build_net, compile_net
from deeplab_compile.passes import fold_bn, fuse_aspp, run_passes

NETDEF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "netdef")

# A v3-style head on a small trunk, with the zoo's templates (conv_bn_act, image pooling).
V3 = """
name: golden_v3
inputs: {{data: [3, 17, 17]}}
include: [{lib}/aspp.yaml]
layers:
  - use: conv_bn_act
    with: {{name: stem, bottom: data, num_output: 8, kernel_size: 3}}
  - use: aspp_v3
    with: {{bottom: stem, in_channels: 8, rate1: 2, rate2: 4, rate3: 20, num_output: 6}}
  - {{name: logits, type: Convolution, bottom: aspp, num_output: 5, kernel_size: 1, weight_filler: {{type: msra}}}}
"""

# DeepLab v2's ASPP (one bottom, four rates, Eltwise SUM) and an ASPP-L-like fc8 sum.
V2 = """
name: golden_v2
inputs: {data: [4, 15, 13]}
layers:
  - {name: c0, type: Convolution, bottom: data, num_output: 3, kernel_size: 3, dilation: 1, pad: 1, weight_filler: {type: msra}, bias_filler: {type: gaussian, std: 1}}
  - {name: c1, type: Convolution, bottom: data, num_output: 3, kernel_size: 3, dilation: 4, pad: 4, weight_filler: {type: msra}, bias_filler: {type: gaussian, std: 1}}
  - {name: c2, type: Convolution, bottom: data, num_output: 3, kernel_size: 3, dilation: 20, pad: 20, weight_filler: {type: msra}, bias_filler: {type: gaussian, std: 1}}
  - {name: aspp, type: Eltwise, bottom: [c0, c1, c2], operation: SUM}
  - {name: f7a, type: Convolution, bottom: aspp, num_output: 4, kernel_size: 1, weight_filler: {type: msra}}
  - {name: f7b, type: Convolution, bottom: data, num_output: 4, kernel_size: 1, weight_filler: {type: msra}}
  - {name: f8a, type: Convolution, bottom: f7a, num_output: 2, kernel_size: 1, weight_filler: {type: msra}, bias_filler: {type: gaussian, std: 1}}
  - {name: f8b, type: Convolution, bottom: f7b, num_output: 2, kernel_size: 1, weight_filler: {type: msra}, bias_filler: {type: gaussian, std: 1}}
  - {name: score, type: Eltwise, bottom: [f8a, f8b], operation: SUM}
"""


@pytest.fixture
def v3_path(tmp_path):
    p = tmp_path / "v3.yaml"
    p.write_text(V3.format(lib=os.path.join(NETDEF, "lib")))
    return str(p)


@pytest.fixture
def v2_path(tmp_path):
    p = tmp_path / "v2.yaml"
    p.write_text(V2)
    return str(p)


def _randomize(gm, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = gm.state_dict()
    for k, v in sd.items():
        if v.is_floating_point():
            r = torch.randn(v.shape, generator=g, dtype=v.dtype) * 0.3
            v.copy_(r.abs() + 0.5 if k.endswith("running_var") else r + (1 if k.endswith("scale.weight") else 0))
    return sd


def _types(net):
    return [(l.name, l.type) for l in net.layers]


def test_fold_bn_golden(v3_path):
    net = build_net(v3_path)
    folded = fold_bn(net)
    assert _types(net) != _types(folded) and len(net.layers) == 33        # the input is left alone
    stem = folded.layer("stem")
    assert stem.type == "ConvolutionBN" and stem.fused_from == ["stem", "stem_bn", "stem_scale"]
    assert [l.type for l in folded.layers].count("ConvolutionBN") == 7
    assert not any(l.type in ("BatchNorm", "Scale") for l in folded.layers)
    assert _types(fold_bn(folded)) == _types(folded)                        # idempotent
    assert _types(fold_bn(build_net(v3_path, phase="train"))) == _types(build_net(v3_path, phase="train"))


def test_fuse_aspp_v3_golden(v3_path):
    net = run_passes(build_net(v3_path))
    assert _types(net) == [("stem", "ConvolutionBN"), ("stem_relu", "ReLU"), ("aspp_concat", "ASPPHead"),
                           ("aspp_drop", "Dropout"), ("logits", "Convolution")]
    head = net.layer("aspp_concat")
    assert head.params["kinds"] == ["conv", "conv", "conv", "conv", "pool"]
    assert head.params["rates"] == [1, 2, 4, 20] + [1] and head.params["relu_out"]
    assert head.bottoms == ["stem"] and head.tops == ["aspp"]
    assert "aspp_pool_interp" in head.fused_from and "aspp_bn" in head.fused_from
    assert _types(run_passes(net)) == _types(net)                           # idempotent
    # training keeps the unfused v3 head
    assert not any(l.type == "ASPPHead" for l in run_passes(build_net(v3_path, phase="train")).layers)


def test_fuse_aspp_v2_golden(v2_path):
    net = build_net(v2_path)
    fused = fuse_aspp(net)
    assert _types(fused) == [("aspp", "ASPPSum"), ("f7a", "Convolution"), ("f7b", "Convolution"),
                             ("score", "ConvSum")]
    assert fused.layer("aspp").params["rates"] == [1, 4, 20]
    assert fused.layer("score").bottoms == ["f7a", "f7b"] and fused.layer("score").fused_from == ["f8a", "f8b", "score"]
    assert _types(fuse_aspp(fused)) == _types(fused)
    assert _types(fuse_aspp(build_net(v2_path, phase="train"))) == _types(fused)   # v2 sums train too


@pytest.mark.parametrize("which", ["v2", "v3"])
def test_fused_and_unfused_agree_and_share_state_dicts(which, v2_path, v3_path):
    path = v2_path if which == "v2" else v3_path
    plain = compile_net(path, fuse=False)
    fused = compile_net(path, fuse=True)
    assert sorted(fused.state_dict()) == sorted(plain.state_dict())       # names kept
    fused.load_state_dict(_randomize(plain), strict=True)
    x = torch.randn(2, *plain.net.inputs["data"][1:], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = plain(x), fused(x)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-4)
    fused.graph.lint()


def test_v2_fused_train_gradients_agree(v2_path):
    plain = compile_net(v2_path, phase="train", fuse=False)
    fused = compile_net(v2_path, phase="train", fuse=True)
    fused.load_state_dict(_randomize(plain))
    x = torch.randn(2, 4, 15, 13)
    for gm in (plain, fused):
        gm.zero_grad()
        gm(x)["score"].square().sum().backward()
    gp, gf = dict(plain.named_parameters()), dict(fused.named_parameters())
    assert gp.keys() == gf.keys()
    for k in gp:
        torch.testing.assert_close(gf[k].grad, gp[k].grad, rtol=1e-4, atol=1e-4)


def test_table_shows_fused_layers(v2_path):
    text = summary.format_table(compile_net(v2_path, fuse=True))
    assert "ASPPSum" in text and "fused: c0,c1,c2,aspp" in text
    plain = summary.format_table(compile_net(v2_path, fuse=False))
    assert text.splitlines()[-3] == plain.splitlines()[-3]                 # same totals


@pytest.mark.parametrize("name,fused_type", [("deeplab_largefov", None), ("deeplab_v2_vgg16_aspp_l", "ConvSum")])
def test_zoo_vgg_fused_matches_unfused(name, fused_type):
    path = os.path.join(NETDEF, name + ".yaml")
    plain = compile_net(path, inputs={"data": "1x3x49x49"}, fuse=False)
    fused = compile_net(path, inputs={"data": "1x3x49x49"}, fuse=True)
    assert [l.type for l in fused.net.layers if l.fused_from] == ([fused_type] if fused_type else [])
    fused.load_state_dict(_randomize(plain), strict=True)
    x = torch.randn(1, 3, 49, 49)
    with torch.no_grad():
        a, b = plain(x), fused(x)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-4 * a[k].abs().max().item())


def test_cli_no_fuse(v2_path, capsys):
    from deeplab_compile.cli.compile import main
    assert main([v2_path]) == 0
    assert "ASPPSum" in capsys.readouterr().out
    assert main([v2_path, "--no-fuse"]) == 0
    out = capsys.readouterr().out
    assert "ASPPSum" not in out and "fused:" not in out


# ---------------------------------------------------------------- what compile_net fuses by default

# A BatchNorm on batch statistics (never folded) and one on running statistics (folded).
STATS = """
name: stats
inputs: {data: [3, 9, 9]}
layers:
  - {name: a, type: Convolution, bottom: data, num_output: 4, kernel_size: 3, weight_filler: {type: msra}}
  - {name: a_bn, type: BatchNorm, bottom: a, top: a, use_global_stats: false}
  - {name: a_scale, type: Scale, bottom: a, top: a, bias_term: true}
  - {name: b, type: Convolution, bottom: a, num_output: 4, kernel_size: 3, weight_filler: {type: msra}}
  - {name: b_bn, type: BatchNorm, bottom: b, top: b, use_global_stats: true}
  - {name: b_scale, type: Scale, bottom: b, top: b, bias_term: true}
"""


def _fused(gm):
    return [(l.name, l.type) for l in gm.net.layers if l.fused_from]


def test_compile_net_fuses_the_test_phase_by_default(v2_path, v3_path):
    import deeplab_compile
    gm = compile_net(v3_path)
    assert _fused(gm) == [("stem", "ConvolutionBN"), ("aspp_concat", "ASPPHead")]
    assert _types(gm.net) == _types(compile_net(v3_path, fuse=True).net)
    assert _fused(deeplab_compile.compile(v2_path)) == [("aspp", "ASPPSum"), ("score", "ConvSum")]
    plain = compile_net(v3_path, fuse=False)                   # the keyword still turns it off
    assert not _fused(plain) and _types(plain.net) == _types(build_net(v3_path))
    assert sorted(gm.state_dict()) == sorted(plain.state_dict())
    gm.load_state_dict(_randomize(plain), strict=True)
    x = torch.randn(1, 3, 17, 17)
    with torch.no_grad():
        a, b = plain(x), gm(x)
    torch.testing.assert_close(b["logits"], a["logits"], rtol=1e-4, atol=1e-4 * a["logits"].abs().max().item())


def test_train_phase_is_not_fused(v2_path, v3_path):
    for path in (v2_path, v3_path):
        gm = compile_net(path, phase="train")
        assert not _fused(gm) and _types(gm.net) == _types(build_net(path, phase="train"))
    # asked for explicitly, fold_bn and the v3 head still leave a train-phase net alone
    assert _types(compile_net(v3_path, phase="train", fuse=True).net) == _types(build_net(v3_path, phase="train"))


def test_batch_statistics_are_never_folded(tmp_path):
    p = tmp_path / "stats.yaml"
    p.write_text(STATS)
    gm = compile_net(str(p))
    assert _types(gm.net) == [("a", "Convolution"), ("a_bn", "BatchNorm"), ("a_scale", "Scale"),
                              ("b", "ConvolutionBN")]
    assert gm.net.layer("b").fused_from == ["b", "b_bn", "b_scale"]
    # use_global_stats: true folds the same in training mode, so that runs and agrees
    plain = compile_net(str(p), fuse=False)
    gm.load_state_dict(_randomize(plain), strict=True)
    x = torch.randn(2, 3, 9, 9)
    plain.train(), gm.train()
    torch.testing.assert_close(gm(x)["b"], plain(x)["b"], rtol=1e-4, atol=1e-4)


def test_fused_modules_refuse_training_mode(v3_path):
    gm = compile_net(v3_path)             # conv_bn_act: use_global_stats unset, so it follows the mode
    x = torch.randn(1, 3, 17, 17)
    gm.train()
    with pytest.raises(RuntimeError, match=r"BatchNorm 'stem_bn'.*fuse=False"):
        gm(x)
    gm.eval()
    with torch.no_grad():
        gm(x)


def test_exporters_refuse_fused_nets(v2_path, tmp_path):
    from deeplab_compile.emit import export_onnx, export_torchscript, python_source
    from deeplab_compile.errors import DeepLabError
    gm = compile_net(v2_path)
    out = tmp_path / "out"
    out.mkdir()
    for fn in (lambda: python_source(gm), lambda: export_onnx(gm, str(out / "n.onnx")),
               lambda: export_torchscript(gm, str(out / "n.pt"))):
        with pytest.raises(DeepLabError, match="fuse=False"):
            fn()
    assert not list(out.iterdir())
    assert "self.aspp" in python_source(compile_net(v2_path, fuse=False))


def test_cli_fuses_the_test_phase_only(v3_path, capsys):
    from deeplab_compile.cli.compile import main
    assert main([v3_path]) == 0
    assert "ASPPHead" in capsys.readouterr().out
    assert main([v3_path, "--phase", "train"]) == 0
    out = capsys.readouterr().out
    assert "ConvolutionBN" not in out and "fused:" not in out
