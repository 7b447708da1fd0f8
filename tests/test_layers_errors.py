"""Every user error from a layer schema or shape rule is one line that names the layer,
its type and, where known, the file position, and says how to fix it."""
from __future__ import annotations

import pytest

from deeplab_compile.errors import Loc
from deeplab_compile.netdef.errors import ParameterError, ShapeError, UnknownLayerError, WiringError
from deeplab_compile.layers.testing import make_layer

CONV = {"num_output": 8, "kernel_size": 3}


def _err(cls, type_name, params, shapes, **kw):
    with pytest.raises(cls) as ei:
        make_layer(type_name, params, shapes, name="bad", **kw)
    msg = str(ei.value)
    assert "\n" not in msg
    assert f"layer 'bad' ({type_name})" in msg
    assert ";" in msg, f"no hint in: {msg}"       # what is wrong; how to fix it
    return msg


@pytest.mark.parametrize("type_name,params,shapes,needle", [
    # unknown parameter, with a suggestion
    ("Convolution", {**CONV, "dilaton": 2}, [(1, 3, 9, 9)], "did you mean 'dilation'"),
    ("Pooling", {"kernel_size": 3, "strid": 2}, [(1, 3, 9, 9)], "did you mean 'stride'"),
    ("Interp", {"zoom": 2}, [(1, 3, 9, 9)], "unknown parameter 'zoom'"),
    # missing required
    ("Convolution", {"kernel_size": 3}, [(1, 3, 9, 9)], "missing required parameter 'num_output'"),
    ("Convolution", {"num_output": 3}, [(1, 3, 9, 9)], "missing required parameter 'kernel_size'"),
    ("MatWrite", {}, [(1, 3, 9, 9)], "missing required parameter 'prefix'"),
    # wrong type
    ("Convolution", {**CONV, "num_output": "eight"}, [(1, 3, 9, 9)], "must be an integer"),
    ("ReLU", {"negative_slope": "x"}, [(1, 3)], "must be a number"),
    ("Convolution", {**CONV, "bias_term": "no"}, [(1, 3, 9, 9)], "must be true or false"),
    # out of range
    ("Convolution", {**CONV, "num_output": 0}, [(1, 3, 9, 9)], "must be >= 1"),
    ("Convolution", {**CONV, "pad": -1}, [(1, 3, 9, 9)], "must be >= 0"),
    ("Convolution", {**CONV, "kernel_size": 0}, [(1, 3, 9, 9)], "must be >= 1"),
    ("Convolution", {**CONV, "stride": 0}, [(1, 3, 9, 9)], "must be >= 1"),
    ("Pooling", {"kernel_size": 3, "stride_h": 0, "stride_w": 1}, [(1, 3, 9, 9)], "must be >= 1"),
    ("Dropout", {"dropout_ratio": 1.0}, [(1, 3)], "must be < 1"),
    ("Dropout", {"dropout_ratio": -0.1}, [(1, 3)], "must be >= 0"),
    ("Interp", {"zoom_factor": 2, "pad_beg": 1}, [(1, 3, 9, 9)], "must be <= 0"),
    ("Pooling", {"kernel_size": 3, "pad": 3}, [(1, 3, 9, 9)], "not smaller than kernel"),
    # bad enum
    ("Pooling", {"pool": "avg", "kernel_size": 2}, [(1, 3, 9, 9)], "must be one of max, ave, stochastic"),
    ("Pooling", {"pool": "STOCHASTIC", "kernel_size": 2}, [(1, 3, 9, 9)], "STOCHASTIC is not supported"),
    ("Eltwise", {"operation": "mean"}, [(1, 3)] * 2, "must be one of sum, prod, max"),
    ("SoftmaxWithLoss", {"normalization": "all"}, [(1, 3, 2, 2), (1, 1, 2, 2)], "must be one of full"),
    # fillers
    ("Convolution", {**CONV, "weight_filler": {"type": "gauss"}}, [(1, 3, 9, 9)],
     "filler types: constant, uniform, gaussian, xavier, msra, bilinear, positive_unitball"),
    ("Convolution", {**CONV, "weight_filler": {"type": "gaussian", "sdt": 1}}, [(1, 3, 9, 9)],
     "did you mean 'std'"),
    ("Convolution", {**CONV, "weight_filler": {"type": "xavier", "variance_norm": "fan"}}, [(1, 3, 9, 9)],
     "unknown variance_norm"),
    # cross-parameter
    ("Convolution", {"num_output": 8, "kernel_h": 3}, [(1, 3, 9, 9)], "must be given together"),
    ("Convolution", {**CONV, "kernel_h": 3, "kernel_w": 3}, [(1, 3, 9, 9)], "both given"),
    ("Convolution", {**CONV, "group": 3}, [(1, 3, 9, 9)], "not divisible by group"),
    ("Eltwise", {"coeff": [1, 2, 3]}, [(1, 3)] * 2, "3 coeff values for 2 bottoms"),
    ("Interp", {"height": 5}, [(1, 3, 9, 9)], "without 'width'"),
    ("Interp", {}, [(1, 3, 9, 9)], "no output size"),
    ("ImageSegData", {"source": "x.txt"}, [], "no crop size"),
    ("Slice", {"slice_point": [2, 1]}, [(1, 6)], "slice points"),
])
def test_parameter_errors(type_name, params, shapes, needle):
    kw = {"tops": ["a", "b", "c"]} if type_name == "Slice" else {}
    msg = _err(ParameterError, type_name, params, shapes, **kw)
    assert needle in msg, msg


@pytest.mark.parametrize("type_name,params,shapes,needles", [
    ("Eltwise", {}, [(1, 3, 5, 5), (1, 3, 5, 4)], ["'bad_in1' is 1x3x5x4", "'bad_in0' is 1x3x5x5"]),
    ("Concat", {}, [(1, 3, 5, 5), (1, 2, 5, 4)], ["1x2x5x4", "1x3x5x5"]),
    ("SoftmaxWithLoss", {}, [(1, 21, 41, 41), (1, 1, 321, 321)], ["1x1x321x321", "1x21x41x41", "Interp"]),
    ("SegAccuracy", {}, [(1, 21, 41, 41), (1, 1, 40, 41)], ["1x1x40x41"]),
    ("Crop", {"offset": 5}, [(1, 3, 10, 10), (1, 3, 8, 8)], ["does not fit"]),
    ("Convolution", {"num_output": 4, "kernel_size": 11}, [(1, 3, 5, 5)], ["zero or negative"]),
    ("Reshape", {"shape": [0, 7]}, [(1, 3, 5, 5)], ["cannot reshape 1x3x5x5"]),
    ("Slice", {}, [(1, 5)], ["does not split into 3"]),
    ("Scale", {}, [(1, 3, 5, 5), (4,)], ["second bottom"]),
    ("Softmax", {"axis": 4}, [(1, 3, 5, 5)], ["axis 4 is out of range"]),
])
def test_shape_errors(type_name, params, shapes, needles):
    kw = {"tops": ["a", "b", "c"]} if type_name == "Slice" else {}
    msg = _err(ShapeError, type_name, params, shapes, **kw)
    for n in needles:
        assert n in msg, msg


def test_error_points_at_the_key():
    loc, key_loc = Loc("net.yaml", 10, 5), Loc("net.yaml", 12, 9)
    with pytest.raises(ParameterError) as ei:
        make_layer("Convolution", {**CONV, "pad": -2}, [(1, 3, 9, 9)], name="fc6", loc=loc,
                   key_locs={"pad": key_loc})
    assert str(ei.value).startswith("net.yaml:12:9: layer 'fc6' (Convolution): parameter 'pad'")
    with pytest.raises(ParameterError) as ei:     # no key: the layer's position
        make_layer("Convolution", {"kernel_size": 3}, [(1, 3, 9, 9)], name="fc6", loc=loc)
    assert str(ei.value).startswith("net.yaml:10:5: layer 'fc6' (Convolution): missing")
    with pytest.raises(ParameterError) as ei:     # an alias is located at the alias's key
        make_layer("Convolution", {**CONV, "hole": 0}, [(1, 3, 9, 9)], loc=loc, key_locs={"hole": key_loc})
    assert str(ei.value).startswith("net.yaml:12:9:")


def test_unknown_type_and_counts():
    with pytest.raises(UnknownLayerError, match="did you mean 'Convolution'"):
        make_layer("Convolutoin", {}, [(1, 3)])
    with pytest.raises(WiringError, match="1 bottoms given; Eltwise takes at least 2"):
        make_layer("Eltwise", {}, [(1, 3)])
    with pytest.raises(WiringError, match="Silence takes exactly 0"):
        make_layer("Silence", {}, [(1, 3)], tops=["x"])
