"""One `layout` variable per peer-mirroring zoo netdef, the netdef table lookups it is
written with, and Interp's align_corners switch it sets."""
import pytest
import torch
import torch.nn.functional as F

import deeplab_compile
from deeplab_compile.cli.compile import main as compile_main
from deeplab_compile.compiler import build_net, load_netdef
from deeplab_compile.layers.interp import CaffeInterp
from deeplab_compile.netdef import expand
from deeplab_compile.netdef.errors import VariableError
from deeplab_compile.netdef.parse import loads

from zoo_helpers import netdef


# ---------------------------------------------------------------- Interp align_corners


def test_interp_half_pixel_is_torchvision_resize():
    x = torch.randn(2, 3, 5, 7)
    out = CaffeInterp(height=13, width=9, align_corners=False)(x)
    torch.testing.assert_close(out, F.interpolate(x, size=(13, 9), mode="bilinear", align_corners=False))
    aligned = CaffeInterp(height=13, width=9)(x)
    torch.testing.assert_close(aligned, F.interpolate(x, size=(13, 9), mode="bilinear", align_corners=True))
    assert not torch.allclose(out, aligned)
    # corners aligned: the input's corner pixels are the output's; half-pixel: they are not
    assert torch.equal(aligned[..., 0, 0], x[..., 0, 0])


def _interp_net(align):
    return loads(f"""
name: t
inputs: {{data: [2, 9, 9]}}
layers:
  - {{name: up, type: Interp, bottom: data, zoom_factor: 4, align_corners: {align}}}
""")


@pytest.mark.parametrize("align", ["true", "false"])
def test_interp_align_corners_keeps_deeplab_sizes(align):
    """The size formula does not change with the sampling: 9 -> 9 + 8 * 3 = 33."""
    net = build_net(_interp_net(align), inputs={"data": "1x2x9x9"})
    assert net.blobs[net.layers[-1].top_ids[0]].shape == (1, 2, 33, 33)


def test_interp_align_corners_false_exports_to_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from deeplab_compile.emit import export_onnx
    gm = deeplab_compile.compile(_interp_net("false"), inputs={"data": "1x2x9x9"}, fuse=False)
    x = torch.randn(1, 2, 9, 9)
    path = str(tmp_path / "i.onnx")
    export_onnx(gm, path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    ref = F.interpolate(x, size=(33, 33), mode="bilinear", align_corners=False)
    torch.testing.assert_close(torch.from_numpy(out), ref, rtol=1e-5, atol=1e-5)


def test_interp_rejects_a_non_boolean(capsys):
    with pytest.raises(deeplab_compile.DeepLabError, match="align_corners"):
        build_net(_interp_net("3"), inputs={"data": "1x2x9x9"})


# ---------------------------------------------------------------- table lookups


def _vars(text, **overrides):
    return dict(expand.expand(loads(text), overrides=overrides)["vars"])


TABLE = """
name: t
vars:
  layout: deeplab
  os_of: {deeplab: 16, torchvision: 8}
  ac_of: {deeplab: true, torchvision: false}
  names: {1: one, 2: two}
  output_stride: "${os_of[layout]}"
  doubled: "${os_of[layout] * 2}"
  corners: "${ac_of[layout]}"
  text: "os${os_of[layout]}"
  second: "${names[3 - 1]}"
layers: []
"""


def test_table_lookup_values_and_types():
    v = _vars(TABLE)
    assert (v["output_stride"], v["doubled"], v["corners"], v["text"], v["second"]) == (16, 32, True, "os16", "two")
    v = _vars(TABLE, layout="torchvision")
    assert (v["output_stride"], v["doubled"], v["corners"], v["text"]) == (8, 16, False, "os8")
    assert _vars(TABLE, layout="torchvision", output_stride=16)["output_stride"] == 16  # still its own variable


@pytest.mark.parametrize("expr,message", [
    ("${os_of[layout]}", "'layout' is 'tf', which 'os_of' has no entry for; use one of: deeplab, torchvision"),
    ("${layout[os_of]}", "'layout' is text ('tf'), not a mapping"),
    ("${ac_of[layout] + 1}", "no entry"),
    ("${os_of[layout}", "missing ']'"),
    ("${os_of[ac_of]}", "no entry"),
])
def test_table_lookup_errors_are_located(expr, message):
    text = TABLE.replace('"${os_of[layout]}"', f'"{expr}"', 1)
    with pytest.raises(VariableError) as err:
        _vars(text, layout="tf")
    assert message in str(err.value)
    assert err.value.loc is not None and err.value.loc.line == 8   # the output_stride line


def test_table_entries_must_be_single_values():
    with pytest.raises(VariableError, match="entry 'a' is not a number"):
        _vars("name: t\nvars:\n  t: {a: [1, 2]}\nlayers: []\n")
    with pytest.raises(VariableError, match="is a list"):
        _vars("name: t\nvars:\n  t: [1, 2]\nlayers: []\n")
    # entries are literal: a ${...} inside one would come out of an expanded, dumped and
    # re-read netdef escaped, so it is refused where it is written
    with pytest.raises(VariableError, match="entry 'x' holds") as err:
        _vars('name: t\nvars:\n  crop: 321\n  half: {x: "${crop / 2}"}\nlayers: []\n')
    assert err.value.loc is not None and err.value.loc.line == 4


# ---------------------------------------------------------------- the zoo's layouts


BLOCKS = ("res3a_branch2a", "res3a_branch2b", "res4a_branch2b", "res4b1_branch2b",
          "res5a_branch2b", "res5b_branch2b", "res5c_branch2b")


def _layout(name, **vars):
    """(stride, dilation) of the convs where the layouts differ, and the final Interp's
    align_corners (None where the net has none in the test phase)."""
    net = build_net(netdef(name), vars=vars, inputs={"data": "1x3x33x33"})
    by = {lay.name: lay for lay in net.layers}
    convs = {n: (by[n].params["stride"][0], by[n].params["dilation"][0]) for n in BLOCKS}
    interp = by.get("logits_interp")
    return convs, None if interp is None else interp.params["align_corners"]


# (stride, dilation) per block, from torchvision/models/resnet.py (_make_layer keeps
# previous_dilation for a stage's first block; stride on conv2, the 3x3) and DeepLab.
TORCHVISION_OS8 = {"res3a_branch2a": (1, 1), "res3a_branch2b": (2, 1), "res4a_branch2b": (1, 1),
                   "res4b1_branch2b": (1, 2), "res5a_branch2b": (1, 2), "res5b_branch2b": (1, 4),
                   "res5c_branch2b": (1, 4)}


def test_v3_layouts():
    """deeplab: OS 16 (res4 strided), multi-grid (1, 2, 4) at rate 2 in res5, corners
    aligned; torchvision: OS 8, res4 at 2 and res5 at 4 without multi-grid, first blocks
    at the previous rate, half-pixel resize."""
    convs, corners = _layout("deeplab_v3_resnet101")
    assert corners is True
    assert convs == {"res3a_branch2a": (1, 1), "res3a_branch2b": (2, 1), "res4a_branch2b": (2, 1),
                     "res4b1_branch2b": (1, 1), "res5a_branch2b": (1, 2), "res5b_branch2b": (1, 4),
                     "res5c_branch2b": (1, 8)}
    assert _layout("deeplab_v3_resnet101", layout="torchvision") == (TORCHVISION_OS8, False)
    # the paper's evaluation at OS 8 keeps multi-grid: (1, 2, 4) x 4
    convs, _ = _layout("deeplab_v3_resnet101", output_stride=8)
    assert [convs[f"res5{b}_branch2b"][1] for b in "abc"] == [4, 8, 16] and convs["res4a_branch2b"] == (1, 2)


def test_v2_layouts():
    """v2's deeplab layout is DeepLab's Caffe ResNet (stride on the 1x1, res4 at 2 and res5
    at 4 throughout); torchvision's puts the stride on the 3x3 as its ImageNet weights need."""
    convs, _ = _layout("deeplab_v2_resnet101_aspp")
    assert convs == {"res3a_branch2a": (2, 1), "res3a_branch2b": (1, 1), "res4a_branch2b": (1, 2),
                     "res4b1_branch2b": (1, 2), "res5a_branch2b": (1, 4), "res5b_branch2b": (1, 4),
                     "res5c_branch2b": (1, 4)}
    assert _layout("deeplab_v2_resnet101_aspp", layout="torchvision")[0] == TORCHVISION_OS8


def test_bad_layout_is_one_line(capsys):
    assert compile_main([netdef("deeplab_v3_resnet101"), "-D", "layout=tf"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "use one of: deeplab, torchvision" in err and "deeplab_v3_resnet101.yaml:" in err


def test_layout_of_reads_the_netdef():
    from deeplab_compile.zoo.convert import check_layout, layout_of, ZooError
    assert layout_of(netdef("deeplab_v3_resnet101")) == "deeplab"
    assert layout_of(netdef("deeplab_v3_resnet101"), {"layout": "torchvision"}) == "torchvision"
    assert layout_of(netdef("deeplab_largefov")) is None
    assert check_layout("torchvision:deeplabv3_resnet101", netdef("deeplab_v3_resnet101"),
                        {"layout": "torchvision"}) == "torchvision"
    with pytest.raises(ZooError, match="-D layout=torchvision"):
        check_layout("torchvision:deeplabv3_resnet101", netdef("deeplab_v3_resnet101"))
    assert load_netdef(netdef("deeplab_v2_resnet101_aspp"), {"layout": "torchvision"})["vars"]["layout"] == "torchvision"
