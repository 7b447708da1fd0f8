"""Prototxt import: both layer syntaxes compile to the same graphs as their YAML twins;
every import error is one line at the prototxt's line:col."""
from __future__ import annotations

import os

import pytest

import deeplab_compile as dc
from deeplab_compile.caffe import prototxt
from deeplab_compile.cli import compile as compile_cli
from deeplab_compile.netdef.errors import (NetDefError, NetDefSyntaxError, ParameterError, UnknownLayerError,
                                           VariableError)
from deeplab_compile.netdef.expand import expand

HERE = os.path.dirname(__file__)
DATA = os.path.join(HERE, "data", "caffe")
ZOO = os.path.join(HERE, "..", "netdef")


def same_graph(a, b):
    assert a.code == b.code
    assert [(k, tuple(v.shape)) for k, v in a.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in b.state_dict().items()]
    assert a.param_info == b.param_info
    assert a.output_names == b.output_names


@pytest.mark.parametrize("phase", ["train", "test"])
def test_largefov_v1_syntax_matches_the_zoo_netdef(phase):
    a = dc.compile(os.path.join(DATA, "largefov_v1.prototxt"), phase=phase, vars={"NUM_LABELS": 21})
    b = dc.compile(os.path.join(ZOO, "deeplab_largefov.yaml"), phase=phase)
    same_graph(a, b)


@pytest.mark.parametrize("phase", ["train", "test"])
def test_resnet_msc_matches_its_yaml_twin(phase):
    a = dc.compile(os.path.join(DATA, "resnet_msc.prototxt"), phase=phase, vars={"NUM_LABELS": 5})
    b = dc.compile(os.path.join(DATA, "resnet_msc.yaml"), phase=phase, vars={"NUM_LABELS": 5})
    same_graph(a, b)
    # the two scales share every learnable tensor
    assert a.conv1.weight is a.conv1_res05.weight and a.fc1.bias is a.fc1_res05.bias


def test_v1_mapping_details():
    doc = prototxt.loads(open(os.path.join(DATA, "largefov_v1.prototxt")).read(), "f.prototxt")
    layers = {l["name"]: l for l in doc["layers"]}
    assert doc["inputs"] == {"data": [3, 321, 321], "label": [1, 321, 321]}
    assert layers["conv5_1"]["dilation"] == 2 and "hole" not in layers["conv5_1"]
    assert layers["fc8"]["param"] == [{"lr_mult": 10, "decay_mult": 1}, {"lr_mult": 20, "decay_mult": 0}]
    assert layers["loss"]["type"] == "SoftmaxWithLoss" and layers["loss"]["phase"] == "train"
    assert layers["loss"]["ignore_label"] == 255
    assert layers["fc8_interp"]["phase"] == "test"
    assert doc["vars"] == {"NUM_LABELS": None}
    # positions point into the prototxt
    assert layers["conv5_1"].key_locs["dilation"].file == "f.prototxt"


def test_emit_yaml_converts_to_the_same_graph(tmp_path):
    out = tmp_path / "largefov.yaml"
    src = os.path.join(DATA, "largefov_v1.prototxt")
    assert compile_cli.main([src, "-D", "NUM_LABELS=21", "-q", "--emit", "yaml", "-o", str(out)]) == 0
    for phase in ("train", "test"):
        same_graph(dc.compile(str(out), phase=phase),
                   dc.compile(src, phase=phase, vars={"NUM_LABELS": 21}))


def test_text_format_features():
    text = """
# comment
name: 'n'  input: "data" input_shape: { dim: [1, 3, 9, 9] }
layer <
  name: "c" type: "Convolution" bottom: "data" top: "c";
  convolution_param { num_output: 2, kernel_size: 3 kernel_size: 3 pad: 1 stride_h: 1 stride_w: 1
                      weight_filler { type: "gaus" "sian" std: 1e-2 } engine: CAFFE }
>
layer { name: "p" type: "Pooling" bottom: "c" top: "p" pooling_param { pool: 1 kernel_size: 2 stride: 2 } }
"""
    doc = prototxt.loads(text, "t.prototxt")
    c, p = doc["layers"]
    assert c["kernel_size"] == [3, 3] and c["weight_filler"] == {"type": "gaussian", "std": 0.01}
    assert c["engine"] == "CAFFE" and p["pool"] == "AVE"
    net = dc.compile(expand(doc))
    assert tuple(net.net.blobs["p"].shape) == (1, 2, 5, 5)


def test_placeholders_are_required_variables():
    text = ('name: "n" input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8\n'
            'layer { name: "c" type: "Convolution" bottom: "data" top: "c"\n'
            '  convolution_param { num_output: ${NUM_LABELS} kernel_size: 1 } }\n')
    doc = prototxt.loads(text, "t.prototxt")
    with pytest.raises(VariableError) as info:
        expand(doc)
    assert str(info.value).startswith("t.prototxt:3:35: variable 'NUM_LABELS' is required")
    assert "-D NUM_LABELS=VALUE" in str(info.value)
    assert expand(doc, overrides={"NUM_LABELS": 4})["layers"][0]["num_output"] == 4


def err(cls, text, filename="e.prototxt"):
    with pytest.raises(cls) as info:
        prototxt.loads(text, filename)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(filename + ":")
    return info.value


def test_unimplemented_layer_type_names_the_layer():
    for t in ('"DomainTransform"', '"UniqueLabel"', '"BiasChannel"', '"AdaptiveBiasChannel"', '"FancyFork"'):
        e = err(UnknownLayerError, f'layer {{ name: "dt" type: {t} bottom: "a" top: "b" }}\n')
        assert e.layer == "dt" and t.strip('"') in str(e) and "not implemented" in str(e)
    e = err(UnknownLayerError, 'layers { name: "bc" type: BIAS_CHANNEL bottom: "a" top: "b" }\n')
    assert "layer 'bc' (BIAS_CHANNEL)" in str(e) and str(e).startswith("e.prototxt:1:27:")


def test_dense_crf_params_are_mapped():
    doc = prototxt.loads('layer { name: "crf" type: "DenseCRF" bottom: "a" bottom: "b" top: "c"\n'
                         '  dense_crf_param { max_iter: 10 pos_w: 3 pos_xy_std: 3 bi_w: 4 '
                         'bi_xy_std: 121 bi_rgb_std: 5 } }\n', "c.prototxt")
    layer = doc["layers"][0]
    assert layer["max_iter"] == 10 and layer["bi_xy_std"] == 121.0 and layer["type"] == "DenseCRF"


def test_syntax_errors_have_positions():
    e = err(NetDefSyntaxError, 'name: "x"\nlayer { name: "a" type: "ReLU" \n')
    assert "end of file" in str(e)
    e = err(NetDefSyntaxError, 'layer {\n  name: "a"\n  typ: "ReLU"\n}\n')
    assert str(e).startswith("e.prototxt:3:3:") and "did you mean 'type'?" in str(e)
    e = err(NetDefSyntaxError, 'layer { name: "a" type: "Pooling" pooling_param { pool: MAXX } }')
    assert "did you mean 'MAX'?" in str(e) and str(e).startswith("e.prototxt:1:57:")
    e = err(NetDefSyntaxError, 'layer { name: "a" type: "Convolution" convolution_param { num_output: 1.5 } }')
    assert "takes an integer" in str(e)
    e = err(NetDefSyntaxError, 'name: "a"\nname: "b"\n')
    assert str(e).startswith("e.prototxt:2:1:") and "given twice" in str(e)
    e = err(NetDefSyntaxError, 'name: "a\n')
    assert "unterminated" in str(e)


def test_layer_field_errors():
    e = err(ParameterError, 'layer { name: "r" type: "ReLU" bottom: "a" top: "a"\n'
                            '  convolution_param { num_output: 3 } }\n')
    assert str(e).startswith("e.prototxt:2:3: layer 'r' (ReLU): 'convolution_param' does not apply")
    e = err(ParameterError, 'layer { name: "d" type: "ImageSegData" top: "data"\n'
                            '  transform_param { crop_size: 3 } image_data_param { source: "x" crop_size: 3 } }\n')
    assert "'crop_size' is given twice" in str(e)
    e = err(ParameterError, 'layer { name: "r" type: "ReLU" bottom: "a" top: "a" propagate_down: true }')
    assert "propagate_down" in str(e)
    e = err(ParameterError, 'layer { name: "r" type: "ReLU" include { phase: TRAIN } exclude { phase: TEST } }')
    assert "both 'include' and 'exclude'" in str(e)


def test_a_bad_value_inside_a_block_is_reported_by_the_compiler():
    # the compiler's schema error, located at the field inside the prototxt block
    text = ('name: "n" input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8\n'
            'layer { name: "s" type: "Softmax" bottom: "data" top: "s"\n'
            '  softmax_param { axis: 1 engine: CUDNN } }\n'
            'layer { name: "c" type: "Convolution" bottom: "s" top: "c"\n'
            '  convolution_param { kernel_size: 1 num_output: 0 } }\n')
    with pytest.raises(ParameterError) as info:
        dc.compile(expand(prototxt.loads(text, "u.prototxt")))
    assert str(info.value).startswith("u.prototxt:5:38: layer 'c' (Convolution): parameter 'num_output' must be >= 1")


def test_cli_compiles_a_prototxt_and_reports_errors(tmp_path, capsys):
    src = os.path.join(DATA, "resnet_msc.prototxt")
    assert compile_cli.main([src, "-D", "NUM_LABELS=3", "--phase", "train"]) == 0
    assert "fc1_fusion" in capsys.readouterr().out
    assert compile_cli.main([src]) == 2
    msg = capsys.readouterr().err.strip()
    assert msg.count("\n") == 0 and "NUM_LABELS" in msg and "resnet_msc.prototxt:" in msg
    bad = tmp_path / "bad.prototxt"
    bad.write_text('name: "x"\nlayer { name: "a" type: "ReLU" bottom: "data" top: "a" ]\n')
    assert compile_cli.main([str(bad)]) == 2
    assert f"error: {bad}:2:56: expected a field name" in capsys.readouterr().err


@pytest.mark.parametrize("field,digits", [("num_output", 5000), ("pool", 5000), ("num_output", 25)])
def test_long_integer_literals_are_a_located_error(field, digits):
    block = "pooling_param" if field == "pool" else "convolution_param"
    ltype = "Pooling" if field == "pool" else "Convolution"
    text = (f'layer {{ name: "c" type: "{ltype}" bottom: "data" top: "c"\n'
            f'  {block} {{ {field}: {"9" * digits} kernel_size: 1 }} }}\n')
    with pytest.raises(NetDefError) as info:
        prototxt.loads(text, "e.prototxt")
    msg = str(info.value)
    assert msg.startswith("e.prototxt:2:") and f"'{field}'" in msg and "\n" not in msg
