"""DeepLab's own Caffe files: both of DeepLab's schemas, their data layer, their
variables, and prototxt -> YAML -> the same net.

The fixtures are written here in the style of DeepLab's released configs
(tests/deeplab_prototxt.py; two are kept in tests/data/caffe)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import yaml

import deeplab_compile as dc
from deeplab_compile.caffe import proto, prototxt
from deeplab_compile.caffe.caffemodel import read_layers
from deeplab_compile.cli import compile as compile_cli
from deeplab_compile.data.spec import resolve_spec
from deeplab_compile.layers.batch_norm import CaffeBatchNorm
from deeplab_compile.netdef.errors import ParameterError, UnknownLayerError

import deeplab_prototxt as D

DATA = os.path.join(os.path.dirname(__file__), "data", "caffe")
LARGEFOV = os.path.join(DATA, "deeplab_largefov_v1_trainval.prototxt")
VGG16 = os.path.join(DATA, "deeplab_v2_vgg16_aspp_l.prototxt")
MSC_V1 = os.path.join(DATA, "msc_v1.prototxt")
# DeepLab's run_pascal.sh gives one variable set to every file (through sub.sed)
RUN_VARS = {"NET_ID": "net", "DATA_ROOT": "/data/VOC2012", "EXP": "voc12", "TRAIN_SET": "train_aug",
            "TEST_SET": "val", "NUM_LABELS": 21, "FEATURE_DIR": "features", "MODEL": "model/init.caffemodel"}


def n_params(net) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.fixture(scope="module")
def resnet_msc(tmp_path_factory):
    path = tmp_path_factory.mktemp("deeplab") / "resnet101_msc.prototxt"
    path.write_text(D.resnet101_msc())
    return str(path)


def d_args(variables=RUN_VARS):
    return [a for k, v in variables.items() for a in ("-D", f"{k}={v}")]


# ---------------------------------------------------------------- the schema

# (message, field, number) of DeepLab v2's caffe.proto and of DeepLab v1's fork; v1's
# V1-syntax layer (named LayerParameter there) is V1LayerParameter here.
SCHEMA_FACTS = [
    ("TransformationParameter", "scale_factors", 8), ("TransformationParameter", "crop_width", 9),
    ("TransformationParameter", "crop_height", 10), ("BatchNormParameter", "update_global_stats", 4),
    ("SegAccuracyParameter", "metric", 1), ("SegAccuracyParameter", "ignore_label", 2),
    ("ImageDataParameter", "ignore_label", 15), ("ImageDataParameter", "label_type", 16),
    ("ImageDataParameter", "has_label", 13), ("ImageDataParameter", "max_labels", 14),
    ("LayerParameter", "input_param", 143), ("LayerParameter", "crop_param", 144),
    ("LayerParameter", "domain_transform_param", 147), ("LayerParameter", "dense_crf_param", 152),
    ("LayerParameter", "interp_param", 153), ("LayerParameter", "seg_accuracy_param", 154),
    ("LayerParameter", "mat_write_param", 155), ("LayerParameter", "window_data_param", 129),
    ("LayerParameter", "tile_param", 138), ("LayerParameter", "embed_param", 137),
    ("V1LayerParameter", "strict_dim", 1003), ("V1LayerParameter", "blob_share_mode", 1002),
    ("V1LayerParameter", "layer", 1), ("V1LayerParameter", "censor_label_param", 52),
    ("V1LayerParameter", "onehot_param", 59), ("V1LayerParameter", "gain_channel_param", 58),
    ("V1LayerParameter", "seg_accuracy_param", 42), ("V1ConvolutionParameter", "hole", 17),
    ("V1ConvolutionParameter", "hole_w", 19), ("V0LayerParameter", "kernelsize", 8),
    ("V0LayerParameter", "hdf5_output_param", 1001), ("Datum", "encoded", 7),
    ("SolverState", "current_step", 4), ("GainChannelParameter", "thresh", 6),
    ("DenseCRFParameter", "output_probability", 7), ("DomainTransformParameter", "num_iter", 1),
]
ENUM_FACTS = [
    ("V1LayerParameter", "LayerType", "CENSOR_LABEL", 49), ("V1LayerParameter", "LayerType", "ADAPTIVE_BIAS_CHANNEL", 50),
    ("V1LayerParameter", "LayerType", "ONEHOT", 56), ("V1LayerParameter", "LayerType", "IMAGE_SEG_DATA", 39),
    ("V1LayerParameter", "LayerType", "DECONVOLUTION", 39), ("SegAccuracyParameter", "AccuracyMetric", "PixelIOU", 2),
    ("ConvolutionParameter", "Engine", "CUDNN", 2), ("ReductionParameter", "ReductionOp", "MEAN", 4),
    ("EuclideanLossParameter", "Type", "L2sqrt", 1), ("DataParameter", "DB", "LMDB", 1),
]


@pytest.mark.parametrize("message,field,number", SCHEMA_FACTS)
def test_the_schema_has_deeplabs_fields_with_their_numbers(message, field, number):
    assert proto.descriptor(message).fields_by_name[field].number == number


@pytest.mark.parametrize("message,enum,value,number", ENUM_FACTS)
def test_the_schema_has_deeplabs_enum_values(message, enum, value, number):
    assert proto.descriptor(message).enum_types_by_name[enum].values_by_name[value].number == number


def _blob(layer, t):
    b = layer.blobs.add()
    b.shape.dim.extend(t.shape)
    b.data.extend(t.flatten().tolist())


def test_caffemodels_of_both_schemas_import(tmp_path):
    w, b = torch.randn(8, 3, 3, 3), torch.randn(8)
    # DeepLab v1: V1 layers with its own fields set, a data layer (type 39) without blobs
    m = proto.NetParameter(name="v1")
    lt = proto.descriptor("V1LayerParameter").enum_types_by_name["LayerType"].values_by_name
    m.layers.add(name="data", type=lt["IMAGE_SEG_DATA"].number).image_data_param.has_label = False
    conv = m.layers.add(name="conv1", type=lt["CONVOLUTION"].number, strict_dim=False)
    conv.param.extend(["conv1_w", "conv1_b"])
    conv.blob_share_mode.append(1)
    conv.convolution_param.hole = 2
    _blob(conv, w)
    _blob(conv, b)
    m.layers.add(name="acc", type=lt["SEG_ACCURACY"].number).seg_accuracy_param.metric = 2
    v1 = tmp_path / "v1.caffemodel"
    v1.write_bytes(m.SerializeToString())
    layers = [(cl.name, cl.type, cl.param_names, [np.array(bl.data) for bl in cl.blobs])
              for cl in read_layers(str(v1))]
    assert [lay[:2] for lay in layers] == [("data", "IMAGE_SEG_DATA"), ("conv1", "CONVOLUTION"),
                                           ("acc", "SEG_ACCURACY")]
    assert layers[1][2] == ["conv1_w", "conv1_b"] and layers[0][3] == []
    assert torch.equal(torch.from_numpy(layers[1][3][0]).reshape(8, 3, 3, 3), w)
    net = dc.compile(MSC_V1, vars={"NUM_LABELS": 5})
    dc.load_weights(net, str(v1), allow_missing=True)
    assert torch.equal(net.conv1.weight, w) and torch.equal(net.conv1_res05.bias, b)
    # DeepLab v2: its LayerParameter numbers (interp 153, seg_accuracy 154, ...), and V1
    # type 39 read as DECONVOLUTION when it has blobs
    m = proto.NetParameter(name="v2")
    conv = m.layer.add(name="conv1", type="Convolution")
    conv.param.add(name="conv1_w")
    conv.param.add(name="conv1_b")
    _blob(conv, w)
    _blob(conv, b)
    m.layer.add(name="up", type="Interp").interp_param.zoom_factor = 8
    m.layer.add(name="acc", type="SegAccuracy").seg_accuracy_param.ignore_label.append(255)
    m.layer.add(name="bn", type="BatchNorm").batch_norm_param.update_global_stats = True
    wire = m.SerializeToString()
    assert bytes([0xca, 0x09]) in wire          # field 153 (interp_param), wire type 2
    v2 = tmp_path / "v2.caffemodel"
    v2.write_bytes(wire)
    dc.load_weights(net := dc.compile(MSC_V1, vars={"NUM_LABELS": 5}), str(v2), allow_missing=True)
    assert torch.equal(net.conv1.weight, w)
    m = proto.NetParameter()
    deconv = m.layers.add(name="up", type=lt["DECONVOLUTION"].number)
    _blob(deconv, b)
    v2_old = tmp_path / "v2_v1.caffemodel"
    v2_old.write_bytes(m.SerializeToString())
    assert [cl.type for cl in read_layers(str(v2_old))] == ["DECONVOLUTION"]


# ---------------------------------------------------------------- DeepLab's nets

@pytest.mark.parametrize("name,count", [("largefov", 20_505_429), ("vgg16", 37_877_652), ("resnet", 44_048_532)])
@pytest.mark.parametrize("phase", ["train", "test"])
def test_deeplab_style_files_compile_with_the_published_counts(name, count, phase, resnet_msc):
    path = {"largefov": LARGEFOV, "vgg16": VGG16, "resnet": resnet_msc}[name]
    net = dc.compile(path, phase=phase, vars=RUN_VARS)
    assert n_params(net) == count


def test_resnet_msc_shares_every_parameter_and_fuses_by_max(resnet_msc):
    net = dc.compile(resnet_msc, phase="train", vars=RUN_VARS)
    assert net.res4b22_branch2b.weight is net.res4b22_branch2b_res05.weight
    assert net.scale5c_branch2c.bias is net.scale5c_branch2c_res075.bias
    lay = {l.name: l for l in net.net.layers}
    assert lay["fc_fusion"].params["operation"] == "max"
    assert lay["bn2a_branch1"].params["use_global_stats"] is True
    # the per-scale scores (41, 31 and 21 wide) and the fused map
    assert [tuple(net.net.blobs[b].shape)[2:] for b in ("fc1_voc12", "fc1_voc12_res075", "fc1_voc12_res05",
                                                        "fc_fusion")] == [(41, 41), (31, 31), (21, 21), (41, 41)]


def test_msc_in_v1_syntax_shares_by_param_name_and_fuses_by_max():
    net = dc.compile(MSC_V1, vars={"NUM_LABELS": 5})
    assert n_params(net) == (3 * 9 * 8 + 8) + (8 * 5 + 5)        # counted once for both scales
    assert net.conv1.weight is net.conv1_res05.weight and net.fc8.bias is net.fc8_res05.bias
    x = torch.randn(1, 3, 33, 33)
    out = net(x)
    out = out["fc8_fusion"] if isinstance(out, dict) else out
    full = net.fc8(torch.relu(net.conv1(x)))
    assert torch.all(out >= full - 1e-6) and torch.isclose(out, full).any()


def test_image_seg_data_has_three_tops_with_label_type_none():
    net = dc.compile(VGG16, phase="test", vars=RUN_VARS)
    shapes = {b: tuple(net.net.blobs[b].shape) for b in ("data", "label", "data_dim")}
    assert shapes == {"data": (1, 3, 513, 513), "label": (1, 1, 513, 513), "data_dim": (1, 1, 1, 2)}
    spec = resolve_spec(net.net, "test")
    assert spec.label_type == "none" and spec.tops == ["data", "label", "data_dim"]
    assert spec.roles == ["data", "label", "data_dim"] and spec.crop_height == 513


def test_scale_factors_and_has_label_reach_the_data_pipeline():
    train = dc.compile(VGG16, phase="train", vars=RUN_VARS)
    spec = resolve_spec(train.net, "train")
    assert spec.scale_factors == [0.5, 0.75, 1.0, 1.25, 1.5] and spec.mirror and spec.crop_height == 321
    assert spec.source == "voc12/list/train_aug.txt" and spec.root_folder == "/data/VOC2012"
    test = dc.compile(LARGEFOV, phase="test", vars=RUN_VARS)
    spec = resolve_spec(test.net, "test")
    # DeepLab v1's has_label: false is a list of images only; the label top stays
    assert spec.label_type == "none" and spec.tops == ["data", "label"]
    assert tuple(test.net.blobs["label"].shape) == (1, 1, 513, 513)
    # the same from a solver's data section
    assert resolve_spec(train.net, "train", {"has_label": False}).label_type == "none"


def test_image_only_list_fills_the_label_with_ignore_label(tmp_path):
    from PIL import Image
    from deeplab_compile.data.dataset import pipeline_for
    img = tmp_path / "a.jpg"
    Image.fromarray(np.full((20, 30, 3), 100, np.uint8)).save(img)
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "list.txt").write_text("/a.jpg\n")     # an image-only list
    text = open(LARGEFOV).read().replace('crop_size: 513', 'crop_size: 40')
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    vars_ = dict(RUN_VARS, DATA_ROOT=str(tmp_path), EXP=str(tmp_path), TEST_SET="list")
    net = dc.compile(str(path), phase="test", vars=vars_)
    batch = next(iter(pipeline_for(net, "test", None, num_workers=0)))
    assert batch["label"].shape == (1, 1, 40, 40) and (batch["label"] == 255).all()
    assert batch["data"].shape == (1, 3, 40, 40)


def test_strict_dim_and_share_modes_are_kept_as_no_ops(tmp_path):
    doc = prototxt.loads(open(MSC_V1).read(), "m.prototxt")
    layers = {l["name"]: l for l in doc["layers"]}
    assert layers["conv1_res05"]["caffe"] == {"blob_share_mode": ["PERMISSIVE", "STRICT"], "strict_dim": False}
    assert "caffe" not in layers["conv1"]
    out = tmp_path / "m.yaml"
    assert compile_cli.main([MSC_V1, "-D", "NUM_LABELS=5", "-q", "--emit", "yaml", "-o", str(out)]) == 0
    emitted = {l["name"]: l for l in yaml.safe_load(out.read_text())["layers"]}
    assert emitted["conv1_res05"]["caffe"] == {"blob_share_mode": ["PERMISSIVE", "STRICT"], "strict_dim": False}
    new = prototxt.loads('layer { name: "c" type: "Convolution" param { name: "w" share_mode: PERMISSIVE } '
                         'convolution_param { num_output: 1 kernel_size: 1 } }', "s.prototxt")
    assert new["layers"][0]["caffe"] == {"share_mode": ["PERMISSIVE"]}


def test_deeplab_layer_types_this_project_lacks_are_one_error():
    for caffe_type in ("CENSOR_LABEL", "ADAPTIVE_BIAS_CHANNEL", "UNIQUE_LABEL", "ONEHOT", "GAIN_CHANNEL"):
        with pytest.raises(UnknownLayerError) as info:
            prototxt.loads(f'layers {{ name: "x" type: {caffe_type} bottom: "a" top: "b" }}\n', "v.prototxt")
        msg = str(info.value)
        assert f"layer 'x' ({caffe_type})" in msg and "not implemented" in msg and "\n" not in msg
    with pytest.raises(ParameterError) as info:
        prototxt.loads('layers { name: "x" type: CONVOLUTION layer { name: "x" type: "conv" } }\n', "v.prototxt")
    assert "V0 layer" in str(info.value) and "upgrade_net_proto_text" in str(info.value)


def test_update_global_stats_normalizes_with_and_updates_the_running_estimates():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 5) * 2 + 1
    frozen = CaffeBatchNorm(channels=3, use_global_stats=True)
    updating = CaffeBatchNorm(channels=3, use_global_stats=True, update_global_stats=True)
    for m in (frozen, updating):
        m.running_mean.fill_(0.5)
        m.train()
    y_frozen, y_updating = frozen(x), updating(x)
    want = (x - 0.5) / torch.sqrt(torch.tensor(1.0 + 1e-5))
    torch.testing.assert_close(y_frozen, want)
    torch.testing.assert_close(y_updating, want)                 # normalized with the old estimates
    assert torch.all(frozen.running_mean == 0.5)
    torch.testing.assert_close(updating.running_mean, x.mean(dim=(0, 2, 3)))   # first update: the batch's
    updating.eval()
    updating(x)
    assert updating.running_weight.item() == 1.0                 # eval never updates


def test_seg_accuracy_metric_is_accepted_and_all_three_are_output():
    # DeepLab reads `metric` but reports accuracy, mean recall and mean IoU regardless
    outs = []
    for metric in ("PixelAccuracy", "PixelIOU"):
        text = ('name: "n" input: "s" input_dim: 1 input_dim: 3 input_dim: 4 input_dim: 4\n'
                'input: "l" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4\n'
                f'layer {{ name: "a" type: "SegAccuracy" bottom: "s" bottom: "l" '
                f'seg_accuracy_param {{ metric: {metric} ignore_label: 255 }} }}\n')
        p = prototxt.loads(text, "a.prototxt")
        from deeplab_compile.netdef.expand import expand
        net = dc.compile(expand(p))
        torch.manual_seed(1)
        out = net(torch.randn(1, 3, 4, 4), torch.randint(0, 3, (1, 1, 4, 4)).float())
        outs.append(out["a"] if isinstance(out, dict) else out)
    assert outs[0].shape == (1, 1, 1, 3) and torch.equal(outs[0], outs[1])


def test_dense_crf_output_probability_false_gives_log_marginals():
    from deeplab_compile.layers.dense_crf import DenseCRFModule
    torch.manual_seed(0)
    scores, dim = torch.randn(1, 3, 6, 6), torch.tensor([[[[6.0, 6.0]]]])
    prob = DenseCRFModule(max_iter=2)(scores, dim)
    logp = DenseCRFModule(max_iter=2, output_probability=False)(scores, dim)
    torch.testing.assert_close(logp, prob.log())


# ---------------------------------------------------------------- variables as sed

def test_unused_variables_are_ignored_with_one_note(capsys):
    # FEATURE_DIR is a use in the test phase, MODEL only in a comment: both files take
    # DeepLab's whole variable set
    assert compile_cli.main([MSC_V1, "-q"] + d_args(dict(RUN_VARS, NUM_LABELS=5))) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("note: ") and "${MODEL}" in err[0] and "${FEATURE_DIR}" in err[0]
    assert "${NUM_LABELS}" not in err[0]
    assert compile_cli.main([LARGEFOV, "-q", "--phase", "test"] + d_args()) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "${MODEL}" in err[0] and "FEATURE_DIR" not in err[0]


def test_a_near_miss_of_a_used_variable_is_an_error(capsys):
    args = d_args({k: v for k, v in RUN_VARS.items() if k != "NUM_LABELS"}) + ["-D", "NUM_LABEL=21"]
    assert compile_cli.main([LARGEFOV, "-q"] + args) == 2
    msg = capsys.readouterr().err.strip()
    assert msg.count("\n") == 0 and "NUM_LABEL" in msg and "did you mean 'NUM_LABELS'?" in msg
    assert compile_cli.main([LARGEFOV, "-q"] + d_args() + ["-D", "data_root=/x"]) == 2
    assert "did you mean 'DATA_ROOT'?" in capsys.readouterr().err


def test_yaml_netdefs_keep_the_strict_rule(tmp_path, capsys):
    out = tmp_path / "m.yaml"
    assert compile_cli.main([MSC_V1, "-D", "NUM_LABELS=5", "-q", "--emit", "yaml", "-o", str(out)]) == 0
    capsys.readouterr()
    assert compile_cli.main([str(out), "-q", "-D", "FEATURE_DIR=x"]) == 2
    assert "no variable 'FEATURE_DIR'" in capsys.readouterr().err


# ---------------------------------------------------------------- round trip

ROUND_TRIP = [(LARGEFOV, RUN_VARS), (VGG16, RUN_VARS), (MSC_V1, {"NUM_LABELS": 5}),
              (os.path.join(DATA, "largefov_v1.prototxt"), {"NUM_LABELS": 21}),
              (os.path.join(DATA, "resnet_msc.prototxt"), {"NUM_LABELS": 5})]


def _table(capsys, args) -> list[str]:
    assert compile_cli.main(args) == 0
    return capsys.readouterr().out.splitlines()[1:]      # the first line names the source


@pytest.mark.parametrize("path,variables", ROUND_TRIP, ids=lambda v: os.path.basename(v) if isinstance(v, str) else "")
def test_prototxt_to_yaml_gives_the_same_layer_table(path, variables, tmp_path, capsys):
    out = tmp_path / "x.yaml"
    assert compile_cli.main([path, "--emit", "yaml", "-o", str(out), "-q"] + d_args(variables)) == 0
    for phase in ("train", "test"):
        a = _table(capsys, [path, "--phase", phase] + d_args(variables))
        b = _table(capsys, [str(out), "--phase", phase])
        assert a == b and any("total:" in line for line in a)


def test_deeplab_label_shrinks_resize_by_nearest_so_the_msc_losses_see_only_ids(tmp_path):
    """DeepLab v2's MSC prototxt shrinks the label to each scale's score size with its
    bilinear Interp; imported, those Interps take nearest, so a label with 255 borders
    reaches the 0.75 and 0.5 losses as class ids and 255 only."""
    from deeplab_compile.caffe.prototxt import loads
    doc = loads(D.resnet101_msc(), "train.prototxt")
    interp = {lay["name"]: lay.get("interpolation") for lay in doc["layers"] if lay["type"] == "Interp"}
    assert interp["label_shrink"] == interp["label_shrink075"] == interp["label_shrink05"] == "nearest"
    assert interp["data_res075"] is None and interp["fc1_${EXP}_res075_interp"] is None   # scores stay bilinear
    # a 0.75-scale shrink of a 2-class label with an ignore border: only 0, 1 and 255 remain
    from deeplab_compile.layers.interp import CaffeInterp
    label = torch.full((1, 1, 41, 41), 255.0)
    label[..., 5:36, 5:20] = 0.0
    label[..., 5:36, 20:36] = 1.0
    near = CaffeInterp(height=31, width=31, interpolation="nearest")(label)
    assert set(near.unique().tolist()) == {0.0, 1.0, 255.0}
    bilinear = CaffeInterp(height=31, width=31)(label)
    assert not set(bilinear.unique().tolist()) <= {0.0, 1.0, 255.0}    # what nearest avoids
