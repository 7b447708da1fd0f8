"""The compiler driver and codegen: wiring, SSA in-place, sharing, outputs, shape rules."""
import os
import textwrap

import pytest
import torch
from torch import fx

import deeplab_compile
from deeplab_compile.compiler import build_net
from deeplab_compile.netdef.errors import NetDefError, ShapeError, UnknownLayerError, WiringError, ParameterError

from conftest import DATA, NETDEF


def write(tmp_path, text, name="net.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


class ShapeRecorder(fx.Interpreter):
    def run_node(self, n):
        out = super().run_node(n)
        self.shapes = getattr(self, "shapes", {})
        if isinstance(out, torch.Tensor):
            self.shapes[n.name] = tuple(out.shape)
        return out


@pytest.mark.parametrize("path,phase", [
    (os.path.join(NETDEF, "deeplab_largefov.yaml"), "train"),
    (os.path.join(NETDEF, "deeplab_largefov.yaml"), "test"),
    (os.path.join(NETDEF, "deeplab_v2_vgg16_aspp_l.yaml"), "test"),
    (os.path.join(DATA, "nets", "multi_top.yaml"), "test"),
    (os.path.join(DATA, "nets", "shared_msc.yaml"), "test"),
])
def test_inferred_shapes_equal_real_forward(path, phase):
    """Every layer's shape rule, checked against the tensor its module produces."""
    # lower=False: one node per layer (the lowering runs a conv and its ReLU as one node)
    gm = deeplab_compile.compile(path, phase=phase, vars={"crop": 49} if "deeplab" in path else None, lower=False)
    from deeplab_compile.emit import example_inputs
    rec = ShapeRecorder(gm)
    with torch.no_grad():
        rec.run(*example_inputs(gm))
    checked = 0
    for lay in gm.net.layers:
        for top, tid in zip(lay.tops, lay.top_ids):
            node = lay.name if len(lay.top_ids) == 1 else top
            from deeplab_compile.codegen import module_name
            name = module_name(node)
            if name in rec.shapes:
                assert rec.shapes[name] == gm.net.blobs[tid].shape, (lay.name, top)
                checked += 1
    assert checked >= len([l for l in gm.net.layers if l.top_ids]) - 1


def test_in_place_layers_rebind_without_name_clash(data_dir):
    gm = deeplab_compile.compile(os.path.join(data_dir, "nets", "multi_top.yaml"))
    ids = [b for b in gm.net.blobs if b.startswith("right")]
    assert len(ids) == 3                      # written by slice, then in place by bn and scale
    x = torch.randn(2, 6, 8, 8)
    out = gm(x)["cat"]
    left = torch.relu(x[:, :2])
    torch.testing.assert_close(out[:, :2], left)
    assert "self.relu_left(left)" in gm.code


def test_weight_sharing_by_param_name(data_dir):
    gm = deeplab_compile.compile(os.path.join(data_dir, "nets", "shared_msc.yaml"), phase="train")
    assert gm.conv_a.weight is gm.conv_b.weight
    assert gm.conv_a.bias is gm.conv_b.bias
    assert sum(p.numel() for p in gm.parameters()) == 4 * 3 * 9 + 4
    groups = gm.param_groups(base_lr=0.1)
    assert sorted(len(g["params"]) for g in groups) == [1, 1]
    out = gm(torch.randn(1, 3, 17, 17))["fused"]
    out.sum().backward()
    assert gm.conv_a.weight.grad is not None


def test_shared_param_shape_mismatch_is_an_error(tmp_path):
    path = write(tmp_path, """
        name: bad_share
        inputs: {data: [3, 8, 8]}
        layers:
          - {name: a, type: Convolution, bottom: data, num_output: 4, kernel_size: 3, param: [{name: w}]}
          - {name: b, type: Convolution, bottom: data, num_output: 5, kernel_size: 3, param: [{name: w}]}
        """)
    with pytest.raises(WiringError, match=r"layer 'b' \(Convolution\): shared param 'w'"):
        deeplab_compile.compile(path)


def test_frozen_params_do_not_require_grad(tmp_path):
    path = write(tmp_path, """
        name: frozen
        inputs: {data: [3, 8, 8]}
        layers:
          - {name: a, type: Convolution, bottom: data, num_output: 4, kernel_size: 3,
             param: [{lr_mult: 0}, {lr_mult: 0}]}
          - {name: b, type: Convolution, bottom: a, num_output: 2, kernel_size: 1}
        """)
    gm = deeplab_compile.compile(path, phase="train")
    assert not gm.a.weight.requires_grad and not gm.a.bias.requires_grad
    names = [n for g in gm.param_groups() for n in g["param_names"]]
    assert names == ["b.weight", "b.bias"]


@pytest.mark.parametrize("body,cls,pattern", [
    ("- {name: a, type: ReLU, bottom: dta}", WiringError,
     r"net.yaml:\d+:\d+: layer 'a' \(ReLU\): bottom 'dta' \(bottom index 0\) is not produced by any earlier layer; did you mean 'data'\?"),
    ("- {name: a, type: ReLU, bottom: data}\n- {name: b, type: ReLU, bottom: data, top: a}", WiringError,
     r"layer 'b' \(ReLU\): top 'a' is already produced by 'a'"),
    ("- {name: a, type: ReLU, bottom: data}\n- {name: a, type: Sigmoid, bottom: data, top: s}", WiringError,
     r"layer 'a' \(Sigmoid\): duplicate layer name"),
    ("- {name: a, type: Convolutoin, bottom: data}", UnknownLayerError,
     r"unknown layer type 'Convolutoin'; did you mean 'Convolution'\? known types: .*Pooling"),
    ("- {name: a, type: Convolution, bottom: data, num_output: 4, kernel_size: 3, dilaton: 2}", ParameterError,
     r"layer 'a' \(Convolution\): unknown parameter 'dilaton'; did you mean 'dilation'\?"),
    ("- {name: a, type: Convolution, bottom: data, kernel_size: 3}", ParameterError,
     r"missing required parameter 'num_output'"),
    ("- {name: a, type: Convolution, bottom: data, num_output: four, kernel_size: 3}", ParameterError,
     r"'num_output' must be an integer"),
    ("- {name: a, type: Convolution, bottom: data, num_output: 4, kernel_size: 3, param: [{lr: 1}]}", ParameterError,
     r"unknown key 'lr' in param entry 0"),
    ("- {name: a, type: Convolution, bottom: data, num_output: 4, kernel_size: 9}", ShapeError,
     r"layer 'a' \(Convolution\): .*(zero or negative|would have shape)"),
    ("- {name: a, type: Pooling, bottom: data, pool: MAX, kernel_size: 2, stride: 2}\n"
     "- {name: b, type: Eltwise, bottom: [a, data]}", ShapeError, r"layer 'b' \(Eltwise\)"),
    ("- {name: a, type: Pooling, bottom: data, pool: MAX, kernel_size: 2, stride: 2}\n"
     "- {name: b, type: Concat, bottom: [a, data]}", ShapeError, r"layer 'b' \(Concat\)"),
    ("- {name: a, type: Eltwise, bottom: data}", WiringError, r"takes at least 2 bottom"),
])
def test_wiring_and_schema_errors_are_one_line(tmp_path, body, cls, pattern):
    text = "name: t\ninputs: {data: [3, 8, 8]}\nlayers:\n" + textwrap.indent(body, "  ") + "\n"
    path = write(tmp_path, text)
    with pytest.raises(cls) as info:
        deeplab_compile.compile(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(path + ":")
    import re
    assert re.search(pattern, msg), msg


def test_outputs_list_overrides_default(tmp_path):
    path = write(tmp_path, """
        name: outs
        inputs: {data: [3, 8, 8]}
        outputs: [a]
        layers:
          - {name: a, type: ReLU, bottom: data}
          - {name: b, type: Sigmoid, bottom: a}
        """)
    gm = deeplab_compile.compile(path)
    assert gm.output_names == ["a"]
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(gm(x)["a"], torch.relu(x))


def test_input_override_and_errors():
    path = os.path.join(NETDEF, "deeplab_largefov.yaml")
    net = build_net(path, inputs={"data": "2x3x97x97"})
    assert net.inputs["data"] == (2, 3, 97, 97)
    with pytest.raises(NetDefError, match="did you mean 'data'"):
        build_net(path, inputs={"dta": "1x3x9x9"})
    with pytest.raises(NetDefError, match="NxCxHxW"):
        build_net(path, inputs={"data": "1x3xax9"})


def test_too_small_input_names_the_layer(tmp_path):
    path = write(tmp_path, """
        name: small
        vars: {crop: 12}
        inputs: {data: [3, "${crop}", "${crop}"]}
        layers:
          - {name: pool, type: Pooling, bottom: data, pool: MAX, kernel_size: 3, stride: 2}
          - {name: conv, type: Convolution, bottom: pool, num_output: 2, kernel_size: 5}
        """)
    assert build_net(path).blobs["conv"].shape == (1, 2, 2, 2)     # 12 -> 6 (ceil mode) -> 2
    with pytest.raises(ShapeError) as info:
        build_net(path, vars={"crop": 8})                           # 8 -> 4 -> 0
    assert "layer 'conv' (Convolution)" in str(info.value)


def test_build_is_deterministic_under_seed():
    path = os.path.join(DATA, "nets", "shared_msc.yaml")
    torch.manual_seed(3)
    a = deeplab_compile.compile(path)
    torch.manual_seed(3)
    b = deeplab_compile.compile(path)
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), n


def test_deepcopy_and_pickle_keep_the_compiled_net(data_dir, tmp_path):
    import copy
    gm = deeplab_compile.compile(os.path.join(data_dir, "nets", "shared_msc.yaml"), phase="train")
    x = torch.randn(1, 3, 17, 17)
    for clone in (copy.deepcopy(gm), _save_load(gm, tmp_path / "net.pt")):
        assert clone.conv_a.weight is clone.conv_b.weight          # sharing survives
        assert clone.param_groups(0.1)[0]["param_names"] == gm.param_groups(0.1)[0]["param_names"]
        assert clone.output_names == gm.output_names and clone.training
        torch.testing.assert_close(clone(x)["fused"], gm(x)["fused"])


def _save_load(gm, path):
    torch.save(gm, path)
    return torch.load(path, weights_only=False)


def test_layers_without_tops_need_no_explicit_empty_top(tmp_path):
    path = write(tmp_path, """
        name: silent
        inputs: {data: [3, 8, 8], label: [1, 8, 8]}
        layers:
          - {name: relu, type: ReLU, bottom: data}
          - {name: quiet, type: Silence, bottom: label}
        """)
    gm = deeplab_compile.compile(path)
    assert gm.net.layer("quiet").tops == [] and gm.output_names == ["relu"]
