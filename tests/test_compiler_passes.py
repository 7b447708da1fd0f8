"""The compiler's steps one at a time: the loader's suffix dispatch, the validate pass,
wiring and shape inference.  Each pass has a golden case written by hand from the
schemas and Caffe's size rules, and running it twice changes nothing."""
from __future__ import annotations

import copy
import glob
import os
import textwrap
from fractions import Fraction

import pytest

from deeplab_compile import compiler
from deeplab_compile.caffe import prototxt
from deeplab_compile.compiler import infer_shapes, load, load_netdef, loads, validate, wire
from deeplab_compile.netdef.errors import NetDefError, NetDefSyntaxError, ParameterError, WiringError
from deeplab_compile.netdef.expand import expand, filter_phase
from deeplab_compile.netdef.nodes import Map
from deeplab_compile.netdef.parse import loads as yaml_loads

from conftest import DATA, NETDEF


def _doc(text: str, phase: str = "test", name: str = "net.yaml") -> Map:
    return filter_phase(expand(yaml_loads(textwrap.dedent(text), name)), phase)


# --------------------------------------------------------------------------- load

def test_prototxt_goes_to_its_loader(monkeypatch, tmp_path):
    path = tmp_path / "train.prototxt"
    path.write_text('name: "x"\n')
    calls = []
    monkeypatch.setitem(compiler.LOADERS, ".prototxt",
                        lambda text, name: calls.append(name) or Map({"name": "x"}))
    assert load(path) == {"name": "x"} and calls == [str(path)]


def test_prototxt_without_importer_is_a_netdef_error(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def fake_import(name, globals=None, locals=None, fromlist=(), level=0):
        if fromlist and "prototxt" in fromlist:
            raise ImportError("no module", name="deeplab_compile.caffe.prototxt")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(NetDefError, match="prototxt import is not available"):
        loads('name: "x"', "a.prototxt")


def test_load_reads_prototxt_and_yaml_by_suffix():
    path = os.path.join(DATA, "caffe", "largefov_v1.prototxt")
    with open(path) as f:
        assert load(path) == prototxt.loads(f.read(), path)
    assert loads("name: x\n", "net.yml") == {"name": "x"}
    assert loads("name: x\n", "net.txt") == {"name": "x"}        # any other suffix is YAML
    with pytest.raises(NetDefSyntaxError, match=r"net\.yaml:1:"):
        loads('layer { name: "x" }', "net.yaml")
    with pytest.raises(NetDefError, match="no such netdef file"):
        load(os.path.join(DATA, "caffe", "missing.prototxt"))


# --------------------------------------------------------------------------- validate

GOLDEN_NET = """\
name: golden
inputs: {data: [3, 9, 9]}
layers:
  - {name: pool1, type: Pooling, bottom: data, pool: AVE, kernel_size: 3, stride: 2}
  - {name: relu1, type: ReLU, bottom: pool1, top: pool1, engine: CAFFE}
  - {name: prelu1, type: PReLU, bottom: pool1, filler: xavier}
  - {name: slice1, type: Slice, bottom: prelu1, top: [a, b], slice_dim: 1, slice_point: 1}
  - {name: sum, type: Eltwise, bottom: [a, a], operation: SUM, param: []}
  - {name: silence, type: Silence, bottom: b}
"""

# Every layer written out in full: defaults from each type's schema (Caffe's defaults),
# enums lower-cased, the alias slice_dim read as axis, the default top filled in,
# no param entries an empty list.
GOLDEN_LAYERS = [
    {"name": "pool1", "type": "Pooling", "bottom": ["data"], "top": ["pool1"], "param": [], "loss_weight": [0.0],
     "pool": "ave", "kernel_size": [3], "kernel_h": None, "kernel_w": None,
     "stride": [2], "stride_h": None, "stride_w": None, "pad": None, "pad_h": None, "pad_w": None,
     "global_pooling": False, "engine": "default", "round_mode": "ceil"},
    {"name": "relu1", "type": "ReLU", "bottom": ["pool1"], "top": ["pool1"], "param": [], "loss_weight": [0.0],
     "negative_slope": 0.0, "engine": "caffe"},
    {"name": "prelu1", "type": "PReLU", "bottom": ["pool1"], "top": ["prelu1"], "param": [], "loss_weight": [0.0],
     "channel_shared": False,
     "filler": {"type": "xavier", "value": 0.0, "min": 0.0, "max": 1.0, "mean": 0.0, "std": 1.0,
                "sparse": -1, "variance_norm": "fan_in"}},
    {"name": "slice1", "type": "Slice", "bottom": ["prelu1"], "top": ["a", "b"], "param": [],
     "loss_weight": [0.0, 0.0],
     "axis": 1, "slice_point": [1]},
    {"name": "sum", "type": "Eltwise", "bottom": ["a", "a"], "top": ["sum"], "param": [], "loss_weight": [0.0],
     "operation": "sum", "coeff": [], "stable_prod_grad": True},
    {"name": "silence", "type": "Silence", "bottom": ["b"], "top": [], "param": [], "loss_weight": []},
]


def test_validate_golden():
    doc = _doc(GOLDEN_NET)
    before = copy.deepcopy(doc)
    out = validate(doc)
    assert [dict(layer) for layer in out["layers"]] == GOLDEN_LAYERS
    assert {k: v for k, v in out.items() if k != "layers"} == {k: v for k, v in doc.items() if k != "layers"}
    assert doc == before                                   # the input is not changed


def test_validate_keeps_positions():
    doc = _doc("""\
        name: n
        inputs: {data: [3, 9, 9]}
        layers:
          - {name: conv, type: Convolution, bottom: data, num_output: 2, kernel_size: 3,
             hole: 2}
          - {name: relu, type: ReLU, bottom: nope}
        """)
    out = validate(doc)
    conv = out["layers"][0]
    assert conv["dilation"] == [2] and "hole" not in conv
    assert conv.key_locs["dilation"] == doc["layers"][0].key_locs["hole"]       # line 5
    assert conv.loc == doc["layers"][0].loc
    # an error found after validation still names the line the user wrote
    with pytest.raises(WiringError, match=r"net\.yaml:6:\d+: layer 'relu' \(ReLU\): bottom 'nope'"):
        wire(out, "test")


def test_validate_error_names_the_line_and_the_fix():
    doc = _doc("""\
        name: n
        inputs: {data: [3, 9, 9]}
        layers:
          - {name: relu, type: ReLU, bottom: data, negative_slop: 0.1}
        """)
    with pytest.raises(ParameterError, match=r"net\.yaml:4:\d+: layer 'relu' \(ReLU\): unknown parameter "
                                             r"'negative_slop'; did you mean 'negative_slope'\?"):
        validate(doc)


ZOO = sorted(glob.glob(os.path.join(NETDEF, "*.yaml")))


@pytest.mark.parametrize("path", ZOO, ids=os.path.basename)
def test_validate_twice_changes_nothing(path):
    for phase in ("train", "test"):
        once = validate(filter_phase(load_netdef(path), phase))
        twice = validate(once)
        assert twice == once
        assert [layer.key_locs for layer in twice["layers"]] == [layer.key_locs for layer in once["layers"]]
        assert wire(twice, phase) == wire(once, phase)


# --------------------------------------------------------------------------- shapes

SHAPES_NET = """\
name: shapes
inputs: {data: [3, 9, 9]}
layers:
  - {name: conv1, type: Convolution, bottom: data, num_output: 4, kernel_size: 3, pad: 1}
  - {name: pool1, type: Pooling, bottom: conv1, pool: MAX, kernel_size: 3, stride: 2}
  - {name: conv2, type: Convolution, bottom: pool1, num_output: 2, kernel_size: 3, dilation: 2, pad: 2}
"""


def _wired(text: str):
    return wire(validate(_doc(text)), "test")


def test_infer_shapes_golden():
    net = infer_shapes(_wired(SHAPES_NET))
    # 9 -> conv 3x3 pad 1 -> 9 -> max pool 3 stride 2, Caffe's ceil mode: ceil((9 - 3) / 2) + 1 = 4
    # -> conv 3x3 dilation 2 (extent 5) pad 2 -> 4
    shapes = {b.name: (b.shape, b.stride, b.rf) for b in net.blobs.values()}
    assert shapes == {
        "data": ((1, 3, 9, 9), Fraction(1), 1),
        "conv1": ((1, 4, 9, 9), Fraction(1), 3),
        "pool1": ((1, 4, 4, 4), Fraction(2), 5),           # 3 + (3 - 1) * 1
        "conv2": ((1, 2, 4, 4), Fraction(2), 13),          # 5 + (5 - 1) * 2
    }
    assert [(lay.in_shapes, lay.out_shapes) for lay in net.layers] == [
        ([(1, 3, 9, 9)], [(1, 4, 9, 9)]),
        ([(1, 4, 9, 9)], [(1, 4, 4, 4)]),
        ([(1, 4, 4, 4)], [(1, 2, 4, 4)]),
    ]
    bigger = infer_shapes(_wired(SHAPES_NET), {"data": "2x3x17x17"})
    assert bigger.blobs["conv2"].shape == (2, 2, 8, 8) and bigger.inputs == {"data": (2, 3, 17, 17)}


@pytest.mark.parametrize("inputs", [None, {"data": "2x3x17x17"}])
def test_infer_shapes_returns_a_new_net_and_twice_changes_nothing(inputs):
    net = _wired(SHAPES_NET)
    before = copy.deepcopy(net)
    shaped = infer_shapes(net, inputs)
    assert shaped is not net
    assert net == before                                      # the input IR is unchanged
    assert net.blobs["conv2"].shape is None and net.layers[0].out_shapes == []
    assert infer_shapes(shaped, inputs) == shaped


@pytest.mark.parametrize("path", ZOO, ids=os.path.basename)
def test_zoo_infer_shapes_twice_changes_nothing(path):
    net = wire(validate(filter_phase(load_netdef(path), "test")), "test")
    before = copy.deepcopy(net)
    shaped = infer_shapes(net)
    assert net == before
    assert infer_shapes(shaped) == shaped
