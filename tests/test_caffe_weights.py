"""Caffemodel weights: files written through protobuf from known tensors are recovered
exactly, the export round trip is exact, and every bad input is one clear error."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch

import deeplab_compile as dc
from deeplab_compile.caffe import proto
from deeplab_compile.caffe.caffemodel import WeightsError, write_caffemodel
from deeplab_compile.cli import convert

DATA = os.path.join(os.path.dirname(__file__), "data", "caffe")
MSC = os.path.join(DATA, "resnet_msc.prototxt")
VARS = {"NUM_LABELS": 3}


def msc_net(fuse=False):
    """The net as the netdef writes it (the helpers below walk its layers by type)."""
    return dc.compile(MSC, vars=VARS, fuse=fuse)


def add_blob(layer, t: torch.Tensor, legacy: bool = False):
    b = layer.blobs.add()
    if legacy:
        dims = [1] * (4 - t.dim()) + list(t.shape)
        b.num, b.channels, b.height, b.width = dims
    else:
        b.shape.dim.extend(t.shape)
    b.data.extend(t.flatten().tolist())


def caffe_msc(torch_seed=0, factor=1.0, skip=(), legacy=("fc1",)):
    """A caffemodel for the first scale only (as an ImageNet init is), known tensors."""
    g = torch.Generator().manual_seed(torch_seed)
    ref = msc_net()
    m = proto.NetParameter(name="resnet_msc")
    truth = {}
    for lay in ref.net.layers:
        if lay.name.endswith("_res05") or lay.name in skip:
            continue
        mod = getattr(ref, lay.name, None)
        if lay.type == "BatchNorm":
            c = mod.running_mean.shape[0]
            mean, var = torch.randn(c, generator=g), torch.rand(c, generator=g) + 0.5
            layer = m.layer.add(name=lay.name, type="BatchNorm")
            add_blob(layer, mean * factor)
            add_blob(layer, var * factor)
            add_blob(layer, torch.tensor([factor]))
            truth[lay.name] = (mean, var, factor)
        elif lay.type in ("Convolution", "Scale"):
            layer = m.layer.add(name=lay.name, type=lay.type)
            ts = [torch.randn(p.shape, generator=g) for p in (mod.weight, mod.bias) if p is not None]
            for t in ts:
                add_blob(layer, t, legacy=lay.name in legacy)
            truth[lay.name] = ts
        else:
            m.layer.add(name=lay.name, type=lay.type)     # Caffe saves blob-less layers too
    return m, truth


def write(tmp_path, m, name="init.caffemodel") -> str:
    path = tmp_path / name
    path.write_bytes(m.SerializeToString())
    return str(path)


def test_protobuf_written_caffemodel_is_recovered_exactly(tmp_path):
    m, truth = caffe_msc(factor=1.0)
    net = dc.load_weights(msc_net(), write(tmp_path, m))
    for name, ts in truth.items():
        mod = getattr(net, name)
        if isinstance(ts, tuple):
            mean, var, factor = ts
            assert torch.equal(mod.running_mean, mean) and torch.equal(mod.running_var, var)
            assert float(mod.running_weight) == factor
        else:
            got = [mod.weight] + ([mod.bias] if mod.bias is not None else [])
            assert all(torch.equal(a, b) for a, b in zip(got, ts)), name
    # the second scale shares everything, BatchNorm statistics included
    assert torch.equal(net.fc1_res05.weight, truth["fc1"][0])
    assert torch.equal(net.bn_conv1_res05.running_mean, truth["bn_conv1"][0])


def test_batch_norm_factor_divides(tmp_path):
    m, truth = caffe_msc(factor=4.0)
    net = dc.load_weights(msc_net(), write(tmp_path, m))
    mean, var, _ = truth["bn_conv1"]
    assert torch.equal(net.bn_conv1.running_mean, mean) and float(net.bn_conv1.running_weight) == 4.0


def test_export_round_trip_is_exact(tmp_path):
    m, _ = caffe_msc(factor=2.0)
    src = write(tmp_path, m)
    pt = tmp_path / "init.pt"
    back = tmp_path / "back.caffemodel"
    assert convert.main([src, "--netdef", MSC, "-D", "NUM_LABELS=3", "-o", str(pt), "-q"]) == 0
    assert convert.main([str(pt), "--netdef", MSC, "-D", "NUM_LABELS=3", "-o", str(back), "-q"]) == 0
    a = dc.load_weights(msc_net(), str(pt)).state_dict()
    b = dc.load_weights(msc_net(), str(back)).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # and the exported file, read by protobuf, holds the original blobs
    orig = {l.name: [np.array(b.data) for b in l.blobs] for l in m.layer if l.blobs}
    out = proto.NetParameter()
    out.ParseFromString(back.read_bytes())
    got = {l.name: [np.array(b.data) for b in l.blobs] for l in out.layer}
    for name, blobs in orig.items():
        assert all(np.array_equal(x, y) for x, y in zip(blobs, got[name])), name
    # state -> caffemodel -> state from a trained-looking net (random everything)
    net = msc_net()
    torch.manual_seed(1)
    with torch.no_grad():
        for t in net.state_dict().values():
            t.copy_(torch.randn(t.shape) if t.dim() else torch.tensor(8.0))
    with open(tmp_path / "n.caffemodel", "wb") as f:
        write_caffemodel(net, net.state_dict(), f)
    again = dc.load_weights(msc_net(), str(tmp_path / "n.caffemodel")).state_dict()
    assert all(torch.equal(again[k], v) for k, v in net.state_dict().items())


def test_fused_net_reads_and_writes_the_same_caffemodel(tmp_path):
    """compile() fuses the test phase (ConvolutionBN); the weight tools see the netdef's layers."""
    m, _ = caffe_msc(factor=2.0)
    path = write(tmp_path, m)
    fused = dc.load_weights(dc.compile(MSC, vars=VARS), path)
    assert any(l.type == "ConvolutionBN" for l in fused.net.layers)
    plain = dc.load_weights(msc_net(), path)
    a, b = fused.state_dict(), plain.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    files = []
    for net in (fused, plain):
        buf = io.BytesIO()
        write_caffemodel(net, net.state_dict(), buf)
        out = proto.NetParameter()
        out.ParseFromString(buf.getvalue())
        files.append({l.name: (l.type, [list(b.shape.dim) for b in l.blobs], [list(b.data) for b in l.blobs])
                      for l in out.layer})
    # the same layers, types and blobs (a fused layer sits where its last member was:
    # the order may differ, and Caffe matches layers by name)
    assert files[0] == files[1]
    assert "ConvolutionBN" not in {t for t, _, _ in files[0].values()}
    # fused net -> caffemodel -> fused net is exact
    with open(tmp_path / "fused.caffemodel", "wb") as f:
        write_caffemodel(fused, fused.state_dict(), f)
    again = dc.load_weights(dc.compile(MSC, vars=VARS), str(tmp_path / "fused.caffemodel")).state_dict()
    assert again.keys() == a.keys() and all(torch.equal(again[k], v) for k, v in a.items())
    x = torch.randn(1, *plain.net.inputs["data"][1:])
    with torch.no_grad():
        ya, yb = fused(x), plain(x)
    for k in yb:
        torch.testing.assert_close(ya[k], yb[k], rtol=1e-4, atol=1e-4 * yb[k].abs().max().item())


def test_inner_product_weights_reshape_into_a_convolution(tmp_path):
    text = ('name: "fc" input: "data" input_dim: 1 input_dim: 3 input_dim: 4 input_dim: 4\n'
            'layer { name: "fc6" type: "Convolution" bottom: "data" top: "fc6"\n'
            '  convolution_param { num_output: 5 kernel_size: 2 } }\n')
    net_path = tmp_path / "fc.prototxt"
    net_path.write_text(text)
    w, b = torch.randn(5, 12), torch.randn(5)
    for legacy in (False, True):
        m = proto.NetParameter()
        layer = m.layer.add(name="fc6", type="InnerProduct")
        add_blob(layer, w, legacy)
        add_blob(layer, b, legacy)
        net = dc.load_weights(dc.compile(str(net_path)), write(tmp_path, m))
        assert torch.equal(net.fc6.weight, w.reshape(5, 3, 2, 2)) and torch.equal(net.fc6.bias, b)


def test_v1_caffemodel(tmp_path):
    m = proto.NetParameter()
    layer = m.layers.add(name="conv1_1", type=proto.descriptor("V1LayerParameter")
                         .enum_types_by_name["LayerType"].values_by_name["CONVOLUTION"].number)
    w, b = torch.randn(64, 3, 3, 3), torch.randn(64)
    add_blob(layer, w, legacy=True)
    add_blob(layer, b, legacy=True)
    net = dc.compile(os.path.join(DATA, "largefov_v1.prototxt"), vars={"NUM_LABELS": 21})
    dc.load_weights(net, write(tmp_path, m), allow_missing=True)
    assert torch.equal(net.conv1_1.weight, w) and torch.equal(net.conv1_1.bias, b)


# ---------------------------------------------------------------- errors

def check_error(fn, *parts):
    with pytest.raises(WeightsError) as info:
        fn()
    msg = str(info.value)
    for p in parts:
        assert p in msg, msg
    return msg


def test_missing_is_strict_unless_allowed(tmp_path):
    m, _ = caffe_msc(skip=("fc1",))
    path = write(tmp_path, m)
    msg = check_error(lambda: dc.load_weights(msc_net(), path), "fc1.weight", "--allow-missing")
    assert "\n" in msg and msg.splitlines()[0].endswith("loads what matches")
    dc.load_weights(msc_net(), path, allow_missing=True)


def test_unexpected_layer(tmp_path):
    m, _ = caffe_msc()
    add_blob(m.layer.add(name="fc8_imagenet", type="InnerProduct"), torch.randn(10, 4))
    path = write(tmp_path, m)
    msg = check_error(lambda: dc.load_weights(msc_net(), path), "layer 'fc8_imagenet'", "no such layer")
    assert "\n" not in msg
    dc.load_weights(msc_net(), path, allow_missing=True)


def test_shape_mismatch_is_always_an_error(tmp_path):
    m, _ = caffe_msc()
    for layer in m.layer:
        if layer.name == "fc1":
            del layer.blobs[:]
            add_blob(layer, torch.randn(21, 32, 3, 3))
            add_blob(layer, torch.randn(21))
    path = write(tmp_path, m)
    for allow in (False, True):
        msg = check_error(lambda: dc.load_weights(msc_net(), path, allow_missing=allow),
                          "with the wrong shape", "fc1.weight", "21x32x3x3", "3x32x3x3")
        assert msg.count("\n") == 3       # headline + table head + two rows


def test_blob_count_mismatch(tmp_path):
    m, _ = caffe_msc()
    for layer in m.layer:
        if layer.name == "conv1":
            add_blob(layer, torch.randn(16))       # a bias the net's conv1 does not have
    msg = check_error(lambda: dc.load_weights(msc_net(), write(tmp_path, m)),
                      "layer 'conv1' (layer #", "2 blob(s)", "conv1.weight")
    assert "\n" not in msg


@pytest.mark.parametrize("make,expect", [
    (lambda good: good[:len(good) // 2], "truncated"),
    (lambda good: b"", "empty"),
    (lambda good: b'name: "x"\nlayer { name: "a" }\n', "text file"),
    (lambda good: bytes(range(256)) * 4, "corrupt caffemodel at byte"),
])
def test_unreadable_files(tmp_path, make, expect):
    m, _ = caffe_msc()
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(make(m.SerializeToString()))
    msg = check_error(lambda: dc.load_weights(msc_net(), str(path)), expect)
    assert "\n" not in msg and msg.startswith(str(path))


def test_not_a_net_parameter(tmp_path):
    blob = proto.BlobProto(num=1, channels=3, height=1, width=1)
    blob.data.extend([1.0, 2.0, 3.0])          # e.g. a mean.binaryproto
    path = tmp_path / "mean.caffemodel"
    path.write_bytes(blob.SerializeToString())
    check_error(lambda: dc.load_weights(msc_net(), str(path)), "not a NetParameter")
    state = proto.SolverParameter(base_lr=0.1)   # any other message
    path.write_bytes(state.SerializeToString())
    check_error(lambda: dc.load_weights(msc_net(), str(path)), "NetParameter")


def test_cli_errors_exit_2_and_leave_no_output(tmp_path, capsys):
    m, _ = caffe_msc()
    good = m.SerializeToString()
    bad = tmp_path / "bad.caffemodel"
    bad.write_bytes(good[:-7])
    out = tmp_path / "out.pt"
    assert convert.main([str(bad), "--netdef", MSC, "-D", "NUM_LABELS=3", "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "truncated" in err
    assert not out.exists() and os.listdir(tmp_path) == ["bad.caffemodel"]
    assert convert.main([str(bad), "-o", str(out)]) == 2          # no --netdef
    assert "--netdef" in capsys.readouterr().err
    pt = tmp_path / "w.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, pt)
    assert convert.main([str(pt), "--netdef", MSC, "-D", "NUM_LABELS=3", "-o", str(tmp_path / "w.caffemodel")]) == 2
    assert not (tmp_path / "w.caffemodel").exists()
    pt.write_bytes(b"not a zip")
    assert convert.main([str(pt), "--netdef", MSC, "-D", "NUM_LABELS=3"]) == 2
    assert "cannot read the weights file" in capsys.readouterr().err
