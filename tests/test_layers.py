"""Every registered layer type: the shape rule agrees with what the built module produces."""
from __future__ import annotations

import pytest
import torch

from deeplab_compile.layers import registry
from deeplab_compile.layers.testing import make_layer

torch.set_num_threads(1)

# type -> list of (params, bottom shapes, extra make_layer kwargs)
CASES: dict[str, list[tuple[dict, list[tuple], dict]]] = {
    "Convolution": [
        ({"num_output": 8, "kernel_size": 3, "pad": 1}, [(2, 3, 11, 13)], {}),
        ({"num_output": 6, "kernel_size": 3, "hole": 4, "pad": 4, "group": 3}, [(1, 6, 17, 9)], {}),
        ({"num_output": 4, "kernel_h": 3, "kernel_w": 1, "stride": [2, 1], "pad_h": 1}, [(1, 2, 10, 7)], {}),
        ({"num_output": 5, "kernel_size": 7, "stride": 2, "pad": 3, "bias_term": False}, [(1, 3, 15, 15)], {}),
    ],
    "Deconvolution": [
        ({"num_output": 4, "kernel_size": 4, "stride": 2, "pad": 1, "group": 4, "bias_term": False},
         [(1, 4, 5, 6)], {}),
        ({"num_output": 3, "kernel_size": 16, "stride": 8, "pad": 4}, [(2, 2, 3, 3)], {}),
        ({"num_output": 2, "kernel_size": 3, "dilation": 2}, [(1, 3, 4, 5)], {}),
    ],
    "Pooling": [
        ({"pool": "max", "kernel_size": 3, "stride": 2, "pad": 1}, [(1, 2, 21, 20)], {}),
        ({"pool": "ave", "kernel_size": 3, "stride": 1, "pad": 1}, [(1, 2, 9, 9)], {}),
        ({"pool": "max", "kernel_size": 3, "stride": 2, "pad": 2}, [(1, 1, 10, 11)], {}),
        ({"pool": "ave", "kernel_size": 2, "stride": 3}, [(1, 1, 10, 8)], {}),
        ({"pool": "ave", "global_pooling": True}, [(2, 3, 7, 5)], {}),
    ],
    "Interp": [
        ({"shrink_factor": 8}, [(1, 2, 41, 33)], {}),
        ({"zoom_factor": 4, "pad_beg": -1, "pad_end": -1}, [(1, 1, 9, 7)], {}),
        ({"height": 13, "width": 5}, [(2, 1, 7, 7)], {}),
        ({}, [(1, 2, 5, 5), (1, 7, 12, 9)], {}),
        ({"zoom_factor": 3, "align_corners": False}, [(1, 2, 5, 4)], {}),
        ({"interpolation": "nearest"}, [(1, 1, 41, 33), (1, 3, 31, 25)], {}),
        ({"shrink_factor": 2, "interpolation": "nearest", "align_corners": False}, [(1, 1, 9, 8)], {}),
    ],
    "InnerProduct": [
        ({"num_output": 7}, [(2, 3, 4, 5)], {}),
        ({"num_output": 3, "axis": 2, "transpose": True}, [(2, 3, 4, 5)], {}),
        ({"num_output": 3, "axis": -1, "bias_term": False}, [(2, 4)], {}),
    ],
    "ReLU": [({}, [(2, 3, 4, 4)], {}), ({"negative_slope": 0.1}, [(5, 7)], {})],
    "PReLU": [({}, [(2, 3, 4, 4)], {}), ({"channel_shared": True}, [(2, 3, 4)], {})],
    "Clip": [({"min": 0, "max": 6}, [(2, 3, 4, 4)], {}), ({"min": -1, "max": 1}, [(5, 7)], {})],
    "Sigmoid": [({}, [(2, 3, 4, 4)], {})],
    "TanH": [({}, [(2, 3, 4, 4)], {})],
    "Dropout": [({"dropout_ratio": 0.3}, [(2, 3, 4, 4)], {"phase": "train"}), ({}, [(2, 3)], {})],
    "Softmax": [({}, [(2, 3, 4, 4)], {}), ({"axis": -1}, [(2, 3, 5)], {})],
    "BatchNorm": [({}, [(2, 3, 4, 4)], {"phase": "train"}), ({"use_global_stats": True}, [(2, 3, 4, 4)], {}),
                  ({}, [(4, 3)], {})],
    "Scale": [({"bias_term": True}, [(2, 3, 4, 4)], {}), ({"num_axes": -1}, [(2, 3, 4, 4)], {}),
              ({"axis": 0, "num_axes": 0}, [(2, 3, 4, 4)], {}), ({"axis": 0}, [(2, 3, 4, 4), (2, 3)], {"bottoms": ["a", "b"]}),
              ({"axis": 1}, [(2, 3, 4, 4), (3, 4)], {})],
    "Bias": [({}, [(2, 3, 4, 4)], {}), ({"axis": 2}, [(2, 3, 4, 4), (4, 4)], {})],
    "Eltwise": [({}, [(2, 3, 4, 4)] * 3, {}), ({"operation": "PROD"}, [(2, 3)] * 2, {}),
                ({"operation": "max"}, [(1, 2, 3, 3)] * 2, {}),
                ({"coeff": [1, -1]}, [(1, 2, 3, 3)] * 2, {})],
    "Concat": [({}, [(2, 3, 4, 4), (2, 5, 4, 4)], {}), ({"concat_dim": 2}, [(1, 2, 3, 4), (1, 2, 1, 4)], {}),
               ({}, [(1, 2, 3, 3)], {})],
    "Slice": [({"slice_point": [1, 4]}, [(2, 6, 3, 3)], {"tops": ["a", "b", "c"]}),
              ({"axis": 2}, [(2, 6, 4, 3)], {"tops": ["a", "b"]}),
              ({}, [(2, 6, 4, 3)], {"tops": ["a"]})],
    "Split": [({}, [(2, 6, 4, 3)], {"tops": ["a", "b", "c"]}), ({}, [(2, 6)], {})],
    "Crop": [({}, [(1, 3, 10, 12), (1, 1, 7, 5)], {}), ({"axis": 1, "offset": [1, 2, 3]},
                                                       [(1, 4, 10, 12), (1, 2, 7, 5)], {}),
             ({"offset": 2}, [(2, 3, 10, 12), (9, 9, 7, 5)], {})],
    "Flatten": [({}, [(2, 3, 4, 5)], {}), ({"axis": 2, "end_axis": 3}, [(2, 3, 4, 5)], {}),
                ({"axis": 1, "end_axis": -2}, [(2, 3, 4, 5)], {})],
    "Reshape": [({"shape": [0, -1]}, [(2, 3, 4, 5)], {}),
                ({"shape": {"dim": [2, 2]}, "axis": 1, "num_axes": 1}, [(2, 4, 3, 5)], {}),
                ({"shape": [1, 1], "axis": -1}, [(2, 6)], {}),
                ({"shape": [0, 0, 6, -1]}, [(2, 3, 4, 3)], {})],
    "Silence": [({}, [(2, 3), (4,)], {})],
    "SoftmaxWithLoss": [({"ignore_label": 255}, [(2, 3, 4, 5), (2, 1, 4, 5)], {}),
                        ({}, [(2, 3, 4, 5), (2, 4, 5)], {"tops": ["loss", "prob"]})],
    "SegAccuracy": [({"ignore_label": 255}, [(2, 3, 4, 5), (2, 1, 4, 5)], {})],
    "MatWrite": [({"prefix": "features/"}, [(1, 21, 5, 5)], {})],
    "DenseCRF": [({"max_iter": 2}, [(2, 3, 6, 7), (2, 1, 1, 2), (2, 3, 6, 7)], {})],
}

# data layers: no module; their shapes are checked against known values
DATA_CASES = {
    "Input": [({"shape": [1, 3, 321, 321]}, {}, [(1, 3, 321, 321)]),
              ({"shape": [[2, 3, 5, 5], {"dim": [2, 1, 5, 5]}]}, {"tops": ["data", "label"]},
               [(2, 3, 5, 5), (2, 1, 5, 5)])],
    "ImageSegData": [
        ({"source": "train.txt", "crop_size": 321, "batch_size": 10, "mean_value": [104.008, 116.669, 122.675]},
         {"tops": ["data", "label"]}, [(10, 3, 321, 321), (10, 1, 321, 321)]),
        # DeepLab's tops are positional: the label top exists with label_type none
        ({"source": "val.txt", "crop_height": 513, "crop_width": 400, "label_type": "none"},
         {"tops": ["data", "label", "data_dim"]}, [(1, 3, 513, 400), (1, 1, 513, 400), (1, 1, 1, 2)]),
        ({"source": "val.txt", "crop_size": 321, "label_type": "image", "has_label": False},
         {"tops": ["data", "label"]}, [(1, 3, 321, 321), (1, 1, 321, 321)]),
        ({"source": "val.txt", "crop_size": 513}, {"tops": ["data", "label", "data_dim"]},
         [(1, 3, 513, 513), (1, 1, 513, 513), (1, 1, 1, 2)]),
    ],
    "MatRead": [({"prefix": "f/", "source": "l.txt", "shape": [21, 65, 65], "batch_size": 2}, {},
                 [(2, 21, 65, 65)])],
}


def _inputs(type_name, shapes):
    g = torch.Generator().manual_seed(0)
    out = []
    for i, s in enumerate(shapes):
        if type_name in ("SoftmaxWithLoss", "SegAccuracy") and i == 1:
            out.append(torch.randint(0, shapes[0][1], s, generator=g).float())
        else:
            out.append(torch.randn(s, generator=g))
    return out


def test_every_type_has_cases():
    missing = set(registry.known_types()) - set(CASES) - set(DATA_CASES)
    assert not missing, f"add shape cases for {sorted(missing)}"


@pytest.mark.parametrize("type_name", registry.known_types())
def test_shape_rule_matches_module(type_name):
    spec = registry.get(type_name)
    if type_name in DATA_CASES:
        assert spec.is_data
        for params, kw, expected in DATA_CASES[type_name]:
            layer, mod = make_layer(type_name, params, [], **kw)
            assert mod is None
            assert layer.out_shapes == expected
        return
    assert CASES.get(type_name), f"no shape cases for {type_name}"
    for params, shapes, kw in CASES[type_name]:
        layer, mod = make_layer(type_name, params, shapes, **kw)
        out = mod(*_inputs(type_name, shapes))
        outs = out if isinstance(out, tuple) else (out,)
        assert len(outs) == len(layer.tops), (params, shapes)
        assert [tuple(o.shape) for o in outs] == layer.out_shapes, (params, shapes)
        # Caffe's blobs are attributes under their names; the learnable ones are Parameters
        params, buffers = dict(mod.named_parameters(recurse=False)), dict(mod.named_buffers(recurse=False))
        for name in spec.blobs:
            assert name in params or name in buffers or getattr(mod, name, None) is None, name
        learnable = spec.param_shapes(layer)
        assert set(learnable) <= set(params)
        assert {n: tuple(params[n].shape) for n in learnable} == learnable


def test_multi_top_returns_tuple_single_top_tensor():
    _, mod = make_layer("Split", {}, [(1, 2)], tops=["a", "b"])
    assert isinstance(mod(torch.zeros(1, 2)), tuple)
    _, mod = make_layer("Slice", {}, [(1, 2)], tops=["a"])
    assert isinstance(mod(torch.zeros(1, 2)), torch.Tensor)
    _, mod = make_layer("Silence", {}, [(1, 2)])
    assert mod(torch.zeros(1, 2)) == ()


@pytest.mark.parametrize("type_name,params,shapes", [
    ("Pooling", {"pool": "max", "kernel_size": 3, "stride": 2, "pad": 2}, [(1, 2, 9, 9)]),
    ("Pooling", {"pool": "ave", "kernel_size": 3, "stride": 2, "pad": 1}, [(1, 2, 9, 9)]),
    ("Interp", {"shrink_factor": 4, "zoom_factor": 3, "pad_beg": -1}, [(1, 2, 17, 17)]),
    ("Eltwise", {"coeff": [0.5, 2]}, [(1, 2, 3, 3)] * 2),
    ("Reshape", {"shape": [0, -1]}, [(2, 3, 4, 5)]),
    ("Crop", {"offset": [1, 2]}, [(1, 2, 9, 9), (1, 2, 4, 4)]),
    ("Slice", {"slice_point": [1]}, [(1, 3, 4, 4)]),
])
def test_modules_trace_with_fx(type_name, params, shapes):
    """torch.export (as torch.compile and ONNX export) looks inside the leaf modules: the
    shape-dependent Python in them must trace, and the traced program must agree."""
    kw = {"tops": ["a", "b"]} if type_name == "Slice" else {}
    _, mod = make_layer(type_name, params, shapes, **kw)
    xs = _inputs(type_name, shapes)
    ep = torch.export.export(mod, tuple(xs))
    got, want = ep.module()(*xs), mod(*xs)
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
