"""The CPU inference lowering (deeplab_compile/lower.py): the lowered module computes what
the plain one does (fused and unfused nets, NCHW and channels-last inputs, after new
weights are loaded, with autograd on), keeps parameter and node names, and runs twice
to the same graph."""
import copy
import os
import pickle

import pytest
import torch
from torch import nn

from deeplab_compile.compiler import compile_net
from deeplab_compile.lower import PackedASPPHead, PackedConv, PackedConvSum, lower_for_cpu

NETDEF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "netdef")

# A stem, a bottleneck with an identity shortcut, one with a 1x1 projection shortcut
# (fuse_aspp's ConvSum), a strided dilated conv, a v3 ASPP head and biased logits.
NET = """
name: golden_lower
inputs: {{data: [3, 21, 19]}}
include: [{lib}/aspp.yaml]
layers:
  - use: conv_bn_act
    with: {{name: stem, bottom: data, num_output: 8, kernel_size: 3}}
  - use: conv_bn_act
    with: {{name: a1, bottom: stem, num_output: 4, kernel_size: 1}}
  - use: conv_bn_act
    with: {{name: a2, bottom: a1, num_output: 4, kernel_size: 3, dilation: 2}}
  - use: conv_bn
    with: {{name: a3, bottom: a2, num_output: 8, kernel_size: 1}}
  - {{name: a, type: Eltwise, bottom: [stem, a3], operation: SUM}}
  - {{name: a_relu, type: ReLU, bottom: a, top: a}}
  - use: conv_bn
    with: {{name: p1, bottom: a, num_output: 12, kernel_size: 1}}
  - use: conv_bn
    with: {{name: b3, bottom: a, num_output: 12, kernel_size: 1}}
  - {{name: b, type: Eltwise, bottom: [p1, b3], operation: SUM}}
  - {{name: b_relu, type: ReLU, bottom: b, top: b}}
  - {{name: down, type: Convolution, bottom: b, num_output: 8, kernel_size: 3, stride: 2, pad: 2, dilation: 2,
     weight_filler: {{type: msra}}}}
  - {{name: down_relu, type: ReLU, bottom: down, top: down}}
  - use: aspp_v3
    with: {{bottom: down, in_channels: 8, rate1: 1, rate2: 2, rate3: 3, num_output: 6}}
  - {{name: logits, type: Convolution, bottom: aspp, num_output: 5, kernel_size: 1, weight_filler: {{type: msra}},
     bias_filler: {{type: gaussian, std: 1}}}}
"""


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "net.yaml"
    p.write_text(NET.format(lib=os.path.join(NETDEF, "lib")))
    return str(p)


def randomize(gm, seed=0):
    """Non-trivial weights and BatchNorm statistics (an unfolded or stale BN shows)."""
    g = torch.Generator().manual_seed(seed)
    sd = gm.state_dict()
    for k, v in sd.items():
        if v.is_floating_point():
            r = torch.randn(v.shape, generator=g, dtype=v.dtype) * 0.3
            v.copy_(r.abs() + 0.5 if k.endswith("running_var") else r)
    return sd


def image(seed=1, batch=2):
    return torch.randn(batch, 3, 21, 19, generator=torch.Generator().manual_seed(seed))


def pair(path, fuse, seed=0):
    """(plain, lowered) with the same weights."""
    plain = compile_net(path, fuse=fuse, lower=False)
    low = compile_net(path, fuse=fuse)
    sd = randomize(plain, seed)
    low.load_state_dict(sd, strict=True)
    return plain.eval(), low.eval()


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


def kinds(gm):
    return [type(gm.get_submodule(n.target)).__name__ for n in gm.graph.nodes if n.op == "call_module"]


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_lowered_matches_plain(path, fuse, channels_last):
    plain, low = pair(path, fuse)
    x = image()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        a, b = plain(x), low(x)
    assert a.keys() == b.keys()
    for k in a:
        close(b[k], a[k])
        assert b[k].is_contiguous()


def test_an_interp_output_resizes_nchw(path, tmp_path):
    """A resized output is resized from the small blob made NCHW, not reordered after."""
    p = tmp_path / "interp.yaml"
    p.write_text(open(path).read() + "  - {name: up, type: Interp, bottom: logits, zoom_factor: 4}\n")
    plain, low = pair(str(p), True)
    up = next(n for n in low.graph.nodes if n.name == "up")
    assert up.args[0].op == "call_method" and up.args[0].target == "contiguous"
    with torch.no_grad():
        a, b = plain(image()), low(image())
    for k in a:
        close(b[k], a[k])
        assert b[k].is_contiguous()


def test_fused_lowering_takes_relus_and_residual_sums(path):
    """Every conv+ReLU and conv+Eltwise SUM+ReLU is one node, named after the ReLU; the
    unfused net keeps one node per layer."""
    plain, low = pair(path, True)
    k = kinds(low)
    assert "ReLU" not in k and "CaffeEltwise" not in k and "FoldedConv2d" not in k and "Conv2d" not in k
    assert k.count("PackedConvSum") == 1 and k.count("PackedASPPHead") == 1
    names = {n.name for n in low.graph.nodes}
    assert {"stem_relu", "a_relu", "b_relu", "down_relu", "logits"} <= names
    assert names <= {n.name for n in plain.graph.nodes} | {n.name for n in low.graph.nodes if n.op == "call_method"}
    residual = [n for n in low.graph.nodes if n.name == "a_relu"][0]
    assert isinstance(low.get_submodule(residual.target), PackedConv) and residual.target == "a3"
    assert residual.kwargs["relu"] is True and residual.kwargs["other"].name == "stem_relu"
    unfused = compile_net(path, fuse=False)
    assert kinds(unfused).count("ReLU") == kinds(compile_net(path, fuse=False, lower=False)).count("ReLU")
    assert "Conv2d" not in kinds(unfused)
    assert sorted(unfused.state_dict()) == sorted(compile_net(path, fuse=False, lower=False).state_dict())


def test_packed_head_runs_onednn_not_the_fused_op(path, monkeypatch):
    """Under no_grad the packed v3 head computes without the fused op (its fallback),
    and with gradients on it falls back to it."""
    from deeplab_compile.layers.aspp import ASPPHeadModule
    plain, low = pair(path, True)
    x = image()
    with torch.no_grad():
        want = plain(x)["logits"]
    calls = []
    real = ASPPHeadModule.head_args
    monkeypatch.setattr(ASPPHeadModule, "head_args", lambda self, t: calls.append(1) or real(self, t))
    monkeypatch.setattr(ASPPHeadModule, "forward", lambda *a: pytest.fail("the fused op ran"))
    with torch.no_grad():
        close(low(x)["logits"], want)
        close(low(x)["logits"], want)
    assert calls == [1]                      # folded and reordered once, for both calls


def test_a_module_on_its_own_is_its_layer(path):
    """The post-ops are the graph's: called directly, a lowered conv is the convolution
    (with its folded BatchNorm), no ReLU."""
    plain, low = pair(path, False)
    x = torch.randn(1, 12, 9, 9)
    with torch.no_grad():
        close(low.get_submodule("down")(x), plain.get_submodule("down")(x))
        assert (low.get_submodule("down")(x) < 0).any()
        with pytest.raises(RuntimeError, match="channels"):     # torch's message, not oneDNN's
            low.get_submodule("down")(torch.randn(1, 8, 9, 9))


def test_lowering_twice_changes_nothing(path):
    _, low = pair(path, True)
    code = low.code
    lower_for_cpu(low)
    assert low.code == code


def test_packed_weights_follow_new_weights(path):
    """The reordered weights are remade when a tensor they came from changes in place
    (load_state_dict, a BatchNorm's running statistics)."""
    plain, low = pair(path, True)
    x = image()
    with torch.no_grad():
        low(x)
        sd = randomize(plain, seed=5)
        low.load_state_dict(sd)
        close(low(x)["logits"], plain(x)["logits"])
        plain.get_submodule("a2_bn").running_var.mul_(3)
        low.get_submodule("a2_bn").running_var.mul_(3)
        close(low(x)["logits"], plain(x)["logits"])
        for name in ("aspp_c2_bn", "aspp_pool_bn", "aspp_bn"):        # in the packed v3 head
            for gm in (plain, low):
                gm.get_submodule(name).running_mean.add_(0.7)
            close(low(x)["logits"], plain(x)["logits"])


def test_autograd_uses_the_plain_ops(path):
    """With gradients on (eval mode, as for input gradients) the lowered unfused net
    differentiates like the plain one (the fused v3 head is inference only)."""
    plain, low = pair(path, False)
    xs = [image().requires_grad_(), image().requires_grad_()]
    for gm, x in zip((plain, low), xs):
        gm(x)["logits"].square().sum().backward()
    close(xs[1].grad, xs[0].grad)
    close(low.get_submodule("a3").weight.grad, plain.get_submodule("a3").weight.grad)


def test_fused_lowered_net_refuses_training_mode(path):
    _, low = pair(path, True)
    low.train()
    with pytest.raises(RuntimeError, match=r"BatchNorm 'stem_bn'.*fuse=False"):
        low(image())


def test_copies_and_pickles_run(path):
    plain, low = pair(path, True)
    x = image()
    with torch.no_grad():
        low(x)                                  # fills the caches
        want = plain(x)["logits"]
        for other in (copy.deepcopy(low), pickle.loads(pickle.dumps(low))):
            close(other.eval()(x)["logits"], want)


def test_train_phase_convolutions_stay_plain(path):
    gm = compile_net(path, phase="train", vars={})
    assert not any(isinstance(m, (PackedConv, PackedConvSum)) for m in gm.modules())
    assert any(type(m) is nn.Conv2d for m in gm.modules())


def test_bn_scale_merge_trains_like_the_plain_net(path):
    """Train phase: BatchNorm + Scale as one batch_norm call gives the plain net's loss
    terms, gradients and running statistics (Caffe's update), under the Scale's name."""
    plain = compile_net(path, phase="train", lower=False)
    merged = compile_net(path, phase="train")
    merged.load_state_dict(randomize(plain))
    w0 = float(merged.get_submodule("stem_bn").running_weight)
    assert "CaffeScale" not in kinds(merged) and "CaffeScale" in kinds(plain)
    assert "stem_scale" in {n.name for n in merged.graph.nodes}
    x = image(batch=3)
    for step in range(2):
        for gm in (plain, merged):
            gm.zero_grad()
            torch.manual_seed(step)                 # the same dropout masks
            gm(x)["logits"].square().sum().backward()
        gp, gm_ = dict(plain.named_parameters()), dict(merged.named_parameters())
        for k in gp:                                # float sums in another order: 1e-4, as test_passes
            torch.testing.assert_close(gm_[k].grad, gp[k].grad, rtol=1e-4, atol=1e-4 * gp[k].grad.abs().max().item())
        sp, sm = plain.state_dict(), merged.state_dict()
        for k in sp:
            if "running" in k:
                torch.testing.assert_close(sm[k], sp[k], rtol=1e-5, atol=1e-6)
    maf = merged.get_submodule("stem_bn").moving_average_fraction   # Caffe's weight <- maf * weight + 1, twice
    assert float(merged.get_submodule("stem_bn").running_weight) == pytest.approx(maf * (maf * w0 + 1) + 1)


@pytest.mark.parametrize("net", ["deeplab_v3plus_mobilenetv2", "deeplab_v3_resnet101"])
def test_zoo_nets_lowered_match_plain(net):
    """The zoo's v3 and v3+ nets (depthwise convolutions, the v3 head with image pooling,
    the decoder), lowered, against the plain modules on a batch of two small images."""
    path = os.path.join(NETDEF, net + ".yaml")
    plain = compile_net(path, vars={"crop": 65}, lower=False)
    low = compile_net(path, vars={"crop": 65})
    assert "PackedASPPHead" in kinds(low) and "PackedConv" in kinds(low)
    low.load_state_dict(randomize(plain, seed=3))
    plain.eval(), low.eval()
    x = torch.randn(2, 3, 65, 65, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        a, b = plain(x), low(x)
    for k in a:
        close(b[k], a[k])
